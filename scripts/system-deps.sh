#!/usr/bin/env bash
# The system packages the test suite uses, installed with apt-get when missing (one apt-get call, only what is
# missing; nothing when all are there). Called by scripts/test.sh and .ci/run.
#   mosquitto                         the real broker every MQTT test starts (tests/broker.py)
#   chromium, chromium-driver         the browser tests (Selenium + headless Chromium)
#   GStreamer + PyGObject + gst-rtsp-server, Aravis and its fake GigE Vision camera: the camera tests
#   postgresql                        the historian's tests start their own cluster with Debian's binaries
#   tzdata                            shift boundaries in a local time zone (station tests)
# Without root or apt-get it only names what is missing, and the tests that need it fail or skip saying so.
set -euo pipefail
base=(mosquitto chromium chromium-driver postgresql tzdata)
cameras=(gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
         gstreamer1.0-libav python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gir1.2-gst-rtsp-server-1.0
         gstreamer1.0-libcamera aravis-tools gir1.2-aravis-0.8)
pkgs=("${base[@]}" "${cameras[@]}")
command -v dpkg >/dev/null 2>&1 || { echo "system-deps: no dpkg here; install by hand: ${pkgs[*]}" >&2; exit 0; }
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: missing ${missing[*]}; install them (apt-get install -y ${missing[*]}) or the tests that need them fail" >&2
  exit 0
fi
echo "==> installing system packages the tests use: ${missing[*]}"
apt-get update -qq
install() {  # install NO_RECOMMENDS PACKAGE...: the missing ones among them
  local want=() p
  for p in "${@:2}"; do [[ " ${missing[*]} " == *" $p "* ]] && want+=("$p"); done
  [ ${#want[@]} -eq 0 ] && return 0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $1 "${want[@]}" >/dev/null
}
install "" "${base[@]}"
install --no-install-recommends "${cameras[@]}"
