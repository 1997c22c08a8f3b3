"""Issue 8 items 3 and 6 against a real Mosquitto: a full disk (a real, tiny tmpfs) and end-to-end delivery
with replay after broker SIGKILLs."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edge.api.app import create_app
from edge.api.state import ApiState
from edge.deliver.mqtt_sink import MqttSink
from edge.deliver.outbox import Outbox, OutboxFull
from edge.runtime.metrics import Metrics
from edge.state import ModelSlot
from tests.broker import Broker
from tests.helpers import Subscriber, edge_config, wait_for
from tests.helpers import metric as sample
from tests.test_mqtt_sink import BASE, VALIDATOR, make_event

TOKEN = "s3cret-replay-token"


@pytest.fixture()
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MB tmpfs (root only); unmounted afterwards."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(fs: Path) -> Path:
    """Write zeros until the filesystem is full (ENOSPC); returns the filler file."""
    filler = fs / "filler"
    chunk = b"\0" * 4096
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    with contextlib.suppress(OSError), open(fs / "filler2", "wb", buffering=0) as f:  # the last partial block
        while True:
            f.write(b"\0")
    return filler


def published(sink: MqttSink, n: int) -> list[dict[str, Any]]:
    """Once ``sink`` is connected: ``n`` defect events published and acknowledged by the broker (returned)."""
    assert sink.wait_connected(10)
    events = [make_event(i) for i in range(n)]
    for ev in events:
        sink.publish_defect(ev)
    assert sink.wait_drained(10)
    return events


def test_outbox_on_a_full_disk_says_disk_full_at_start(small_fs: Path) -> None:
    fill(small_fs)
    with pytest.raises(OutboxFull) as exc:
        Outbox(small_fs / "outbox.sqlite3")
    msg = str(exc.value)
    assert "disk full" in msg and "corrupt" not in msg.split("not corrupt")[0], msg


def test_disk_full_with_the_broker_up_publishes_directly_then_holds_counts_losses_and_reports_a_gap(
    small_fs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    m = Metrics()
    with Broker() as broker, Subscriber(broker.host, broker.port, [f"{BASE}/defect", f"{BASE}/lost"]) as sub:
        cfg = edge_config(tmp_path, broker=broker,
                          mqtt={"outbox_path": str(small_fs / "outbox.sqlite3"), "outbox_memory_max_events": 3})
        sink = MqttSink(cfg.mqtt, BASE, m)
        sink.start()
        try:
            assert sink.wait_connected(10)
            first = make_event(0)
            assert sink.publish_defect(first) == 1
            assert sub.wait_for(lambda s: first["event_id"] in s.ids())
            filler = fill(small_fs)

            # 1. Disk full, broker connected: published directly, said so in the log and the metrics.
            direct = [make_event(i) for i in range(1, 4)]
            for ev in direct:
                assert sink.publish_defect(ev) is None  # not stored
            assert sub.wait_for(lambda s: {e["event_id"] for e in direct} <= set(s.ids()), 15)
            got = {e["event_id"]: e for e in sub.json("/defect")}
            for ev in direct:
                VALIDATOR.validate(got[ev["event_id"]])
                assert got[ev["event_id"]]["seq"] is None
            assert sample(m.registry, "boxinspect_events_unstored_total", route="direct") == 3
            assert "disk full" in caplog.text and "publishing it directly" in caplog.text
            wait_for(lambda: sink.status()["held_in_memory"] == 0, 10, "held events gone")
            assert sink.not_ready_reason() is None
            assert "overflow" not in caplog.text

            # 2. Disk full, broker away: held in memory (bounded 3), not ready, the third is a real loss.
            broker.stop()
            wait_for(lambda: not sink.connected, 10, "disconnect")
            held = [make_event(i) for i in range(4, 8)]
            for ev in held:
                assert sink.publish_defect(ev) is None
            st = sink.status()
            assert st["held_in_memory"] == 3 and st["outbox_lost"] == 1 and st["outbox_dropped"] == 1, st
            reason = sink.not_ready_reason()
            assert reason is not None and "disk full" in reason and "memory" in reason, reason
            api = TestClient(create_app(ApiState(config=cfg, metrics=m, models=ModelSlot(None), sink=sink)))
            ready = api.get("/readyz")
            assert ready.status_code == 503
            assert any("disk full" in r and "held in memory only" in r for r in ready.json()["reasons"]), ready.json()
            assert api.get("/status").json()["mqtt"]["outbox_dropped"] == 1
            assert sample(m.registry, "boxinspect_events_lost_total", reason="disk_full") == 1
            assert sample(m.registry, "boxinspect_events_dropped_total") == 0  # not "overflow"
            assert f"DEFECT EVENT LOST: {held[0]['event_id']}" in caplog.text

            # 3. Storage and broker return: the held ones go through the outbox, the loss is a seq gap + `lost`.
            filler.unlink()
            (small_fs / "filler2").unlink(missing_ok=True)
            wait_for(lambda: sink.status()["held_in_memory"] == 0, 10, "held events gone")
            broker.start()
            assert sink.wait_connected(15) and sink.wait_drained(15)
            want = {e["event_id"] for e in [first, *direct, *held[1:]]}
            # The test subscriber has no persistent session on this broker (restarted without persistence): what
            # was sent before it re-subscribed it gets, like any consumer, by asking for a replay.
            for _ in range(15):
                if sub.wait_for(lambda s: want <= set(s.ids()) and s.on("/lost"), 1):
                    break
                if sub.client.is_connected():
                    sink.replay(1)
            assert want <= set(sub.ids()) and sub.on("/lost")
            notices = list({n["event_id"]: n for n in sub.json("/lost")}.values())  # a replay may repeat it
            assert len(notices) == 1
            lost = notices[0]
            assert lost["kind"] == "lost" and lost["count"] == 1 and lost["reason"] == "disk_full"
            assert lost["event_ids"] == [held[0]["event_id"]]
            seqs = {e["event_id"]: e["seq"] for e in sub.json("/defect") if e["seq"] is not None}
            # seq 1 = first; seq 2 = the lost event (never sent: a gap); seq 3 = the notice; 4, 5, 6 = held ones
            assert (lost["first_seq"], lost["last_seq"], lost["seq"]) == (2, 2, 3)
            assert [seqs[e["event_id"]] for e in held[1:]] == [4, 5, 6]
            assert 2 not in seqs.values()
            assert sink.status()["outbox_dropped"] == 1 and sink.not_ready_reason() is None
        finally:
            sink.stop(5)
    reopened = Outbox(small_fs / "outbox.sqlite3")
    try:
        assert reopened.lost == 1 and reopened.dropped == 0  # persisted under its own reason
    finally:
        reopened.close()


def test_replay_over_http_republishes_retained_events_with_their_ids(tmp_path: Path, mosquitto: Any) -> None:
    cfg = edge_config(tmp_path, broker=mosquitto, api={"token": TOKEN}, mqtt={"outbox_retention_s": 600})
    sink = MqttSink(cfg.mqtt, cfg.topic_base, Metrics())
    sink.start()
    try:
        events = published(sink, 5)
        assert sink.outbox.depth() == 0  # acknowledged, but kept for the retention window
        client = TestClient(create_app(ApiState(config=cfg, metrics=Metrics(), models=ModelSlot(None), sink=sink)))
        assert client.get("/events", params={"since_seq": 0}).status_code == 401
        with Subscriber(mosquitto.host, mosquitto.port, f"{cfg.topic_base}/defect") as sub:
            r = client.get("/events", params={"since_seq": 2}, headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 200, r.text
            body = r.json()
            assert [e["event_id"] for e in body] == [e["event_id"] for e in events[2:]]
            assert [e["seq"] for e in body] == [3, 4, 5]
            assert sub.wait_for(lambda s: len(s.ids()) >= 3)
            assert sub.ids()[:3] == [e["event_id"] for e in events[2:]]
            assert [e["seq"] for e in sub.messages[:3]] == [3, 4, 5]
    finally:
        sink.stop(5)


SHIPPED_AUTOSAVE = "autosave_on_changes true\nautosave_interval 1"


@pytest.mark.parametrize("autosave", ["", SHIPPED_AUTOSAVE], ids=["default-autosave", "shipped-autosave"])
def test_broker_sigkill_chaos_persistent_subscriber_with_replay_loses_nothing(tmp_path: Path, autosave: str) -> None:
    """12 broker SIGKILLs while events flow; a persistent QoS 1 subscriber that asks for its seq gaps ends
    with every event. The broker persists (Mosquitto's default autosave, or the shipped save-on-every-change),
    so a SIGKILL can drop messages it had already PUBACKed but not yet delivered: that is what replay is for."""
    rng = random.Random(8)
    sent: list[str] = []
    with Broker(persistence=True, extra_config=autosave) as broker:
        cfg = edge_config(tmp_path, broker=broker, mqtt={"outbox_retention_s": 3600})
        sink = MqttSink(cfg.mqtt, BASE, Metrics())
        sink.enable_replay(TOKEN)
        sink.start()
        sub = Subscriber(broker.host, broker.port, f"{BASE}/defect", client_id="chaos-consumer", persistent=True)
        try:
            assert sink.wait_connected(10)
            for _ in range(12):
                for i in range(5):
                    ev = make_event(i)
                    sent.append(ev["event_id"])
                    sink.publish_defect(ev)
                time.sleep(rng.uniform(0.0, 0.3))
                broker.kill()
                broker.start()
            assert sink.wait_connected(15) and sink.wait_drained(30)
            assert sub.wait_for(lambda s: s.client.is_connected(), 15)
            sub.wait_for(lambda s: set(sent) <= set(s.ids()), 3)  # what the broker still delivers by itself
            before = set(sub.ids())
            # The consumer: de-duplicate by event_id; ask for everything after the last contiguous seq.
            for _ in range(5):
                seqs = {e["seq"] for e in sub.json("/defect")}
                contiguous = 0
                while contiguous + 1 in seqs:
                    contiguous += 1
                if contiguous >= len(sent):
                    break
                sub.client.publish(f"{BASE}/replay", json.dumps({"since_seq": contiguous, "token": TOKEN}), qos=1)
                sub.wait_for(lambda s, c=contiguous: all(q in {e["seq"] for e in s.json("/defect")}
                                                          for q in range(c + 1, len(sent) + 1)), 10)
            got = set(sub.ids())
            lost = set(sent) - got
            print(f"chaos ({'shipped' if autosave else 'default'} autosave): {len(sent)} sent, {len(sent) - len(set(sent) - before)} before replay, "
                  f"{len(lost)} lost after replay, {len(sub.ids()) - len(got)} duplicates")
            assert not lost, f"{len(lost)} of {len(sent)} lost even with replay"
        finally:
            sub.close()
            sink.stop(5)


def test_shipped_mosquitto_config_persists_sessions_on_changes() -> None:
    conf = (Path(__file__).resolve().parents[1] / "deploy" / "mosquitto" / "mosquitto.conf").read_text().split("\n")
    keys = dict(line.split(None, 1) for line in conf if line.strip() and not line.startswith("#"))
    assert keys.get("persistence") == "true"
    assert keys.get("autosave_on_changes") == "true"
    assert int(keys["autosave_interval"]) <= 10
    assert os.path.isabs(keys["persistence_location"])


def test_mqtt_replay_needs_the_token_and_refuses_junk(
    tmp_path: Path, mosquitto: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    base = f"boxinspect/replay-{os.getpid()}/cam1"
    sink = MqttSink(edge_config(tmp_path, broker=mosquitto, mqtt={"outbox_retention_s": 600}).mqtt, base, Metrics())
    sink.enable_replay(TOKEN)
    sink.start()
    try:
        events = published(sink, 3)
        with Subscriber(mosquitto.host, mosquitto.port, f"{base}/defect") as sub:
            wait_for(lambda: "listening for replay requests" in caplog.text, 10, "the replay subscription")
            for bad in [json.dumps({"since_seq": 0, "token": "wrong"}), json.dumps({"since_seq": 0}),
                        "[" * 300, "null", json.dumps({"since_seq": "0", "token": TOKEN})]:
                sub.client.publish(f"{base}/replay", bad, qos=1)
            wait_for(lambda: caplog.text.count("replay request on") >= 3, 10, "refusals logged")
            assert "missing or wrong token" in caplog.text and "too large" in caplog.text
            assert not sub.wait_for(lambda s: len(s.ids()) > 0, 1)  # nothing replayed
            sub.client.publish(f"{base}/replay", json.dumps({"since_seq": 1, "token": TOKEN}), qos=1)
            assert sub.wait_for(lambda s: len(s.ids()) >= 2, 10)
            assert sub.ids()[:2] == [e["event_id"] for e in events[1:]]
    finally:
        sink.stop(5)
