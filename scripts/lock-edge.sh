#!/usr/bin/env bash
# The edge locks: the exact versions of boxinspect[edge,retrain] for every supported Python, one file each,
# valid on linux x86_64 and aarch64 alike (every package in them has wheels for both):
#   constraints/edge.txt        Python 3.11 (Pi OS Bookworm, Debian 12, the Docker image)
#   constraints/edge-3.10.txt   Python 3.10 (JetPack 6)
#   constraints/edge-3.12.txt   Python 3.12 (Ubuntu 24.04)
#   constraints/edge-3.13.txt   Python 3.13
# Use: pip install -c constraints/edge-3.10.txt '.[edge]'  (constraints never add packages: the lean edge
# install stays lean; '.[edge,retrain]' gets the pinned scikit-learn too).
#
#   bash scripts/lock-edge.sh           regenerate (keeps the pins already there that still resolve; run after
#                                       changing the edge or retrain dependencies in pyproject.toml)
#   bash scripts/lock-edge.sh --check   CI (scripts/check-deploy.sh): for each lock and for x86_64 and aarch64,
#                                       resolve boxinspect[edge,retrain] against it, wheels only, for that
#                                       Python and platform; fail unless it resolves to exactly the lock
# Resolution by `uv pip compile --python-version --python-platform` (uv from scripts/pyinstall.sh): it reads
# the package index, nothing is installed. Needs the network (PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pyinstall.sh
have_uv || { echo "lock-edge.sh needs uv (scripts/pyinstall.sh could not install it)"; exit 1; }
PYTHONS=(3.10 3.11 3.12 3.13)
# manylinux_2_28: glibc 2.28 or newer, which Pi OS Bookworm (2.36), JetPack 6 (2.35) and Debian 12 all have
PLATFORMS=(x86_64-manylinux_2_28 aarch64-manylinux_2_28)
lock_file() { if [ "$1" = 3.11 ]; then echo constraints/edge.txt; else echo "constraints/edge-$1.txt"; fi; }
# name==version lines, names normalised (PEP 503: lower case, runs of -_. as -), comments dropped, sorted
pins() { sed 's/[[:space:]]*#.*//' "$1" | awk -F'==' 'NF == 2 { n = tolower($1); gsub(/[-_.]+/, "-", n); print n "==" $2 }' | sort; }
compile() {  # compile PYTHON PLATFORM OUT [uv args...]: boxinspect[edge,retrain], wheels only
  local py=$1 plat=$2 out=$3
  shift 3
  "$_uv" pip compile -q pyproject.toml --extra edge --extra retrain --python-version "$py" --python-platform "$plat" \
    --only-binary :all: --no-header --no-annotate --no-emit-package boxinspect -o "$out" "$@"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ "${1:-}" = --check ]; then
  check_one() {  # check_one PYTHON PLATFORM: one line, ok or FAIL with why (the resolutions run in parallel)
    local py=$1 plat=$2 lock out
    lock=$(lock_file "$py")
    out="$work/$py-$plat"
    [ -f "$lock" ] || { echo "FAIL: $lock is missing (bash scripts/lock-edge.sh)"; return 1; }
    if ! compile "$py" "$plat" "$out.txt" -c "$lock" 2> "$out.err"; then
      echo "FAIL: $lock does not resolve for Python $py on $plat:"; cat "$out.err"; return 1
    fi
    if ! diff <(pins "$lock") <(pins "$out.txt") > "$out.diff"; then
      echo "FAIL: Python $py on $plat resolves to other versions than $lock (regenerate it):"; cat "$out.diff"; return 1
    fi
    echo "ok -- $lock: Python $py on $plat resolves to its $(pins "$lock" | wc -l) pins (wheels only)"
  }
  pids=()
  for py in "${PYTHONS[@]}"; do
    for plat in "${PLATFORMS[@]}"; do
      check_one "$py" "$plat" > "$work/check-$py-$plat.log" 2>&1 &
      pids+=($!)
    done
  done
  fail=0
  for p in "${pids[@]}"; do wait "$p" || fail=1; done
  cat "$work"/check-*.log
  exit "$fail"
fi

for py in "${PYTHONS[@]}"; do
  lock=$(lock_file "$py")
  # the pins already there are kept where they still resolve (uv prefers the versions of its output file)
  [ -f "$lock" ] && pins "$lock" > "$work/prev.txt" && cp "$work/prev.txt" "$work/lock.txt"
  compile "$py" "${PLATFORMS[0]}" "$work/lock.txt"
  for plat in "${PLATFORMS[@]:1}"; do  # the same pins must serve the other platform
    compile "$py" "$plat" "$work/other.txt" -c "$work/lock.txt"
    diff <(pins "$work/lock.txt") <(pins "$work/other.txt") \
      || { echo "Python $py: $plat needs other versions than ${PLATFORMS[0]}: one lock cannot serve both"; exit 1; }
  done
  {
    echo "# The edge lock for Python $py, linux x86_64 and aarch64: pip install -c $lock '.[edge]' (or '.[edge,retrain]')."
    echo "# Made by scripts/lock-edge.sh (uv pip compile, wheels only); regenerate, do not edit. CI checks it resolves."
    pins "$work/lock.txt"
  } > "$lock"
  echo "$lock: $(pins "$lock" | wc -l) packages"
done
