#!/usr/bin/env bash
# The whole loop on a fresh machine, no camera needed: install, make synthetic boxes and a conveyor video,
# train a small MobileNetV2, convert it to int8 TFLite, start a broker if none is running, run the daemon
# over the video and print defect events as they arrive over MQTT.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh edge,train
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"  # keep TensorFlow's C++ start-up noise out of the demo
exec .venv/bin/boxinspect demo "$@"
