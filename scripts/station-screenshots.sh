#!/usr/bin/env bash
# Refresh the station view's screenshots in docs/img/ (station.png, station-alarm.png): runs the station's browser
# test (headless Chromium against the daemon as a process, tests/test_station_browser.py), which saves them there.
# Needs the venv (scripts/setup-venv.sh edge,dev) and Debian's chromium + chromium-driver.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/img
STATION_SCREENSHOT_DIR=docs/img exec .venv/bin/python -m pytest -q -n 0 -p no:cacheprovider \
  tests/test_station_browser.py -k station_view "$@"
