#!/usr/bin/env bash
# The README's "Watch a model" walkthrough in one go, on this machine (no cluster):
# train and serve the iris model, probe it, watch three days of drifted traffic open one
# issue and dispatch retraining on the GitHub API test server, then `kfops retrain` run
# the pipeline at the served commit, gate the candidate against the serving model and
# open the pull request that moves serving.model.run.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/venv.sh
bin="${KFOPS_VENV:-$root/.venv}/bin"
port="${PORT:-8080}"
project=pipelines/iris-watch
if [ ! -d tests/npm/node_modules/@octokit/openapi ]; then
  echo "==> npm ci (tests/npm: GitHub's OpenAPI description, for the GitHub API test server)"
  npm ci --prefix tests/npm --silent --no-audit --no-fund
fi
work=$(mktemp -d)
export KFOPS_MONITOR_STATE="$work/monitor-state.json"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

echo "==> 1. train: kfops run $project"
"$bin/kfops" run "$project"

echo "==> 2. serve the model on :$port (kfops serve), and start the GitHub API test server"
"$bin/kfops" serve "$project" --port "$port" >"$work/serve.log" 2>&1 &
pids+=($!)
"$bin/python" -m tests.serve_github --repo acme/iris --env-file "$work/github.env" \
  >"$work/github.log" 2>&1 &
pids+=($!)
for _ in $(seq 120); do
  if [ -f "$work/github.env" ] && "$bin/kfops" probe "$project" --local --port "$port" \
    >/dev/null 2>&1; then
    break
  fi
  sleep 0.5
done
# shellcheck disable=SC1091
source "$work/github.env"

echo "==> 3. probe it: kfops probe --local"
"$bin/kfops" probe "$project" --local --port "$port"

echo "==> 4. Monday's traffic looks like the training data: ok"
"$bin/kfops" monitor "$project" --once --local --port "$port" \
  --inputs "$project/monitor/served-monday.jsonl" --report "$work/report.json"

echo "==> 5. three runs of Friday's traffic (drifted): the third is a breach"
for run in 1 2 3; do
  echo "--- run $run"
  "$bin/kfops" monitor "$project" --once --local --port "$port" \
    --inputs "$project/monitor/served-friday.jsonl" --report "$work/report.json" || true
done
key=$("$bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["cycle"]["state"]["episode"])' "$work/report.json")

echo "==> 6. on GitHub: one issue, one dispatch of kfops-retrain.yml with key $key"
auth="Authorization: Bearer $GITHUB_TOKEN"
curl -fsS -H "$auth" "$GITHUB_API_URL/repos/acme/iris/issues?state=all" \
  | "$bin/python" -c 'import json,sys; [print("  issue #%(number)s [%(state)s] %(title)s" % i) for i in json.load(sys.stdin)]'

echo "==> 7. what the dispatched workflow runs: kfops retrain --local --key $key"
"$bin/kfops" retrain "$project" --local --port "$port" --key "$key"

echo "==> 8. the pull request that moves the model pointer"
curl -fsS -H "$auth" "$GITHUB_API_URL/repos/acme/iris/pulls?state=all" \
  | "$bin/python" -c 'import json,sys; [print("  pull request #%s [%s] %s (%s)" % (p["number"], p["state"], p["title"], p["head"]["ref"])) for p in json.load(sys.stdin)]'
echo "==> done: nothing served changed; merging the pull request, then a release, serves the candidate"
