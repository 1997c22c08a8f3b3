#!/usr/bin/env bash
# Build the boxinspect wheel (and sdist) into dist/, for machines that cannot reach the git repository:
#   bash scripts/build-wheel.sh
#   scp dist/boxinspect-*.whl constraints/edge.txt pi:/tmp/
#   sudo python3 -m venv /opt/boxinspect
#   sudo /opt/boxinspect/bin/pip install -c /tmp/edge.txt "/tmp/boxinspect-0.1.0-py3-none-any.whl[edge]"
# The wheel is pure Python (py3-none-any): one file for x86_64, arm64, Python 3.10-3.13.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q build
rm -rf build ./*.egg-info
"$work/venv/bin/python" -m build --outdir dist .
ls -l dist/
