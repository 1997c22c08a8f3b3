#!/usr/bin/env bash
# A real arm64 run on this (x86) machine, under user-mode emulation (qemu-aarch64-static): the edge install and
# daemon on a Debian bookworm arm64 userland (what Pi OS bookworm is built on), offline.
#   1. mmdebstrap --variant=extract: an arm64 Debian bookworm with python3 (3.11) and pip, unpacked under
#      .cache/arm64/rootfs (kept; delete it to start over)
#   2. a wheelhouse made here: the boxinspect wheel + every [edge] dependency as aarch64 wheels (pip download
#      --platform manylinux..._aarch64 -c constraints/edge.txt), into .cache/arm64/wheelhouse
#   3. under qemu-aarch64-static -L ROOT: pip install --no-index from the wheelhouse into a venv-free prefix,
#      the model's self-test (golden samples), `boxinspect predict` on the demo images (scores must match this
#      machine's within the package's golden tolerance), and `boxinspect run` on the demo video for >= 200 frames
#      publishing to the host's Mosquitto (127.0.0.1:1883, or one started here on a free port)
# Needs: apt install mmdebstrap qemu-user-static mosquitto; the tests' int8 model and video (.cache/test-models,
# made by the test suite) or MODEL=... VIDEO=... IMAGES=...; network for the first run (Debian, PyPI).
# Emulation is ~10-50x slower than the board: the times it prints are NOT ARM speeds (docs/BENCHMARKS.md has
# none from here). Not in CI: it takes minutes (docs/DEPLOY.md, "arm64 under emulation").
#   FRAMES=700   frames the daemon processes (>= 200; 700 = the demo video's first seven boxes, two defective)
set -euo pipefail
cd "$(dirname "$0")/.."
frames=${FRAMES:-700}
top=$PWD/.cache/arm64
root=$top/rootfs
wheels=$top/wheelhouse
work=$(mktemp -d)
mosq_pid=""
trap '[ -n "$mosq_pid" ] && kill "$mosq_pid" 2>/dev/null; rm -rf "$work"' EXIT
newest() { local f best=""; for f in "$@"; do [ -e "$f" ] && { [ -z "$best" ] || [ "$f" -nt "$best" ]; } && best=$f; done; echo "$best"; }
model=${MODEL:-$(newest .cache/test-models/*/convert-*/model_int8.tflite)}
video=${VIDEO:-$(newest .cache/test-models/*/video/conveyor.mp4)}
images=${IMAGES:-$(newest .cache/test-models/*/synth)}
[ -f "$model" ] && [ -f "$video" ] && [ -d "$images" ] \
  || { echo "no model/video/images: run the test suite first (or set MODEL, VIDEO, IMAGES)"; exit 1; }
for tool in mmdebstrap qemu-aarch64-static; do
  command -v "$tool" > /dev/null || { echo "missing $tool: apt install mmdebstrap qemu-user-static"; exit 1; }
done
t0=$(date +%s)
step() { echo "==> [$(( $(date +%s) - t0 )) s] $*"; }

step "1. arm64 Debian bookworm userland (mmdebstrap --variant=extract) in $root"
# python3 and pip; libstdc++6 and libgomp1 for numpy/OpenCV/LiteRT/scikit-learn wheels (Pi OS has them installed)
include=python3,python3-pip,libstdc++6,libgomp1
if [ "$(cat "$root/.done" 2> /dev/null)" != "$include" ]; then
  rm -rf "$root"
  mmdebstrap --quiet --variant=extract --architectures=arm64 --include="$include" \
    bookworm "$root" http://deb.debian.org/debian
  echo "$include" > "$root/.done"
fi
site=""  # the arm64 install's site-packages (step 3): on PYTHONPATH for the emulated Python only
emu() { PYTHONPATH=$site qemu-aarch64-static -L "$root" "$root/usr/bin/python3" "$@"; }
emu -c 'import platform, sys; print("   ", platform.machine(), "Python", sys.version.split()[0], "(emulated)")'

step "2. wheelhouse: the boxinspect wheel and its aarch64 [edge] wheels (cp311) in $wheels"
mkdir -p "$wheels"
rm -f "$wheels"/boxinspect-*.whl
python3 -m pip wheel -q --no-deps --no-build-isolation -w "$wheels" . 2>/dev/null \
  || .venv/bin/python -m pip wheel -q --no-deps -w "$wheels" .
whl=$(newest "$wheels"/boxinspect-*.whl)
# pip takes --platform tags literally: every manylinux level bookworm's glibc (2.36) can run, spelled out
plats=(--platform manylinux2014_aarch64 --platform linux_aarch64)
for v in $(seq 17 36); do plats+=(--platform "manylinux_2_${v}_aarch64"); done
.venv/bin/python -m pip download -q --only-binary=:all: "${plats[@]}" --python-version 3.11 --implementation cp \
  --abi cp311 --abi abi3 --abi none -c constraints/edge.txt -d "$wheels" "$whl[edge]" > "$work/download.log" 2>&1 \
  || { grep -v "^WARNING: Location" "$work/download.log"; exit 1; }
echo "    $(ls "$wheels" | wc -l) wheels, $(du -sh "$wheels" | cut -f1); aarch64 ones: $(ls "$wheels" | grep -c aarch64)"

step "3. pip install --no-index (offline) under emulation into $root/opt/boxinspect"
prefix=/opt/boxinspect
# the wheel is rebuilt on every run (not byte-reproducible): the stamp hashes what goes into it
stamp=$(cd "$wheels" && ls | sha256sum | cut -c1-16)-$(find pyproject.toml boxinspect edge training convert -type f \
  \( -name '*.py' -o -name '*.json' -o -name '*.toml' -o -path '*/static/*' \) | sort | xargs cat | sha256sum | cut -c1-16)
if [ "$(cat "$root$prefix/.installed" 2> /dev/null)" = "$stamp" ]; then
  echo "    (already installed from this wheelhouse)"
else
rm -rf "${root:?}$prefix"
emu -m pip install -q --root-user-action=ignore --no-index --find-links "$wheels" --no-warn-script-location --break-system-packages \
  --prefix "$root$prefix" -c constraints/edge.txt "$whl[edge]"
echo "$stamp" > "$root$prefix/.installed"
fi
site=$(echo "$root$prefix"/local/lib/python3*/dist-packages)  # Debian's pip scheme adds local/ (dist-packages)
emu -c 'import numpy, cv2, ai_edge_litert, platform; print("   ", platform.machine(), "numpy", numpy.__version__, "opencv", cv2.__version__)'
if emu -c 'import tensorflow' 2> /dev/null; then echo "FAIL: TensorFlow in the edge install"; exit 1; fi

# LiteRT >= 2.2 crashes (SIGSEGV) creating an interpreter under Debian bookworm's qemu-user 7.2, with or without
# XNNPACK and for every -cpu; 2.0.2 runs. Whether the lock's LiteRT runs on a real board is not known here: if the
# locked one crashes under emulation, say so and carry on with QEMU_LITERT (docs/DEPLOY.md, "arm64 under emulation").
locked=$(sed -n 's/^ai-edge-litert==//p' constraints/edge.txt)
creates() { emu -c 'import sys; from ai_edge_litert.interpreter import Interpreter; Interpreter(model_path=sys.argv[1])' \
  "$model" > /dev/null 2>&1; }
if ! creates; then
  alt=${QEMU_LITERT:-2.0.2}
  qv=$(qemu-aarch64-static --version | head -n 1)
  echo "    NOTE: ai-edge-litert $locked (the lock) crashes creating an interpreter under $qv;"
  echo "    running with ai-edge-litert $alt instead (the rest of the lock unchanged)"
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: "${plats[@]}" --python-version 3.11 -d "$wheels" \
    "ai-edge-litert==$alt" > "$work/litert.log" 2>&1 || { grep -v "^WARNING: Location" "$work/litert.log"; exit 1; }
  emu -m pip install -q --root-user-action=ignore --no-index --find-links "$wheels" --no-deps --force-reinstall \
    --break-system-packages --prefix "$root$prefix" "ai-edge-litert==$alt"
  creates || { echo "FAIL: ai-edge-litert $alt crashes too"; exit 1; }
fi
emu -c 'import importlib.metadata as m; print("    ai-edge-litert", m.version("ai-edge-litert"), "on arm64 (emulated)")'

step "4. the model's self-test (golden samples) on arm64"
emu - "$model" <<'PY'
import sys
from edge.judge.classifier import Classifier
clf = Classifier.load(sys.argv[1])
failures = clf.self_test()
finder = clf.metadata.finder
print("    runner:", type(clf.runner).__name__, "| golden samples:", len(clf.metadata.golden),
      "| tolerance:", clf.metadata.golden_tolerance,
      "| learned box finder golden samples:", len(finder.golden) if finder else "- (no finder)",
      "| failures:", failures or "none")
sys.exit(1 if failures else 0)
PY

step "5. predict on the demo images: arm64 (emulated) vs this machine"
mapfile -t imgs < <(find "$images" -name '*.jpg' | sort | awk 'NR % 25 == 1' | head -n 20)
emu -m boxinspect.cli predict "$model" "${imgs[@]}" --json "$work/arm64.json" > "$work/arm64.log"
.venv/bin/python -m boxinspect.cli predict "$model" "${imgs[@]}" --json "$work/x86.json" > "$work/x86.log"
.venv/bin/python - "$work/x86.json" "$work/arm64.json" "$model" <<'PY'
import json, sys
x86, arm = (json.load(open(p)) for p in sys.argv[1:3])
tol = json.load(open(sys.argv[3] + ".json"))["golden_tolerance"]
rows = lambda d: {r["path"] if "path" in r else r["image"]: r for r in (d["results"] if isinstance(d, dict) else d)}
a, b = rows(x86), rows(arm)
assert a.keys() == b.keys() and a, "different images"
diffs = [abs(a[k]["score"] - b[k]["score"]) for k in a]
same = sum(a[k]["label"] == b[k]["label"] for k in a)
print(f"    {len(a)} images: max |score x86 - score arm64| = {max(diffs):.6f} (golden tolerance {tol}); "
      f"labels equal on {same}/{len(a)}")
sys.exit(0 if max(diffs) <= tol and same == len(a) else 1)
PY

step "6. the daemon on the demo video for $frames frames, publishing to the host's Mosquitto"
port=1883
if ! (echo > /dev/tcp/127.0.0.1/1883) 2> /dev/null; then
  port=$(.venv/bin/python -c 'from edge.deliver.broker import free_port; print(free_port())')
  printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" > "$work/mosq.conf"
  "$(command -v mosquitto || echo /usr/sbin/mosquitto)" -c "$work/mosq.conf" > "$work/mosq.log" 2>&1 &
  mosq_pid=$!
  for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/"$port") 2> /dev/null && break; sleep 0.1; done
fi
camera=arm64-$$
cat > "$work/edge.yaml" <<YAML
line: arm64check
camera: $camera
source: {uri: "$(realpath "$video")", pace: fast, exit_on_end: false}
roi: {x: 170, y: 30, width: 300, height: 300}
model: {path: "$(realpath "$model")"}
mqtt: {host: 127.0.0.1, port: $port, outbox_path: outbox.sqlite3}
api: {port: 0}
state_dir: "$work/state"
shutdown_timeout_s: 20
YAML
# the host's subscriber (x86 paho in .venv): one line per defect event the broker delivers
.venv/bin/python -u - "$port" "boxinspect/arm64check/$camera/defect" > "$work/events.txt" 2>&1 <<'PY' &
import sys, time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="arm64check-sub", clean_session=False)
c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(sys.argv[2], qos=1)
c.on_message = lambda cl, u, m: print(m.topic, m.payload.decode()[:160], flush=True)
c.connect("127.0.0.1", int(sys.argv[1]))
c.loop_forever()
PY
sub_pid=$!
sleep 2
emu -m boxinspect.cli run --config "$work/edge.yaml" --max-frames "$frames" > "$work/run.log" 2>&1 \
  || { tail -n 40 "$work/run.log"; kill "$sub_pid"; exit 1; }
sleep 3
kill "$sub_pid" 2> /dev/null || true
grep -E "self-test|runtime|stopped: frames=" "$work/run.log" | sed -E 's/^.*(INFO|WARNING) +//' | cut -c1-200 \
  | sed 's/^/    /' | tail -n 5
decided=$(grep -c "decision " "$work/run.log" || true)
positive=$(.venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["positive_class"])' "$model.json")
logged=$(grep -c "decision $positive score=" "$work/run.log" || true)
events=$(grep -c "/defect" "$work/events.txt" || true)
echo "    verdicts in order: $(grep -oE "decision \S+ score=\S+" "$work/run.log" | awk '{print $2, $3}' | tr '\n' ' ')"
echo "    decisions logged: $decided (defect events among them: $logged); defect events the host's broker" \
     "delivered to a subscriber on port $port: $events"
[ "$events" -ge 1 ] && [ "$events" -ge "$logged" ] \
  || { echo "FAIL: the broker did not deliver every defect event"; tail -n 30 "$work/run.log"; exit 1; }
step "arm64 check passed (emulated; wall times are qemu's, not a board's)"
