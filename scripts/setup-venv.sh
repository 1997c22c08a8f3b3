#!/usr/bin/env bash
# Create .venv (if missing) and install boxinspect with the given extras into it.
# Usage: scripts/setup-venv.sh EXTRAS   e.g. scripts/setup-venv.sh edge,train,dev
# Installs with uv when it can be had, else pip (scripts/pyinstall.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pyinstall.sh
extras="${1:-edge,train}"
py="${PYTHON:-python3}"
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  # missing, or left half-made by an interrupted run
  echo "==> creating .venv with $($py --version)"
  rm -rf .venv
  "$py" -m venv .venv
fi
stamp=".venv/.installed-$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "==> installing boxinspect[$extras] into .venv (first time: TensorFlow is large; a few minutes with pip)"
  have_uv || .venv/bin/python -m pip install -q --upgrade pip
  pyinstall .venv/bin/python -q -e ".[$extras]"
  touch "$stamp"
fi
# The GStreamer and GenICam sources use the system's PyGObject (python3-gi): link it into the venv when the system has
# one this Python can load (scripts/link-system-gi.sh; without it those sources say what to install)
[ -L .venv/lib/python3*/site-packages/_system_gi/gi ] || bash scripts/link-system-gi.sh .venv || true
