"""Deployment files checked against the running code: the Grafana dashboard queries only metrics a real
daemon exports; the systemd unit and the compose file point at what the code reads.

(Schema checks of the compose file, the Kubernetes manifests, the Dockerfiles (hadolint) and the unit
(systemd-analyze) run in scripts/check-deploy.sh, with tools installed from PyPI.)
"""

from __future__ import annotations

import configparser
import json
import re
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.test_daemon import SLOW, START_TIMEOUT, DaemonProc, base_cfg

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "boxinspect.json"
PROMETHEUS_OWN = {"up"}  # series Prometheus makes itself, not the daemon
METRIC_RE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query in the dashboard, template variables included."""
    dash = json.loads(DASHBOARD.read_text())
    out = [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]
    out += [(f"variable {v['name']}", v["definition"]) for v in dash.get("templating", {}).get("list", [])]
    return out


def test_dashboard_has_the_panels_an_operator_needs():
    titles = " | ".join(t for t, _ in dashboard_queries()).lower()
    for want in ("frames per second", "decisions", "defect rate", "end-to-end latency", "outbox", "camera", "model"):
        assert want in titles, want
    for title, expr in dashboard_queries():
        assert METRIC_RE.findall(expr), f"{title}: no metric selector in {expr!r}"


@SLOW
def test_dashboard_queries_name_metrics_the_daemon_exports(tmp_path, int8_model, synth_video):
    video, gt = synth_video
    d = DaemonProc(tmp_path, base_cfg(tmp_path, int8_model, video, gt, None)).start()
    try:
        d.wait_api(START_TIMEOUT)
        text = d.get("/metrics").text
    finally:
        d.stop()
    exported = {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert "boxinspect_outbox_depth" in exported  # the parse worked
    missing = {
        (title, name)
        for title, expr in dashboard_queries()
        for name in METRIC_RE.findall(expr)
        if name not in exported and name not in PROMETHEUS_OWN
    }
    assert not missing, f"dashboard queries name metrics the daemon does not export: {sorted(missing)}"


def _unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(REPO / "deploy" / "boxinspect.service")
    return unit


def test_systemd_unit_matches_the_daemon():
    svc = _unit()["Service"]
    assert svc["Type"] == "notify"  # the daemon sends READY=1 (edge/liveness.py)
    assert svc["WatchdogSec"] and svc["NotifyAccess"] == "main"
    assert svc["StateDirectory"] == "boxinspect"  # -> $STATE_DIRECTORY, where relative state paths go
    assert set(svc["RestartPreventExitStatus"].split()) == {"2", "3"}  # EXIT_CONFIG, EXIT_MODEL
    from edge.daemon import EXIT_CONFIG, EXIT_MODEL

    assert {EXIT_CONFIG, EXIT_MODEL} == {2, 3}
    assert "char-video4linux" in svc["DeviceAllow"]


def test_compose_mounts_what_the_image_reads():
    compose = yaml.safe_load((REPO / "deploy" / "docker-compose.yml").read_text())
    daemon = compose["services"]["boxinspect"]
    targets = {v["target"]: v for v in daemon["volumes"] if isinstance(v, dict)}
    assert targets["/config/config.yaml"]["bind"]["create_host_path"] is False  # missing config: compose fails
    assert daemon["environment"]["BOXINSPECT_STATE_DIR"] == "/data"
    assert "./boxinspect.env" in daemon["env_file"]
    assert all("logging" in s for s in compose["services"].values())  # rotated logs everywhere
    dockerfile = (REPO / daemon["build"]["dockerfile"]).read_text()
    assert 'CMD ["run", "--config", "/config/config.yaml"]' in dockerfile
    assert "/healthz" in dockerfile and "HEALTHCHECK" in dockerfile
