#!/usr/bin/env bash
# Make the compose stack's secrets, once, beside docker-compose.yml:
#   boxinspect.env      BOXINSPECT_API__TOKEN and the daemon's MQTT user/password (read by the daemon)
#   .env                GRAFANA_ADMIN_PASSWORD, MQTT_READER_PASSWORD and MQTT_PLC_PASSWORD (read by compose; keep it private)
#   mosquitto/passwd    hashed passwords of the MQTT users "boxinspect" (the daemon), "plc" (the only one that may
#                       publish triggers) and "reader" (consumers)
#   mosquitto/acl       topic access per user (from mosquitto/acl.template)
# Existing files are kept; --force makes new ones. Needs mosquitto_passwd (apt-get install mosquitto) or
# Docker (it then runs mosquitto_passwd from the eclipse-mosquitto image).
# DEPLOY_DIR=DIR writes somewhere else (the tests use that).
set -euo pipefail
dir="${DEPLOY_DIR:-$(cd "$(dirname "$0")" && pwd)}"
force=0; [ "${1:-}" = "--force" ] && force=1
umask 077
mkdir -p "$dir/mosquitto"
token() { python3 -c 'import secrets; print(secrets.token_urlsafe(24))'; }
passwd_cmd() {
  if command -v mosquitto_passwd >/dev/null 2>&1; then mosquitto_passwd "$@"
  elif [ -x /usr/bin/mosquitto_passwd ]; then /usr/bin/mosquitto_passwd "$@"
  else docker run --rm -v "$dir/mosquitto:/m" eclipse-mosquitto:2.0.20 mosquitto_passwd "${@/#$dir\/mosquitto//m}"
  fi
}
if [ -f "$dir/boxinspect.env" ] && [ -f "$dir/.env" ] && [ -f "$dir/mosquitto/passwd" ] && [ $force = 0 ]; then
  echo "secrets exist in $dir (use --force to make new ones)"; exit 0
fi
daemon_pw=$(token); reader_pw=$(token); plc_pw=$(token)
cat > "$dir/boxinspect.env" <<ENV
BOXINSPECT_API__TOKEN=$(token)
BOXINSPECT_MQTT__USERNAME=boxinspect
BOXINSPECT_MQTT__PASSWORD=$daemon_pw
ENV
cat > "$dir/.env" <<ENV
GRAFANA_ADMIN_PASSWORD=$(token)
MQTT_READER_PASSWORD=$reader_pw
MQTT_PLC_PASSWORD=$plc_pw
ENV
rm -f "$dir/mosquitto/passwd"
touch "$dir/mosquitto/passwd"
passwd_cmd -b "$dir/mosquitto/passwd" boxinspect "$daemon_pw"
passwd_cmd -b "$dir/mosquitto/passwd" reader "$reader_pw"
passwd_cmd -b "$dir/mosquitto/passwd" plc "$plc_pw"
cp "$dir/mosquitto/acl.template" "$dir/mosquitto/acl" 2>/dev/null || cp "$(dirname "$0")/mosquitto/acl.template" "$dir/mosquitto/acl"
# the broker runs as uid 1883 in its container: it must be able to read these (passwords are hashed)
chmod 0644 "$dir/mosquitto/passwd" "$dir/mosquitto/acl"
if [ "$(id -u)" = 0 ]; then chown 1883:1883 "$dir/mosquitto/passwd" "$dir/mosquitto/acl" && chmod 0600 "$dir/mosquitto/passwd"; fi
echo "wrote $dir/boxinspect.env, $dir/.env, $dir/mosquitto/passwd, $dir/mosquitto/acl"
echo "MQTT users: boxinspect (the daemon), plc (triggers; MQTT_PLC_PASSWORD), reader (MQTT_READER_PASSWORD in $dir/.env)"
