#!/usr/bin/env bash
# Run everything CI runs: lint, format check, types, and the whole test suite.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/venv.sh
# The image tests run a real Docker engine and OCI registries (Debian packages), and
# make their base image with debootstrap once (tests/docker_env.py).
need=""
for pair in dockerd:docker.io docker-registry:docker-registry debootstrap:debootstrap runc:runc; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need="$need ${pair#*:}"
done
[ -x /usr/bin/docker ] || need="$need docker.io"
if [ -n "$need" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> apt-get install$need (the image tests' engine and registry)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
  else
    echo "the image tests need:$need (apt-get install -y$need), or run pytest -m 'not docker'" >&2
  fi
fi
# GitHub's OpenAPI description, for the GitHub API test server (npm @octokit/openapi).
lock="tests/npm/package-lock.json"
stamp="tests/npm/node_modules/.kfops-installed"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$(sha256sum "$lock" | cut -d' ' -f1)" ]; then
  echo "==> npm ci (tests/npm: GitHub's OpenAPI description)"
  npm ci --prefix tests/npm --silent --no-audit --no-fund
  sha256sum "$lock" | cut -d' ' -f1 > "$stamp"
fi
# The serving tests' API server: kube-apiserver and etcd built from their Go modules,
# once per machine, cached in ~/.cache/kfops-tests/kube (tests/kube_env.py).
echo "==> kube-apiserver and etcd (scripts/kube-build.sh; the first build takes minutes)"
bash scripts/kube-build.sh >/dev/null
bin="$root/.venv/bin"
echo "==> ruff check";          "$bin/ruff" check .
echo "==> ruff format --check"; "$bin/ruff" format --check .
echo "==> mypy (strict, src/)"; "$bin/mypy" --no-incremental
echo "==> pytest"
status=0
"$bin/python" -m pytest "$@" || status=$?
# pytest exits 5 when nothing was collected (e.g. a -k that matches nothing).
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests" >&2
fi
exit "$status"
