#!/usr/bin/env bash
# Run everything CI runs: lint, format check, types, and the whole test suite.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/venv.sh
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
