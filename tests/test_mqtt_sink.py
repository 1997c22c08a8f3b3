"""MqttSink against a real Mosquitto: delivery, schema, outage replay, SIGKILL, last will, auth, TLS."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from pydantic import SecretStr

from edge.config import MqttConfig, TlsConfig
from edge.deliver.mqtt import MqttSetupError as MqttSinkError
from edge.deliver.mqtt_sink import MqttSink
from edge.deliver.outbox import Outbox
from edge.runtime.metrics import Metrics
from edge.runtime.timeutil import iso_utc
from tests.broker import Broker
from tests.helpers import Subscriber
from tests.helpers import metric as sample

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "edge" / "event.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
BASE = "boxinspect/line1/cam1"


def make_event(i: int, defect: bool = True) -> dict[str, Any]:
    now = iso_utc()
    score = 0.9 if defect else 0.1
    return {
        "schema_version": 2,
        "event_id": str(uuid.uuid4()),
        "line": "line1",
        "camera": "cam1",
        "part_id": None,
        "label": "damaged" if defect else "intact",
        "is_defect": defect,
        "score": score,
        "max_score": score,
        "mean_score": score,
        "frame_count": 3,
        "first_frame": 10 * i,
        "last_frame": 10 * i + 2,
        "threshold": 0.5,
        "model_id": "tiny-0123abcd",
        "captured_at": now,
        "decided_at": now,
        "mode": "continuous",
        "evidence": {"frame": f"evidence/{i}.jpg", "crop": None},
        "kind": "model",
        "action": "reject" if defect else "pass",
        "reason": None,
        "deadline_at": now,
        "slack_ms": 12.5,
        "late": False,
    }


def cfg_for(broker: Broker, tmp_path: Path, **kw: Any) -> MqttConfig:
    base: dict[str, Any] = {
        "host": broker.host,
        "port": broker.port,
        "outbox_path": tmp_path / "outbox.sqlite3",
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 1.0,
        "keepalive_s": 5,
    }
    base.update(kw)
    return MqttConfig(**base)


def assert_no_loss_in_order(received: list[dict], sent_ids: list[str]) -> None:
    """Every sent event arrived; first arrivals in send order; a duplicate repeats event_id AND seq."""
    first: list[str] = []
    seq_of: dict[str, int] = {}
    for ev in received:
        eid = ev["event_id"]
        if eid in seq_of:
            assert seq_of[eid] == ev["seq"], f"duplicate of {eid} with another seq"
            continue
        seq_of[eid] = ev["seq"]
        first.append(eid)
    assert set(first) == set(sent_ids), f"lost: {set(sent_ids) - set(first)}"
    assert first == sent_ids, "events arrived out of order"
    seqs = [seq_of[e] for e in sent_ids]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


@pytest.fixture
def broker():
    with Broker() as b:
        yield b


# ------------------------------------------------------------------------------------------------


def test_events_arrive_with_valid_schema(broker: Broker, tmp_path: Path) -> None:
    m = Metrics()
    with Subscriber(broker.host, broker.port, f"{BASE}/#") as sub:
        sink = MqttSink(cfg_for(broker, tmp_path, publish_results=True), BASE, m, client_id="t-sink")
        sink.start()
        try:
            assert sink.wait_connected(10)
            events = [make_event(i) for i in range(3)]
            seqs = [sink.publish_defect(e) for e in events]
            assert seqs == sorted(seqs) and None not in seqs
            assert sink.wait_drained(10)
            assert sink.publish_result(make_event(9, defect=False))
            assert sink.publish_stats({"fps": 12.5, "outbox_depth": 0})
            assert sub.wait_for(lambda s: len(s.on("/defect")) >= 3 and s.on("/result") and s.on("/stats"))
        finally:
            sink.stop(5)
        assert sub.wait_for(lambda s: len(s.on("/status")) >= 2)  # stop() published "offline"

    defects = sub.json("/defect")
    for ev in defects + sub.json("/result"):
        errors = [e.message for e in VALIDATOR.iter_errors(ev)]
        assert not errors, errors
    assert [d["event_id"] for d in defects] == [e["event_id"] for e in events]
    assert [d["seq"] for d in defects] == seqs
    assert all("published_at" in d for d in defects)
    assert defects[0]["evidence"] == {"frame": "evidence/0.jpg", "crop": None}
    result = sub.json("/result")[0]
    assert result["is_defect"] is False and "seq" not in result
    assert sub.json("/stats")[0]["fps"] == 12.5
    assert [p for _, p, _ in sub.on("/status")] == [b"online", b"offline"]
    assert sample(m, "boxinspect_events_published_total") == 3
    assert sample(m, "boxinspect_outbox_depth") == 0
    assert sample(m, "boxinspect_mqtt_connected") == 0  # after stop


def test_results_off_by_default_and_status_is_retained(broker: Broker, tmp_path: Path) -> None:
    sink = MqttSink(cfg_for(broker, tmp_path), BASE, client_id="t-sink")
    sink.start()
    try:
        assert sink.wait_connected(10)
        assert sink.publish_result(make_event(0)) is False  # mqtt.publish_results is false
        # Wait until the broker has the "online" (CONNACK comes before the sink publishes it) ...
        with Subscriber(broker.host, broker.port, f"{BASE}/status") as first:
            assert first.wait_for(lambda s: s.on("/status") and s.on("/status")[-1][1] == b"online")
        # ... then a subscriber that comes later still learns the state: status is retained.
        with Subscriber(broker.host, broker.port, f"{BASE}/status") as late:
            assert late.wait_for(lambda s: s.on("/status"))
            assert late.on("/status")[0][1:] == (b"online", True)
    finally:
        sink.stop(5)
    with Subscriber(broker.host, broker.port, f"{BASE}/status") as after:
        assert after.wait_for(lambda s: s.on("/status"))
        assert after.on("/status")[0][1:] == (b"offline", True)


def test_outage_events_wait_on_disk_then_arrive_in_order(tmp_path: Path) -> None:
    m = Metrics()
    with Broker(persistence=True) as broker:
        sub = Subscriber(broker.host, broker.port, f"{BASE}/defect", client_id="t-sub-outage", persistent=True)
        sink = MqttSink(cfg_for(broker, tmp_path), BASE, m, client_id="t-sink-outage")
        sink.start()
        try:
            assert sink.wait_connected(10)
            sent = []
            for i in range(3):
                ev = make_event(i)
                sink.publish_defect(ev)
                sent.append(ev["event_id"])
            assert sink.wait_drained(10)

            broker.stop()
            deadline = time.monotonic() + 10
            while sink.connected and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not sink.connected
            n = 25
            for i in range(3, 3 + n):
                ev = make_event(i)
                sink.publish_defect(ev)
                sent.append(ev["event_id"])
            assert sink.outbox_depth == n  # they wait on disk
            # ... and only there: nothing was handed to paho, which would keep it in memory only.
            assert len(sink._client._out_messages) == 0
            assert sample(m, "boxinspect_outbox_depth") == n
            assert not sink.wait_drained(1.0)  # nothing can drain while the broker is away
            broker.start()
            assert sink.wait_drained(20), sink.status()
            assert sub.wait_for(lambda s: len({e["event_id"] for e in s.json("/defect")}) >= len(sent), 20)
        finally:
            sink.stop(5)
            sub.close()
    assert_no_loss_in_order(sub.json("/defect"), sent)
    assert sample(m, "boxinspect_events_published_total") >= 3 + n
    assert sample(m, "boxinspect_outbox_depth") == 0


def test_unacknowledged_in_flight_events_are_resent_after_a_broker_crash(tmp_path: Path) -> None:
    """Events sent but never PUBACKed (broker hung, then killed) are sent again from the outbox."""
    m = Metrics()
    # autosave every second: the subscriber's persistent session survives the SIGKILL of the broker.
    with Broker(persistence=True, extra_config="autosave_interval 1") as broker:
        sub = Subscriber(broker.host, broker.port, f"{BASE}/defect", client_id="t-sub-crash", persistent=True)
        sink = MqttSink(cfg_for(broker, tmp_path), BASE, m, client_id="t-sink-crash", max_inflight=5)
        sink.start()
        try:
            assert sink.wait_connected(10)
            time.sleep(2.5)  # let Mosquitto autosave the subscriber's session
            broker.pause()  # PUBACKs stop; the sink's window fills up
            events = [make_event(i) for i in range(12)]
            for ev in events:
                sink.publish_defect(ev)
            deadline = time.monotonic() + 10
            while sink.inflight < 5 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sink.inflight == 5  # bounded: the window, not the whole outbox
            assert sink.outbox_depth == 12
            broker.kill()
            deadline = time.monotonic() + 10
            while sink.connected and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not sink.connected and sink.outbox_depth == 12
            broker.start()
            assert sink.wait_drained(20), sink.status()
            assert sub.wait_for(lambda s: len({e["event_id"] for e in s.json("/defect")}) >= 12, 20)
        finally:
            sink.stop(5)
            sub.close()
    assert_no_loss_in_order(sub.json("/defect"), [e["event_id"] for e in events])
    assert sample(m, "boxinspect_events_failed_total") >= 5  # the in-flight attempts that got no PUBACK


def test_stop_with_a_hung_broker_keeps_unacknowledged_events(tmp_path: Path) -> None:
    """stop() gives up after its timeout when PUBACKs never come; the events stay on disk."""
    with Broker() as broker:
        sink = MqttSink(cfg_for(broker, tmp_path), BASE, client_id="t-sink-hung")
        sink.start()
        try:
            assert sink.wait_connected(10)
            broker.pause()
            events = [make_event(i) for i in range(4)]
            for ev in events:
                sink.publish_defect(ev)
        finally:
            sink.stop(2)
            broker.resume()
        assert sink.outbox.closed
    with Outbox(tmp_path / "outbox.sqlite3") as ob:
        assert [r.event_id for r in ob.pending()] == [e["event_id"] for e in events]


SINK_SCRIPT = textwrap.dedent(
    """
    import json, sys, time, uuid
    from edge.config import MqttConfig
    from edge.deliver.mqtt_sink import MqttSink
    port, outbox, n, base = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    cfg = MqttConfig(host="127.0.0.1", port=port, outbox_path=outbox, reconnect_min_s=0.2, reconnect_max_s=1.0,
                     keepalive_s=5)
    sink = MqttSink(cfg, base, client_id="t-sink-child")
    sink.start()
    if n == 0:
        sink.wait_connected(10)
        print("CONNECTED", sink.connected, flush=True)
    for i in range(n):
        ev = json.loads(sys.stdin.readline())
        print("STORED", sink.publish_defect(ev), ev["event_id"], flush=True)
    print("READY", flush=True)
    time.sleep(600)
    """
)


def _run_child(port: int, outbox: Path, events: list[dict]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SINK_SCRIPT, str(port), str(outbox), str(len(events)), BASE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(REPO),
    )
    assert proc.stdin is not None
    for ev in events:
        proc.stdin.write(json.dumps(ev) + "\n")
    proc.stdin.flush()
    return proc


def _kill(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the child (no cleanup of any kind in it) and close our ends of its pipes."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None:
            f.close()
    assert proc.returncode == -signal.SIGKILL


def _read_until_ready(proc: subprocess.Popen[str], timeout: float = 60) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
        if line.startswith("READY"):
            return lines
    proc.kill()
    err = proc.communicate(timeout=10)[1]
    raise AssertionError(f"child sink did not get ready: {lines}\n{err}")


def test_sigkilled_sink_events_are_delivered_by_the_next_sink(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox.sqlite3"
    broker = Broker()  # created (port reserved) but not started: the child publishes into an outage
    try:
        events = [make_event(i) for i in range(8)]
        proc = _run_child(broker.port, outbox, events)
        lines = _read_until_ready(proc)
        assert len([ln for ln in lines if ln.startswith("STORED")]) == 8
        _kill(proc)

        broker.start()
        with Subscriber(broker.host, broker.port, f"{BASE}/defect") as sub:
            sink = MqttSink(cfg_for(broker, tmp_path), BASE, client_id="t-sink-next")
            assert sink.outbox_depth == 8
            sink.start()
            try:
                assert sink.wait_drained(20), sink.status()
                assert sub.wait_for(lambda s: len(s.on("/defect")) >= 8)
            finally:
                sink.stop(5)
        assert_no_loss_in_order(sub.json("/defect"), [e["event_id"] for e in events])
    finally:
        broker.close()


def test_last_will_offline_when_the_sink_process_dies(broker: Broker, tmp_path: Path) -> None:
    with Subscriber(broker.host, broker.port, f"{BASE}/status") as sub:
        proc = _run_child(broker.port, tmp_path / "outbox.sqlite3", [])
        lines = _read_until_ready(proc)
        assert "CONNECTED True" in lines
        assert sub.wait_for(lambda s: [p for _, p, _ in s.on("/status")] == [b"online"])
        _kill(proc)
        assert sub.wait_for(lambda s: [p for _, p, _ in s.on("/status")] == [b"online", b"offline"], 15)
    with Subscriber(broker.host, broker.port, f"{BASE}/status") as late:  # the will is retained
        assert late.wait_for(lambda s: s.on("/status"))
        assert late.on("/status")[0][1:] == (b"offline", True)


def test_password_auth(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Broker(users={"edge": "s3cret"}) as broker:
        with Subscriber(broker.host, broker.port, f"{BASE}/defect", username="edge", password="s3cret") as sub:
            # Wrong password: a clear logged reason, and the events stay in the outbox.
            bad = cfg_for(broker, tmp_path, username="edge", password=SecretStr("wrong"))
            with caplog.at_level(logging.WARNING, logger="edge.deliver.mqtt_sink"):
                sink = MqttSink(bad, BASE, client_id="t-sink-bad")
                sink.start()
                ids = []
                for i in range(2):
                    ev = make_event(i)
                    sink.publish_defect(ev)
                    ids.append(ev["event_id"])
                deadline = time.monotonic() + 10
                while "refused the connection" not in caplog.text and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert not sink.connected
                assert sink.outbox_depth == 2
                sink.stop(2)
            refused = [r for r in caplog.records if "refused the connection" in r.getMessage()]
            assert refused and refused[0].levelno == logging.ERROR
            assert "Not authorized" in refused[0].getMessage() or "Bad user name" in refused[0].getMessage()
            assert "wrong" not in caplog.text  # the password is never logged

            good = cfg_for(broker, tmp_path, username="edge", password=SecretStr("s3cret"))
            sink = MqttSink(good, BASE, client_id="t-sink-good")
            assert sink.outbox_depth == 2
            sink.start()
            try:
                ev = make_event(2)
                sink.publish_defect(ev)
                ids.append(ev["event_id"])
                assert sink.wait_drained(10), sink.status()
                assert sub.wait_for(lambda s: len(s.on("/defect")) >= 3)
            finally:
                sink.stop(5)
        assert_no_loss_in_order(sub.json("/defect"), ids)


def test_mqtt5(broker: Broker, tmp_path: Path) -> None:
    with Subscriber(broker.host, broker.port, f"{BASE}/defect") as sub:
        sink = MqttSink(cfg_for(broker, tmp_path, protocol="5"), BASE, client_id="t-sink-v5")
        sink.start()
        try:
            events = [make_event(i) for i in range(3)]
            for ev in events:
                sink.publish_defect(ev)
            assert sink.wait_drained(10), sink.status()
            assert sub.wait_for(lambda s: len(s.on("/defect")) >= 3)
        finally:
            sink.stop(5)
    assert_no_loss_in_order(sub.json("/defect"), [e["event_id"] for e in events])


def test_mqtt5_rejected_publish_stays_in_the_outbox(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """MQTT 5 reports an ACL denial in the PUBACK: the event is not deleted, the failure is counted."""
    m = Metrics()
    acl = tmp_path / "acl"
    acl.write_text(f"topic readwrite {BASE}/status\n")  # anonymous may publish status, not defects
    with Broker(extra_config=f"acl_file {acl}") as broker:
        cfg = cfg_for(broker, tmp_path, protocol="5", reconnect_max_s=1.0)
        with caplog.at_level(logging.WARNING, logger="edge.deliver.mqtt_sink"):
            sink = MqttSink(cfg, BASE, m, client_id="t-sink-acl")
            sink.start()
            try:
                assert sink.wait_connected(10)
                sink.publish_defect(make_event(0))
                deadline = time.monotonic() + 10
                while sample(m, "boxinspect_events_failed_total") < 2 and time.monotonic() < deadline:
                    time.sleep(0.05)  # rejected, retried after reconnect_max_s, rejected again
                assert sample(m, "boxinspect_events_failed_total") >= 2
                assert sink.outbox_depth == 1 and sample(m, "boxinspect_events_published_total") == 0
            finally:
                sink.stop(1)
    rejected = [r.getMessage() for r in caplog.records if "broker rejected" in r.getMessage()]
    assert len(rejected) == 1 and "Not authorized" in rejected[0]  # rate-limited: one line, not one per retry


def test_overflow_while_offline_is_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    m = Metrics()
    broker = Broker()  # not started
    try:
        cfg = cfg_for(broker, tmp_path, outbox_max_events=5, outbox_overflow="drop_oldest")
        sink = MqttSink(cfg, BASE, m, client_id="t-sink-overflow")
        sink.start()
        events = [make_event(i) for i in range(8)]
        with caplog.at_level(logging.WARNING, logger="edge.deliver.outbox"):
            for ev in events:
                sink.publish_defect(ev)
        assert sink.outbox_depth == 5
        assert sample(m, "boxinspect_events_dropped_total") == 3
        assert all(e["event_id"] in caplog.text for e in events[:3])
        broker.start()
        with Subscriber(broker.host, broker.port, f"{BASE}/defect") as sub:
            try:
                assert sink.wait_drained(20), sink.status()
                assert sub.wait_for(lambda s: len(s.on("/defect")) >= 5)
            finally:
                sink.stop(5)
        assert_no_loss_in_order(sub.json("/defect"), [e["event_id"] for e in events[3:]])
    finally:
        broker.close()


def test_start_without_broker_returns_and_keeps_events(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broker = Broker()  # never started: connection refused
    try:
        with caplog.at_level(logging.WARNING, logger="edge.deliver.mqtt_sink"):
            sink = MqttSink(cfg_for(broker, tmp_path), BASE, client_id="t-sink-absent")
            sink.start()  # returns at once
            seq = sink.publish_defect(make_event(0))
            assert seq == 1 and sink.outbox_depth == 1 and not sink.connected
            deadline = time.monotonic() + 10
            while "cannot connect" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
            sink.stop(1)
        assert "Connection refused" in caplog.text
        assert "stopped with 1 defect event(s) in the outbox" in caplog.text
        with Outbox(tmp_path / "outbox.sqlite3") as ob:
            assert ob.depth() == 1
    finally:
        broker.close()


def test_event_encoding(broker: Broker, tmp_path: Path) -> None:
    sink = MqttSink(cfg_for(broker, tmp_path), BASE, client_id="t-sink-enc")
    try:
        ev = make_event(0)
        ev["score"] = float("nan")
        with pytest.raises(ValueError, match="cannot be encoded as JSON"):
            sink.publish_defect(ev)
        ev["score"] = object()
        with pytest.raises(ValueError, match="object is not JSON serializable"):
            sink.publish_defect(ev)
        assert sink.outbox_depth == 0
        ev = make_event(1)
        del ev["event_id"]  # a missing id is filled in, never a reason to lose the event
        ev["evidence"] = {"frame": tmp_path / "f.jpg", "crop": None}  # Paths become strings
        ev["score"], ev["is_defect"] = np.float32(0.75), np.bool_(True)  # numpy scalars become numbers
        assert sink.publish_defect(ev) is not None
        row = sink.outbox.pending()[0]
        stored = json.loads(row.payload)
        assert uuid.UUID(stored["event_id"]).version == 4 and row.event_id == stored["event_id"]
        assert stored["evidence"]["frame"] == str(tmp_path / "f.jpg")
        assert stored["score"] == 0.75 and stored["is_defect"] is True
        assert "seq" not in stored and "published_at" not in stored  # stamped at send time
    finally:
        sink.stop(1)


def test_tls_config_errors_name_the_key(tmp_path: Path) -> None:
    cfg = MqttConfig(outbox_path=tmp_path / "o.sqlite3", tls=TlsConfig(enabled=True, ca_certs=tmp_path / "missing.pem"))
    with pytest.raises(MqttSinkError, match=r"mqtt\.tls\.ca_certs"):
        MqttSink(cfg, BASE)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 (openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    d = tmp_path_factory.mktemp("tls")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=boxinspect-test-ca",
        "-keyout", "ca.key", "-out", "ca.pem")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "ext.cnf", "-out", "server.pem")
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}


def test_tls(tmp_path: Path, tls_files: dict[str, Path]) -> None:
    extra = f"cafile {tls_files['ca']}\ncertfile {tls_files['cert']}\nkeyfile {tls_files['key']}"
    with Broker(extra_config=extra) as broker:
        # Our own subscriber would need TLS too; the PUBACKs prove delivery to the broker here.
        cfg = cfg_for(broker, tmp_path, tls=TlsConfig(enabled=True, ca_certs=tls_files["ca"]))
        sink = MqttSink(cfg, BASE, client_id="t-sink-tls")
        sink.start()
        try:
            assert sink.wait_connected(10), sink.status()
            for i in range(3):
                sink.publish_defect(make_event(i))
            assert sink.wait_drained(10), sink.status()
            assert sink.published == 3
        finally:
            sink.stop(5)


def test_decision_events_match_the_schema() -> None:
    """The contract with edge/judge/decision.py: what Decision.to_event produces validates, also with evidence."""
    from edge.judge.decision import Decision

    t = time.time()
    for mode, part in (("continuous", None), ("triggered", "P-42")):
        d = Decision(str(uuid.uuid4()), part, "damaged", True, 0.8, 0.9, 0.8, 3, 5, 7, 0.5, "m-1", t, t, mode)
        ev = d.to_event("line1", "cam1")
        assert not [e.message for e in VALIDATOR.iter_errors(ev)]
        ev["evidence"] = {"frame": "/var/lib/boxinspect/evidence/a.jpg", "crop": "/var/lib/boxinspect/evidence/b.jpg"}
        ev["seq"], ev["published_at"] = 12, iso_utc()
        assert not [e.message for e in VALIDATOR.iter_errors(ev)]
    bad = dict(ev, score=1.5, mode="batch", extra=1)
    assert len(list(VALIDATOR.iter_errors(bad))) == 3  # the schema can fail


def test_tls_untrusted_broker_is_refused_with_a_reason(
    tmp_path: Path, tls_files: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    extra = f"cafile {tls_files['ca']}\ncertfile {tls_files['cert']}\nkeyfile {tls_files['key']}"
    with Broker(extra_config=extra) as broker:
        # Trust the server certificate itself as a CA: the chain does not verify.
        cfg = cfg_for(broker, tmp_path, tls=TlsConfig(enabled=True, ca_certs=tls_files["cert"]))
        with caplog.at_level(logging.WARNING, logger="edge.deliver.mqtt_sink"):
            sink = MqttSink(cfg, BASE, client_id="t-sink-tls-bad")
            sink.start()
            sink.publish_defect(make_event(0))
            deadline = time.monotonic() + 10
            while "TLS handshake failed" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not sink.connected and sink.outbox_depth == 1
            sink.stop(1)
    assert "TLS handshake failed" in caplog.text and "certificate" in caplog.text
