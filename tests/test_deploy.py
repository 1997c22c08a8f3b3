"""Deployment files checked against the running code: the Grafana dashboard queries only metrics a real
daemon exports; the systemd unit and the compose file point at what the code reads.

(Schema checks of the compose file, the Kubernetes manifests, the Dockerfiles (hadolint) and the unit
(systemd-analyze) run in scripts/check-deploy.sh, with tools installed from PyPI.)
"""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.broker import MOSQUITTO_PASSWD, Broker
from tests.helpers import START_TIMEOUT, DaemonProc, Subscriber
from tests.test_daemon import SLOW, base_cfg

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "boxinspect.json"
PROMETHEUS_OWN = {"up", "ALERTS"}  # series Prometheus makes itself, not the daemon
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
    exported = exported_metrics(DaemonProc(tmp_path, base_cfg(tmp_path, int8_model, video, gt, None)))
    assert "boxinspect_outbox_depth" in exported  # the parse worked
    missing = {
        (title, name)
        for title, expr in dashboard_queries()
        for name in METRIC_RE.findall(expr)
        if name not in exported and name not in PROMETHEUS_OWN
    }
    assert not missing, f"dashboard queries name metrics the daemon does not export: {sorted(missing)}"


def exported_metrics(d: DaemonProc) -> set[str]:
    """Start ``d``, read its /metrics once it answers, stop it: the sample names it exports."""
    d.start()
    try:
        d.wait_api(START_TIMEOUT)
        text = d.get("/metrics").text
    finally:
        d.stop()
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def _unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(REPO / "deploy" / "boxinspect.service")
    return unit


def test_systemd_unit_matches_the_daemon():
    svc = _unit()["Service"]
    assert svc["Type"] == "notify"  # the daemon sends READY=1 (edge/runtime/liveness.py)
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


class ComposeBroker(Broker):
    """Mosquitto with deploy/mosquitto/mosquitto.conf, only its paths and port moved into a temp dir."""

    def __init__(self, secrets_dir: Path) -> None:
        self.secrets_dir = secrets_dir
        super().__init__()

    def _write_config(self) -> None:
        conf = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
        conf = conf.replace("listener 1883", f"listener {self.port} {self.host}")
        conf = conf.replace("/mosquitto/config/", f"{self.secrets_dir}/mosquitto/")
        conf = conf.replace("/mosquitto/data/", f"{self.dir}/")
        if os.geteuid() == 0:
            conf += "user root\n"  # the passwd file belongs to the container's uid 1883
        self.conf_path.write_text(conf)


def _env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def _publish(broker: Broker, user: str | None, password: str | None, topic: str) -> str:
    """Connect, publish one QoS 1 message under MQTT 5, return the connect or PUBACK reason."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    if user is not None:
        c.username_pw_set(user, password)
    done = threading.Event()
    result: list[str] = []

    def on_connect(cl: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            result.append(f"connect refused: {reason}")
            done.set()
        else:
            cl.publish(topic, b'{"test": 1}', qos=1)

    def on_publish(cl: Any, u: Any, mid: int, reason: Any, props: Any) -> None:
        result.append(f"puback: {reason}")
        done.set()

    c.on_connect, c.on_publish = on_connect, on_publish
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        assert done.wait(10), "no answer from the broker"
    finally:
        c.loop_stop()
        c.disconnect()
    return result[0]


@pytest.mark.skipif(not Path(MOSQUITTO_PASSWD).exists(), reason="mosquitto_passwd not installed")
def test_compose_broker_refuses_anonymous_clients_and_enforces_the_acl(tmp_path):
    deploy = tmp_path / "deploy"
    subprocess.run(["bash", str(REPO / "deploy" / "make-secrets.sh")], env={**os.environ, "DEPLOY_DIR": str(deploy)}, check=True)
    daemon = _env_file(deploy / "boxinspect.env")
    reader_pw = _env_file(deploy / ".env")["MQTT_READER_PASSWORD"]
    assert len(daemon["BOXINSPECT_API__TOKEN"]) >= 20
    with ComposeBroker(deploy) as broker, Subscriber(
        broker.host, broker.port, "boxinspect/#", username="reader", password=reader_pw
    ) as sub:
        assert "refused" in _publish(broker, None, None, "boxinspect/l1/c1/defect")
        assert "refused" in _publish(broker, "boxinspect", "wrong", "boxinspect/l1/c1/defect")
        ok = _publish(broker, "boxinspect", daemon["BOXINSPECT_MQTT__PASSWORD"], "boxinspect/l1/c1/defect")
        assert ok == "puback: Success", ok
        assert sub.wait_for(lambda s: s.on("/defect"), 10), broker.log_tail()
        # the reader may not fake events, and the daemon may not write outside boxinspect/
        assert "Not authorized" in _publish(broker, "reader", reader_pw, "boxinspect/l1/c1/defect")
        assert "Not authorized" in _publish(broker, "boxinspect", daemon["BOXINSPECT_MQTT__PASSWORD"], "plant/other")
        # issue 24: only the PLC user announces parts; the daemon announces itself to Home Assistant
        assert "Not authorized" in _publish(broker, "reader", reader_pw, "boxinspect/l1/c1/trigger")
        plc_pw = _env_file(deploy / ".env")["MQTT_PLC_PASSWORD"]
        allowed = ("puback: Success", "puback: No matching subscribers")
        assert _publish(broker, "plc", plc_pw, "boxinspect/l1/c1/trigger") in allowed
        assert "Not authorized" in _publish(broker, "plc", plc_pw, "boxinspect/l1/c1/defect")
        discovery = "homeassistant/sensor/boxinspect_l1_c1/defect_rate/config"
        assert _publish(broker, "boxinspect", daemon["BOXINSPECT_MQTT__PASSWORD"], discovery) in allowed
        assert _publish(broker, "reader", reader_pw, "boxinspect/l1/c1/replay") in allowed
        assert len(sub.on("/defect")) == 1


def test_no_fastapi_feature_newer_than_the_supported_floor():
    """FastAPI's per-route max_body_size needs FastAPI 0.164, which needs Python 3.11: on a Jetson (3.10)
    create_app would raise TypeError. Upload limits go through edge.api.middleware.BodyLimit instead."""
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "edge").rglob("*.py") if "max_body_size=" in p.read_text()]
    assert not offenders, offenders


ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def test_alert_rules_cover_what_a_line_needs_and_the_dashboard_shows_them():
    names = {r["alert"] for r in alert_rules()}
    for want in ("Down", "LivenessFailed", "LoopStalled", "CameraDown", "OutboxBacklogGrowing", "DiskFilling",
                 "RejectDeadlinesMissed", "SelfTestFailed"):
        assert f"Boxinspect{want}" in names, want
    shown = {" ".join(expr.split()) for _, expr in dashboard_queries()}
    for r in alert_rules():
        assert " ".join(r["expr"].split()) in shown, f"the dashboard does not show {r['alert']}"
    compose = yaml.safe_load((REPO / "deploy" / "docker-compose.yml").read_text())
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts
    prom = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    assert prom["rule_files"] == ["/etc/prometheus/alerts.yml"]


@pytest.mark.slow
def test_alert_rules_name_metrics_the_daemon_exports(tmp_path, tiny_model):
    """Every series the rules (and so the dashboard's alert panels) read is on a real daemon's /metrics."""
    from tests.helpers import tiny_daemon_cfg

    exported = exported_metrics(DaemonProc(tmp_path, tiny_daemon_cfg(tmp_path, tiny_model)))
    used = {name for r in alert_rules() for name in METRIC_RE.findall(r["expr"])}
    assert "boxinspect_loop_alive" in used and "boxinspect_state_disk_free_bytes" in used
    assert not used - exported - PROMETHEUS_OWN, sorted(used - exported - PROMETHEUS_OWN)


def test_k8s_manifest_sets_trusted_hosts_and_a_memory_limit_above_the_measured_peak():
    """Issue 24: the manifest bound the API to 0.0.0.0 with no trusted_hosts, and its 768 Mi limit was below the
    measured peak. The peak is the combined load test's figure (docs/bench/combined-issue24.json)."""
    import json

    import yaml

    cm = yaml.safe_load((REPO / "deploy" / "k8s" / "configmap.yaml").read_text())
    cfg = yaml.safe_load(cm["data"]["config.yaml"])
    assert cfg["api"]["host"] == "0.0.0.0" and cfg["api"]["trusted_hosts"]
    ds = yaml.safe_load((REPO / "deploy" / "k8s" / "daemonset.yaml").read_text())
    (daemon,) = [c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "boxinspect"]
    probe_host = {h["name"]: h["value"] for h in daemon["livenessProbe"]["httpGet"]["httpHeaders"]}["Host"]
    assert probe_host in cfg["api"]["trusted_hosts"]
    limit = daemon["resources"]["limits"]["memory"]
    mib = float(limit[:-2]) * (1024 if limit.endswith("Gi") else 1)
    peak = json.loads((REPO / "docs" / "bench" / "combined-issue24.json").read_text())["rss_peak_mb"]
    assert mib * 1.048576 > max(peak, 829) * 1.1, (limit, peak)  # MiB -> MB, 10 % headroom over the worst seen
