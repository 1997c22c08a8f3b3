#!/usr/bin/env bash
# Long fuzz run against a real daemon process: schemathesis on every endpoint of its OpenAPI (with the
# token, a wrong one and none; valid and invalid requests) plus Hypothesis-mutated images on /predict.
# Fresh randomness each run; any 5xx (other than the documented 503 not-ready answers) fails it.
#   bash scripts/fuzz.sh                 # 8,000 API cases + 2,500 image cases
#   bash scripts/fuzz.sh 20000 5000      # more
# The counts per status class land in fuzz-report.json (docs/RELIABILITY.md records a run).
# It is CPU-heavy for ~20 minutes on 2 cores: it runs under nice.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || { bash scripts/setup-venv.sh edge,train,dev; PY=.venv/bin/python; }
export TF_CPP_MIN_LOG_LEVEL=2
export BOXINSPECT_FUZZ_CASES=${1:-8000}
export BOXINSPECT_FUZZ_IMAGES=${2:-2500}
export BOXINSPECT_FUZZ_WRONG=${BOXINSPECT_FUZZ_WRONG:-3000}  # wrong content types on every route (issue 24)
export BOXINSPECT_FUZZ_RANDOM=1
export BOXINSPECT_FUZZ_REPORT=${BOXINSPECT_FUZZ_REPORT:-$PWD/fuzz-report.json}
rm -f "$BOXINSPECT_FUZZ_REPORT"
start=$(date +%s)
nice -n 10 "$PY" -m pytest tests/test_fuzz.py -q -p no:cacheprovider "${@:3}"
echo "fuzz: $((BOXINSPECT_FUZZ_CASES + BOXINSPECT_FUZZ_IMAGES + BOXINSPECT_FUZZ_WRONG)) cases asked, $(( $(date +%s) - start )) s; counts in $BOXINSPECT_FUZZ_REPORT:"
cat "$BOXINSPECT_FUZZ_REPORT"
