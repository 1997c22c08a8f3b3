#!/usr/bin/env bash
# Install boxinspect[edge] into a clean venv and prove it has no TensorFlow and can still run a model
# that the full install produced (the tests' cached int8 model, or one given as $1).
set -euo pipefail
cd "$(dirname "$0")/.."
# (no `ls | head` under pipefail: head closing the pipe would kill the script with SIGPIPE)
newest() { local f best=""; for f in "$@"; do [ -e "$f" ] && { [ -z "$best" ] || [ "$f" -nt "$best" ]; } && best=$f; done; echo "$best"; }
model="${1:-$(newest .cache/test-models/*/run/model_int8.tflite)}"
[ -n "$model" ] && [ -f "$model" ] || { echo "no int8 model found (run the tests first or pass one)"; exit 1; }
venv=$(mktemp -d)/edge-venv
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q ".[edge]"
if "$venv/bin/python" -c "import tensorflow" 2>/dev/null; then
  echo "FAIL: the edge install pulled TensorFlow"; exit 1
fi
echo "edge venv: no tensorflow ($("$venv/bin/python" -m pip list 2>/dev/null | grep -ciE '^tensorflow') tensorflow packages)"
imgs=(.cache/test-models/*/synth/defective/*.jpg)
img=${imgs[0]}
"$venv/bin/boxinspect" predict "$model" "$img"
"$venv/bin/boxinspect" config check deploy/config.example.yaml
# the daemon itself, over the tests' generated video, publishing to the broker on 127.0.0.1:1883 if one runs
video=$(newest .cache/test-models/*/video/conveyor.mp4)
work=$(dirname "$venv")
cat > "$work/edge.yaml" <<YAML
line: edgecheck
camera: cam1
source: {uri: "$(realpath "$video")", pace: fast}
roi: {x: 170, y: 30, width: 300, height: 300}
model: {path: "$(realpath "$model")"}
mqtt: {host: 127.0.0.1, port: 1883, outbox_path: "$work/outbox.sqlite3"}
api: {port: 0}
evidence: {dir: "$work/evidence"}
shutdown_timeout_s: 5
YAML
"$venv/bin/boxinspect" run --config "$work/edge.yaml" --max-frames 400 > "$work/run.log" 2>&1 || { cat "$work/run.log"; exit 1; }
tail -n 4 "$work/run.log"
echo "edge venv: boxinspect run exited 0"
rm -rf "$(dirname "$venv")"
