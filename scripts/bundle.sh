#!/usr/bin/env bash
# An offline install bundle for a plant without internet: ONE tarball with every wheel boxinspect[edge] needs
# for one platform and Python (pinned by the lock of that Python, constraints/), the example config, the
# systemd unit and an install script that uses no network (pip --no-index).
#
#   bash scripts/bundle.sh --platform linux_aarch64 --python 3.11            # Pi OS Bookworm (64-bit)
#   bash scripts/bundle.sh --platform linux_aarch64 --python 3.10            # Jetson, JetPack 6
#   bash scripts/bundle.sh --platform linux_x86_64 --python 3.12 --extras edge,retrain --out dist/
#
# Made on any machine with this checkout and PyPI (wheels are downloaded for the target, never built, so an
# x86_64 workstation makes an aarch64 bundle). On the device:
#   tar xzf boxinspect-0.1.0-linux_aarch64-py3.11.tar.gz && sudo boxinspect-0.1.0-linux_aarch64-py3.11/install.sh
# Output: OUT/boxinspect-VERSION-PLATFORM-pyX.Y.tar.gz (default OUT: dist/). docs/DEPLOY.md, "Offline install".
# PIP_PYTHON=/path/to/python: the interpreter whose pip builds and downloads (default python3; any version).
set -euo pipefail
cd "$(dirname "$0")/.."
platform="" python="" extras=edge out=dist
while [ $# -gt 0 ]; do
  case "$1" in
    --platform) platform=$2; shift 2 ;;
    --python) python=$2; shift 2 ;;
    --extras) extras=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "bundle.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$platform" in
  linux_aarch64|linux_x86_64) arch=${platform#linux_} ;;
  *) echo "bundle.sh: --platform linux_aarch64 or linux_x86_64 (32-bit ARM is not supported: docs/DEPLOY.md)" >&2; exit 2 ;;
esac
case "$python" in
  3.10|3.11|3.12|3.13) ;;
  *) echo "bundle.sh: --python 3.10, 3.11, 3.12 or 3.13" >&2; exit 2 ;;
esac
lock=constraints/edge-$python.txt
[ "$python" = 3.11 ] && lock=constraints/edge.txt
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
name=boxinspect-$version-$platform-py$python
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dir=$work/$name
mkdir -p "$dir/wheels" "$out"

echo "==> boxinspect wheel"
pip=(${PIP_PYTHON:-python3} -m pip)
"${pip[@]}" wheel -q --no-deps --no-build-isolation . -w "$dir/wheels" 2>/dev/null \
  || "${pip[@]}" wheel -q --no-deps . -w "$dir/wheels"
wheel=$(ls "$dir"/wheels/boxinspect-*.whl)

echo "==> dependency wheels for $platform, CPython $python (lock $lock, wheels only)"
plats=()
for glibc in 35 34 31 28 27 26 17; do plats+=(--platform "manylinux_2_${glibc}_$arch"); done
plats+=(--platform "manylinux2014_$arch" --platform "linux_$arch")
"${pip[@]}" download -q --only-binary :all: "${plats[@]}" --implementation cp --python-version "$python" \
  -c "$lock" -d "$dir/wheels" "$wheel[$extras]" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

cp deploy/config.example.yaml deploy/boxinspect.service "$dir/"
cp "$lock" "$dir/constraints.txt"
cat > "$dir/install.sh" <<EOF
#!/bin/sh
# Install boxinspect[$extras] $version from the wheels beside this script: no network (pip --no-index).
#   sudo ./install.sh                  venv in /opt/boxinspect (PREFIX=DIR for elsewhere)
#   sudo ./install.sh --system         also: the unit in /etc/systemd/system, the example config in /etc/boxinspect
# For $platform, CPython $python (PYTHON=python3.X to pick the interpreter).
set -eu
here=\$(cd "\$(dirname "\$0")" && pwd)
prefix=\${PREFIX:-/opt/boxinspect}
py=\${PYTHON:-python3}
want=$python arch=$arch
have=\$("\$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "\$have" = "\$want" ] || { echo "this bundle is for Python \$want; \$py is \$have (set PYTHON=python\$want)" >&2; exit 2; }
[ "\$(uname -m)" = "\$arch" ] || { echo "this bundle is for \$arch; this machine is \$(uname -m)" >&2; exit 2; }
"\$py" -m venv "\$prefix"
"\$prefix/bin/python" -m pip install --no-index --find-links "\$here/wheels" -c "\$here/constraints.txt" "boxinspect[$extras]==$version"
"\$prefix/bin/boxinspect" --version
if [ "\${1:-}" = --system ]; then
  install -d -m 0750 /etc/boxinspect
  [ -e /etc/boxinspect/config.yaml ] || install -m 0640 "\$here/config.example.yaml" /etc/boxinspect/config.yaml
  install -m 0644 "\$here/boxinspect.service" /etc/systemd/system/boxinspect.service
  echo "unit installed; next: docs/DEPLOY.md (systemd): user, config, model, then systemctl enable --now boxinspect"
fi
echo "installed in \$prefix; check a model with: \$prefix/bin/boxinspect selftest MODEL.tflite"
EOF
chmod +x "$dir/install.sh"
cat > "$dir/README.txt" <<EOF
boxinspect $version, offline bundle for $platform, CPython $python ($extras).
wheels/               every wheel the install needs ($(ls "$dir/wheels" | wc -l) files), pinned by constraints.txt ($lock)
config.example.yaml   every config key, documented: copy to /etc/boxinspect/config.yaml and edit
boxinspect.service    the hardened systemd unit
install.sh            sudo ./install.sh [--system]: a venv in /opt/boxinspect from wheels/ only (pip --no-index)
Then: boxinspect selftest /etc/boxinspect/model_int8.tflite; docs/DEPLOY.md of the repository for the rest.
EOF
tar -C "$work" -czf "$out/$name.tar.gz" "$name"
echo "==> $out/$name.tar.gz ($(du -h "$out/$name.tar.gz" | cut -f1), $(ls "$dir/wheels" | wc -l) wheels)"
tar -tzf "$out/$name.tar.gz" | sed 's#^[^/]*/##' | grep -v '^$' | sort
