#!/usr/bin/env bash
# Install kfops from this action's own checkout, so the action and the CLI always match.
# A kfops of the same version already on PATH is used as it is.
set -euo pipefail
root=$(cd "$KFOPS_ACTION_PATH/.." && pwd)
want=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/pyproject.toml" | head -n 1)
if command -v kfops >/dev/null 2>&1 && [ "$(kfops --version 2>/dev/null)" = "kfops, version $want" ]; then
  echo "using kfops $want from $(command -v kfops)"
  echo "KFOPS_BIN=$(command -v kfops)" >> "$GITHUB_ENV"
  exit 0
fi
venv="${RUNNER_TEMP:-/tmp}/kfops-venv"
if [ ! -x "$venv/bin/kfops" ] || [ "$("$venv/bin/kfops" --version)" != "kfops, version $want" ]; then
  echo "installing kfops $want into $venv"
  # --system-site-packages: local runs see what the workflow installed for this Python
  "${KFOPS_PYTHON:-python3}" -m venv --system-site-packages "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  case "${KFOPS_COMMAND:-ci}" in
    monitor) extras="[monitor]" ;;         # drift statistics, the logger store, the plot
    retrain) extras="[serve,monitor]" ;;   # and the model server the candidate is gated on
    *) extras="" ;;
  esac
  "$venv/bin/python" -m pip install --quiet "$root$extras"
fi
echo "KFOPS_BIN=$venv/bin/kfops" >> "$GITHUB_ENV"
