#!/usr/bin/env bash
# Make the distribution's PyGObject (Debian / Pi OS / Ubuntu python3-gi) importable from a venv, for the GStreamer
# and GenICam sources (source.kind: gstreamer | genicam; docs/DEPLOY.md, "Cameras").
#   scripts/link-system-gi.sh [VENV]        (default .venv)
# It links ONLY the `gi` package into a folder of its own and puts that folder on the venv's path with a .pth
# file: the whole /usr/lib/python3/dist-packages on the path would let the distribution's older copies of other
# packages (yaml, cryptography, ...) stand in for ones the venv lacks. The venv's Python must be the minor version
# python3-gi was built for (its _gi extension is CPython-ABI specific): 3.11 on Debian 12 / Pi OS bookworm,
# 3.10 on Ubuntu 22.04 / JetPack 6. Exit 0 and a note when the system has no python3-gi (nothing to link); exit 1
# when it has one the venv cannot load.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
py=$venv/bin/python
sysgi=${SYSTEM_GI:-/usr/lib/python3/dist-packages/gi}
[ -x "$py" ] || { echo "link-system-gi: no venv at $venv"; exit 1; }
if [ ! -d "$sysgi" ]; then
  echo "link-system-gi: no system PyGObject ($sysgi): apt install python3-gi (GStreamer/GenICam sources stay off)"
  exit 0
fi
suffix=$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
if ! ls "$sysgi"/_gi"$suffix" > /dev/null 2>&1; then
  echo "link-system-gi: $sysgi is built for $(cd "$sysgi" && ls _gi.*.so), not $suffix: make the venv with the" \
       "system's python3"
  exit 1
fi
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$site/_system_gi"
ln -sfn "$sysgi" "$site/_system_gi/gi"
echo "$site/_system_gi" > "$site/boxinspect-system-gi.pth"
"$py" -c 'import gi; print("link-system-gi: PyGObject", gi.__version__, "from", gi.__path__[0])'
