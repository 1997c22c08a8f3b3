#!/usr/bin/env bash
# Regenerate constraints/edge.txt: the exact versions an edge image installs (Python 3.11, as in the
# Dockerfile). Every package in it ships wheels for linux x86_64 and aarch64, so the one lock serves
# both architectures. Run after changing the edge dependencies in pyproject.toml; CI installs the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
work=$(mktemp -d)
"$py" -m venv "$work/v"
"$work/v/bin/python" -m pip install -q ".[edge]"
{
  echo "# The edge lock: pip install -c constraints/edge.txt '.[edge]' (Dockerfile, CI). Made by scripts/lock-edge.sh"
  echo "# with $("$work/v/bin/python" --version) on $(uname -m); regenerate, do not edit."
  "$work/v/bin/python" -m pip freeze --exclude-editable | grep -viE '^(boxinspect|pip|setuptools|wheel)[=@ ]' | sort -f
} > constraints/edge.txt
rm -rf "$work"
echo "constraints/edge.txt: $(grep -vc '^#' constraints/edge.txt) packages"
