#!/usr/bin/env bash
# Create .venv (if missing) and install boxinspect with the given extras into it.
# Usage: scripts/setup-venv.sh EXTRAS   e.g. scripts/setup-venv.sh edge,train,dev
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-edge,train}"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($py --version)"
  "$py" -m venv .venv
fi
stamp=".venv/.installed-$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "==> installing boxinspect[$extras] into .venv (first time: a few minutes, TensorFlow is large)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$extras]"
  touch "$stamp"
fi
