#!/usr/bin/env bash
# The whole test suite: installs what it needs into .venv, then runs pytest.
# Tests use a real Mosquitto: the one on 127.0.0.1:1883 if running, else they start their own
# (needs the mosquitto binary: apt-get install -y mosquitto).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh edge,train,dev
export TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m pytest "$@"
