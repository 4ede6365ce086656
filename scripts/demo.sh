#!/usr/bin/env bash
# Run the example pipeline in pipelines/iris end to end on this machine (no cluster).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/venv.sh"
kfops="$root/.venv/bin/kfops"
example="$root/pipelines/iris"
"$kfops" validate "$example"
"$kfops" compile "$example" -o "$example/.kfops/iris.yaml"
"$kfops" run "$example" "$@"
