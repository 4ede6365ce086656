#!/usr/bin/env bash
# Run everything CI runs: lint, format check, types, and the whole test suite.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/venv.sh
# GitHub's OpenAPI description, for the GitHub API test server (npm @octokit/openapi).
lock="tests/npm/package-lock.json"
stamp="tests/npm/node_modules/.kfops-installed"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$(sha256sum "$lock" | cut -d' ' -f1)" ]; then
  echo "==> npm ci (tests/npm: GitHub's OpenAPI description)"
  npm ci --prefix tests/npm --silent --no-audit --no-fund
  sha256sum "$lock" | cut -d' ' -f1 > "$stamp"
fi
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
