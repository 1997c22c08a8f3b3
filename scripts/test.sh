#!/usr/bin/env bash
# The test suite: installs what it needs into .venv, then runs pytest.
#   bash scripts/test.sh           the whole suite (what CI runs; trains the test model on a clean clone), on two
#                                  workers (pytest-xdist)
#   bash scripts/test.sh --fast    ruff + mypy + the fast lane: every test not marked slow, no training, on two
#                                  workers
#   bash scripts/test.sh --repeat N  the determinism check instead of pytest: N from-scratch builds of the tiny
#                                  int8 test model (a few minutes each, niced), compared (tests/determinism.py)
# Pass -n 0 to run in one process (a later -n wins).
# Other arguments go to pytest (bash scripts/test.sh --fast -k api).
# Tests use a real Mosquitto: each session (each xdist worker) starts its own on a free port, never one found on 1883
# (needs the mosquitto binary: apt-get install -y mosquitto).
set -euo pipefail
cd "$(dirname "$0")/.."
fast=0
repeat=0
args=()
next_is_repeat=0
for a in "$@"; do
  if [ "$next_is_repeat" = 1 ]; then repeat=$a; next_is_repeat=0; continue; fi
  if [ "$a" = "--fast" ]; then fast=1; elif [ "$a" = "--repeat" ]; then next_is_repeat=1; else args+=("$a"); fi
done
bash scripts/system-deps.sh
bash scripts/setup-venv.sh edge,train,dev
export TF_CPP_MIN_LOG_LEVEL=2
if [ "$repeat" != 0 ]; then
  echo "==> determinism check: $repeat from-scratch builds of the tiny int8 test model, compared"
  exec .venv/bin/python -m tests.determinism --repeat "$repeat" ${args[@]+"${args[@]}"}
fi
if [ "$fast" = 1 ]; then
  echo "==> ruff"
  .venv/bin/ruff check .
  echo "==> mypy (strict on edge/)"
  .venv/bin/mypy
  echo "==> pytest -m 'not slow' -n 2 (two workers, pytest-xdist)"
  exec .venv/bin/python -m pytest -m "not slow" -n 2 --durations=10 ${args[@]+"${args[@]}"}
fi
# Two workers: most of the suite waits (daemons on real-time videos, broker outages, sockets), so a second
# worker nearly halves the wall time on two cores (CONTRIBUTING.md "CI wall time").
echo "==> pytest -n 2 (two workers, pytest-xdist)"
exec .venv/bin/python -m pytest -n 2 ${args[@]+"${args[@]}"}
