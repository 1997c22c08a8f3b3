#!/usr/bin/env bash
# Install boxinspect[edge] into a clean venv and prove it has no TensorFlow and can still run a model
# that the full install produced (the tests' cached int8 model, or one given as $1): predict, config check,
# and the daemon over the tests' video.
#   PYTHON=3.10        the interpreter: a version (found as pythonX.Y or under ~/.pyenv/versions) or a path
# Installs with uv when it can be had, else pip (scripts/pyinstall.sh).
#   CONSTRAINTS=FILE   pip constraints, e.g. constraints/floors.txt (the lowest allowed versions) or
#                      constraints/edge.txt (the image lock)
#   EXTRAS=edge,retrain the extras to install (default edge: the lean install, without scikit-learn)
#   EXTRA_TESTS="..."  pytest files to run in that venv as well (it gets pytest and httpx)
#   SYSTEMD_LAYOUT=1   also start the daemon as a non-root user with the systemd unit's paths (as root this
#                      runs as uid 65534, so the interpreter must be readable by it: e.g. /usr/bin/python3)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pyinstall.sh
# (no `ls | head` under pipefail: head closing the pipe would kill the script with SIGPIPE)
newest() { local f best=""; for f in "$@"; do [ -e "$f" ] && { [ -z "$best" ] || [ "$f" -nt "$best" ]; } && best=$f; done; echo "$best"; }
find_python() {
  local want=$1 p
  case "$want" in
    */*) echo "$want"; return ;;
    [0-9]*)
      # pyenv's own install first (its shim for pythonX.Y fails unless that version is selected)
      p=$(newest "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$want".*/bin/python)
      [ -n "$p" ] && { echo "$p"; return; }
      p=$(command -v "python$want" || true)
      [ -n "$p" ] && "$p" -c '' 2>/dev/null && { echo "$p"; return; } ;;
    *) command -v "$want" && return ;;
  esac
  echo "no Python $want found (looked for python$want and ~/.pyenv/versions/$want.*)" >&2; return 1
}
py=$(find_python "${PYTHON:-python3}")
model="${1:-$(newest .cache/test-models/*/convert-*/model_int8.tflite .cache/test-models/*/run/model_int8.tflite)}"
[ -n "$model" ] && [ -f "$model" ] || { echo "no int8 model found (run the tests first or pass one)"; exit 1; }
work=$(mktemp -d)
venv=$work/edge-venv
"$py" -m venv "$venv"
pipargs=(-q)
[ -n "${CONSTRAINTS:-}" ] && pipargs+=(-c "$CONSTRAINTS")
extras=${EXTRAS:-edge}
echo "edge venv: $("$venv/bin/python" --version), boxinspect[$extras]${CONSTRAINTS:+, constraints $CONSTRAINTS}"
pyinstall "$venv/bin/python" "${pipargs[@]}" ".[$extras]"
if "$venv/bin/python" -c "import tensorflow" 2>/dev/null; then
  echo "FAIL: the edge install pulled TensorFlow"; exit 1
fi
echo "edge venv: no tensorflow ($(pylist "$venv/bin/python" | grep -ciE '^tensorflow') tensorflow packages)"
# the installed package (not this source tree: run from elsewhere) carries the built-in learned box finder that
# `localize` / `train --crop auto` crop with (edge/assets, package data in pyproject.toml)
( cd "$work" && "$venv/bin/python" -c '
import sys
from edge.judge.boxfinder import BUILTIN, BoxFinder
assert sys.prefix in str(BUILTIN), f"{BUILTIN} is not in the venv"
BoxFinder(BUILTIN)
print("edge venv: the built-in box finder loads from", BUILTIN.relative_to(sys.prefix))' ) \
  || { echo "FAIL: the edge install has no loadable built-in box finder (edge/assets: package data)"; exit 1; }
pylist "$venv/bin/python" | grep -iE '^(fastapi|starlette|pydantic|pydantic.settings|paho.mqtt|numpy|opencv.python.headless|ai.edge.litert|uvicorn|prometheus.client)==' | tr '\n' ' '
echo
imgs=(.cache/test-models/*/synth/defective/*.jpg)
img=${imgs[0]}
"$venv/bin/boxinspect" predict "$model" "$img"
# `boxinspect train` on an edge install: a clear message, not a traceback
if "$venv/bin/boxinspect" train "$(dirname "$(dirname "$img")")" --out "$work/run" > "$work/train.log" 2>&1; then
  echo "FAIL: train ran on an edge install"; exit 1
fi
grep -q "Traceback" "$work/train.log" && { echo "FAIL: train on an edge install printed a traceback:"; cat "$work/train.log"; exit 1; }
echo "edge venv: boxinspect train says: $(tail -n 1 "$work/train.log")"
if [ "$extras" = edge ]; then  # the lean install: retrain says what to install, no traceback
  if "$venv/bin/boxinspect" retrain "$model" "$(dirname "$(dirname "$img")")" --out "$work/cand" > "$work/retrain.log" 2>&1 \
     || ! grep -q "pip install 'boxinspect\[retrain\]'" "$work/retrain.log"; then
    echo "FAIL: retrain on the lean edge install did not say what to install:"; cat "$work/retrain.log"; exit 1
  fi
  echo "edge venv: boxinspect retrain says: $(tail -n 1 "$work/retrain.log")"
fi
# the daemon itself, over the tests' generated video, publishing to the broker on 127.0.0.1:1883 if one runs
video=$(newest .cache/test-models/*/video/conveyor.mp4)
cat > "$work/edge.yaml" <<YAML
line: edgecheck
camera: cam1
source: {uri: "$(realpath "$video")", pace: fast}
roi: {x: 170, y: 30, width: 300, height: 300}
model: {path: "$(realpath "$model")"}
mqtt: {host: 127.0.0.1, port: 1883, outbox_path: outbox.sqlite3}
api: {port: 0}
state_dir: "$work/state"
shutdown_timeout_s: 5
YAML
"$venv/bin/boxinspect" config check "$work/edge.yaml"
"$venv/bin/boxinspect" run --config "$work/edge.yaml" --max-frames 400 > "$work/run.log" 2>&1 || { cat "$work/run.log"; exit 1; }
tail -n 4 "$work/run.log"
[ -f "$work/state/outbox.sqlite3" ] || { echo "FAIL: no outbox in the state directory"; exit 1; }
echo "edge venv: boxinspect run exited 0"

if [ "${SYSTEMD_LAYOUT:-0}" = 1 ]; then
# The shipped systemd layout, as a non-root user: a temp root stands in for /, the config and model in a
# read-only etc/boxinspect (deploy/config.example.yaml, unchanged but for the environment), state in
# var/lib/<StateDirectory> handed to the service user the way systemd does, $STATE_DIRECTORY set.
root=$work/root
statedir=$(sed -n 's/^StateDirectory=//p' deploy/boxinspect.service)
confpath=$(sed -n 's/^ExecStart=.* --config //p' deploy/boxinspect.service)
mkdir -p "$root$(dirname "$confpath")" "$root/var/lib/$statedir"
cp deploy/config.example.yaml "$root$confpath"
cp "$model" "$root$(dirname "$confpath")/model_int8.tflite"
cp "$model.json" "$root$(dirname "$confpath")/model_int8.tflite.json"
cp "$video" "$root/conveyor.mp4"
chmod -R a+rX "$work"
chmod 0555 "$root$(dirname "$confpath")"
etc_before=$(ls -A "$root$(dirname "$confpath")")
asuser=()
if [ "$(id -u)" = 0 ]; then
  chown 65534:65534 "$root/var/lib/$statedir"
  asuser=(setpriv --reuid=65534 --regid=65534 --clear-groups)
fi
( cd "$root/var/lib/$statedir" && env STATE_DIRECTORY="$root/var/lib/$statedir" BOXINSPECT_SOURCE__URI="$root/conveyor.mp4" \
    BOXINSPECT_SOURCE__PACE=fast BOXINSPECT_API__PORT=0 BOXINSPECT_MQTT__ENABLED=false \
    "${asuser[@]}" "$venv/bin/boxinspect" run --config "$root$confpath" --max-frames 60 ) > "$work/systemd.log" 2>&1 \
  || { echo "FAIL: the daemon as uid $([ "$(id -u)" = 0 ] && echo 65534 || id -u) with the systemd layout:"; cat "$work/systemd.log"; exit 1; }
outbox="$root/var/lib/$statedir/boxinspect-outbox.sqlite3"
[ -f "$outbox" ] || { echo "FAIL: no outbox at $outbox"; cat "$work/systemd.log"; exit 1; }
if [ "$(ls -A "$root$(dirname "$confpath")")" != "$etc_before" ]; then
  echo "FAIL: the daemon wrote into the config directory: $(ls -A "$root$(dirname "$confpath")")"; exit 1
fi
echo "edge venv: systemd layout as uid $(stat -c %u "$outbox"): outbox created at ${outbox#"$root"} (config dir read-only)"
fi
if [ -n "${EXTRA_TESTS:-}" ]; then
  pyinstall "$venv/bin/python" "${pipargs[@]}" pytest "httpx<0.28" jsonschema filelock  # filelock: tests/helpers.py cache_lock
  # (its own --basetemp: .ci/run runs this beside the main test session)
  # shellcheck disable=SC2086
  PYTHONPATH=$PWD "$venv/bin/python" -m pytest -q -p no:cacheprovider --basetemp="$work/pytest" $EXTRA_TESTS
fi
rm -rf "$work"
