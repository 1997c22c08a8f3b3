"""The daemon as its own process (``python -m boxinspect.cli run``): a real int8 model, a generated
conveyor video, its own Mosquitto that these tests stop, restart and kill around it.

Every defect decision the daemon makes is logged with its event id; the tests count those against what a
subscriber receives, so a lost event fails the test and a resend is recognised by its event_id.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from tests.broker import Broker
from tests.helpers import (
    AUTH,
    TEST_TOKEN,
    DaemonProc,
    Publisher,
    Subscriber,
    edit_sidecar,
    failing_golden,
    first_occurrences,
    free_port,
    package_copies,
    topic_base,
    wait_for,
)

SLOW = pytest.mark.slow  # every test that runs the daemon as a process

def positive_class(model: Path) -> str:
    return json.loads(Path(str(model) + ".json").read_text())["positive_class"]


def base_cfg(tmp_path: Path, model: Path, video: Path, gt: dict, broker: Broker | None, **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "line": "t",
        "camera": f"c{uuid.uuid4().hex[:6]}",
        "source": {"uri": str(video), "pace": "realtime", "loop": True},
        "roi": {k: gt["roi"][k] for k in ("x", "y", "width", "height")},
        # threshold 0: every box is a defect event. These tests are about delivery, not accuracy (test_e2e),
        # so they must not depend on how well the tiny fixture model separates the classes.
        "model": {"path": str(model), "threshold": 0.0},
        "mqtt": {
            "enabled": broker is not None,
            "host": "127.0.0.1",
            "port": broker.port if broker is not None else 1,
            "outbox_path": str(tmp_path / "outbox.sqlite3"),
            "reconnect_min_s": 1,
            "reconnect_max_s": 2,
            "stats_interval_s": 5,
        },
        "api": {"port": free_port()},
        "evidence": {"dir": str(tmp_path / "evidence")},
        # The pusher deadline (2 s by default) is tested in test_plant_daemon.py; here a busy CI machine must not
        # turn a slow decision or a slow "no box" into the fail-safe's timeout decision.
        "reject": {"deadline_ms": 120_000},
        "shutdown_timeout_s": 15,
    }
    for key, value in over.items():
        if isinstance(value, dict):
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    return cfg


@pytest.fixture()
def broker():
    """A broker of this test alone (the tests stop and restart it), persistent across restarts."""
    d = Path(tempfile.mkdtemp(prefix="boxinspect-test-broker-"))
    b = Broker(workdir=d, extra_config=f"persistence true\npersistence_location {d}/")
    b.start()
    yield b
    b.stop()
    shutil.rmtree(d, ignore_errors=True)


def defect_ids(d: DaemonProc, positive: str) -> list[str]:
    return [eid for label, _, eid in d.decisions() if label == positive]


# ------------------------------------------------------------------------------------------------ outages


@SLOW
def test_broker_outage_loses_no_defect_event(tmp_path, int8_model, synth_video, broker):
    video, gt = synth_video
    positive = positive_class(int8_model)
    cfg = base_cfg(tmp_path, int8_model, video, gt, broker)
    topic = f"{topic_base(cfg)}/defect"
    sub = Subscriber(broker.host, broker.port, topic, persistent=True)
    d = DaemonProc(tmp_path, cfg).start()
    try:
        d.wait_api()
        wait_for(lambda: sub.messages, 120, "a first defect event over MQTT", d=d)
        broker.stop()
        outage_start = time.monotonic()
        # the daemon notices and says so
        wait_for(lambda: d.get("/readyz").status_code == 503 and "mqtt" in d.get("/readyz").text, 20, "readyz: mqtt down", d=d)
        time.sleep(max(0.0, 30 - (time.monotonic() - outage_start)))
        depth = d.status()["mqtt"]["outbox_depth"]
        assert depth > 0, f"no defect decided during the 30 s outage; the test proves nothing\n{d.log()}"
        broker.start()
        wait_for(lambda: d.status()["mqtt"]["outbox_depth"] == 0, 60, "the outbox to drain after the broker is back", d=d)
        d.send(signal.SIGTERM)
        assert d.wait(40) == 0, d.log()
        expected = defect_ids(d, positive)
        wait_for(lambda: set(expected) <= set(sub.ids()), 20, "every defect event at the subscriber", d=d)
    finally:
        d.stop()
        sub.close()
    got = first_occurrences(sub.messages)
    assert [m["event_id"] for m in got] == expected, "events missing, unexpected or out of order"
    seqs = [m["seq"] for m in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert len(expected) >= depth + 1
    dupes = len(sub.messages) - len(got)
    print(f"{len(expected)} defect events, {depth} waited out a 30 s outage, {dupes} duplicate(s) (same event_id)")


@SLOW
def test_sigkill_with_events_in_the_outbox_delivers_them_after_restart(tmp_path, int8_model, synth_video, broker):
    video, gt = synth_video
    positive = positive_class(int8_model)
    cfg = base_cfg(tmp_path, int8_model, video, gt, broker)
    outbox = Path(cfg["mqtt"]["outbox_path"])
    topic = f"{topic_base(cfg)}/defect"
    first = DaemonProc(tmp_path, cfg, "first").start()
    try:
        first.wait_api()
        wait_for(lambda: first.status()["mqtt"].get("connected"), 30, "the first daemon to connect", d=first)
        broker.stop()
        wait_for(lambda: first.status()["mqtt"]["outbox_depth"] >= 2, 120, "two defect events waiting in the outbox", d=first)
        first.proc.kill()  # SIGKILL: no flush, no goodbye
        first.wait(10)
    finally:
        first.stop()
    with sqlite3.connect(f"file:{outbox}?mode=ro", uri=True) as db:
        waiting = [r[0] for r in db.execute("SELECT event_id FROM outbox ORDER BY seq")]
    assert len(waiting) >= 2
    # the outbox holds decided defects (the newest one may have been stored a moment before its log line)
    assert set(waiting[:-1]) <= set(defect_ids(first, positive))

    broker.start()
    sub = Subscriber(broker.host, broker.port, topic)
    second = DaemonProc(tmp_path, dict(cfg, api={"port": free_port()}), "second").start()
    try:
        second.wait_api()
        wait_for(lambda: set(waiting) <= set(sub.ids()), 60, "the events the killed daemon left behind", d=second)
        second.send(signal.SIGTERM)
        assert second.wait(40) == 0, second.log()
    finally:
        second.stop()
        sub.close()
    got = [m["event_id"] for m in first_occurrences(sub.messages) if m["event_id"] in waiting]
    assert got == waiting, "the left-over events arrive in their original order"


# ------------------------------------------------------------------------------------------------ lifecycle


@SLOW
def test_sigterm_exits_zero_and_leaves_offline_retained(tmp_path, int8_model, synth_video, broker):
    video, gt = synth_video
    cfg = base_cfg(tmp_path, int8_model, video, gt, broker, shutdown_timeout_s=10)
    status_topic = f"{topic_base(cfg)}/status"
    stats = Subscriber(broker.host, broker.port, f"{topic_base(cfg)}/stats")
    d = DaemonProc(tmp_path, cfg).start()
    try:
        d.wait_api()
        wait_for(lambda: d.get("/readyz").status_code == 200, 60, "/readyz 200", d=d)
        # while it runs: periodic stats on MQTT, the latest frame with the ROI drawn
        wait_for(lambda: stats.messages, 3 * cfg["mqtt"]["stats_interval_s"], "a stats message", d=d)
        doc = stats.messages[-1]
        assert doc["camera_state"] == "ok" and doc["mqtt_connected"] is True and doc["model_id"]
        assert doc["frames"] > 0 and "fps" in doc and "outbox_depth" in doc
        snap = d.get("/snapshot.jpg")
        assert snap.status_code == 200 and snap.headers["content-type"] == "image/jpeg"
        assert snap.content[:2] == b"\xff\xd8"
        rc, took = d.terminate(cfg["shutdown_timeout_s"] + 10)
    finally:
        d.stop()
        stats.close()
    assert rc == 0, d.log()
    assert took < cfg["shutdown_timeout_s"] + 5, f"shutdown took {took:.1f}s"
    assert "stopping (signal)" in d.log()
    sub = Subscriber(broker.host, broker.port, status_topic)
    try:
        wait_for(lambda: sub.raw, 10, "the retained status message")
    finally:
        sub.close()
    topic, payload, retained = sub.raw[0]
    assert payload == b"offline" and retained


@SLOW
def test_sigterm_with_the_broker_down_is_bounded_and_keeps_the_events(tmp_path, int8_model, synth_video, broker):
    video, gt = synth_video
    cfg = base_cfg(tmp_path, int8_model, video, gt, broker, shutdown_timeout_s=5)
    d = DaemonProc(tmp_path, cfg).start()
    try:
        d.wait_api()
        wait_for(lambda: d.status()["mqtt"].get("connected"), 30, "the daemon to connect", d=d)
        broker.stop()
        wait_for(lambda: d.status()["mqtt"]["outbox_depth"] >= 1, 120, "a defect event waiting in the outbox", d=d)
        rc, took = d.terminate(cfg["shutdown_timeout_s"] + 10)
    finally:
        d.stop()
    assert rc == 0, d.log()
    assert took < cfg["shutdown_timeout_s"] + 5, f"shutdown took {took:.1f}s"
    with sqlite3.connect(f"file:{cfg['mqtt']['outbox_path']}?mode=ro", uri=True) as db:
        left = [r[0] for r in db.execute("SELECT event_id FROM outbox ORDER BY seq")]
    assert left and set(left) <= set(defect_ids(d, positive_class(int8_model)))
    assert "sent on the next start" in d.log()


@SLOW
def test_sighup_keeps_the_old_model_if_the_new_one_is_corrupt(tmp_path, model_copy, float_model, synth_video):
    video, gt = synth_video
    cfg = base_cfg(tmp_path, model_copy, video, gt, None, api={"port": 0})
    d = DaemonProc(tmp_path, cfg).start()
    try:
        d.wait_api()  # port 0: URL taken from the log
        old_id = wait_for(lambda: d.status()["model"].get("model_id"), 30, "model id", d=d)
        model_copy.write_bytes(b"not a flatbuffer" * 64)  # a corrupt file in place of the model
        d.send(signal.SIGHUP)
        wait_for(lambda: d.metric("boxinspect_model_reloads_total", outcome="load_failed") == 1, 60, "failed reload", d=d)
        assert d.status()["model"]["model_id"] == old_id
        # still inspecting with the old model
        n = d.metric("boxinspect_frames_captured_total")
        wait_for(lambda: d.metric("boxinspect_frames_captured_total") > n + 10, 30, "frames after the failed reload", d=d)
        assert d.alive()
        assert "reload failed, keeping " + old_id in d.log()
        # a good (different) model in place -> swapped
        package_copies(float_model, model_copy.parent, [model_copy.stem])
        d.send(signal.SIGHUP)
        wait_for(lambda: d.metric("boxinspect_model_reloads_total", outcome="ok") == 1, 60, "successful reload", d=d)
        new_id = d.status()["model"]["model_id"]
        assert new_id != old_id and new_id.split("@")[1] == json.loads(Path(str(float_model) + ".json").read_text())["package_sha256"][:12]
        assert f'model_id="{new_id}"' in d.get("/metrics").text
        d.send(signal.SIGTERM)
        assert d.wait(40) == 0, d.log()
    finally:
        d.stop()


@SLOW
def test_corrupt_model_stops_startup_with_one_line(tmp_path, model_copy):
    model_copy.write_bytes(b"\x00garbage" * 50)
    cfg = {"model": {"path": str(model_copy)}, "mqtt": {"enabled": False, "outbox_path": str(tmp_path / "o.sqlite3")}}
    for verify, words in ((True, "sha256 mismatch"), (False, "corrupt or unsupported")):
        cfg["model"]["verify_hash"] = verify
        p = tmp_path / "c.yaml"
        p.write_text(yaml.safe_dump(cfg))
        res = subprocess.run(
            [sys.executable, "-m", "boxinspect.cli", "run", "--config", str(p)],
            capture_output=True, text=True, timeout=120, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        )
        assert res.returncode == 3, res.stderr
        lines = [ln for ln in res.stderr.splitlines() if ln.startswith("model:")]
        assert len(lines) == 1 and words in lines[0], res.stderr
        assert "Traceback" not in res.stderr


@SLOW
def test_failed_self_test_keeps_running_and_readyz_says_why(tmp_path, model_copy, synth_video):
    video, gt = synth_video
    edit_sidecar(model_copy, failing_golden)  # a re-made package (resealed), not a tampered one
    cfg = base_cfg(tmp_path, model_copy, video, gt, None)
    d = DaemonProc(tmp_path, cfg).start()
    try:
        d.wait_api()
        r = d.get("/readyz")
        assert r.status_code == 503
        assert any(x.startswith("model: self-test failed: golden[0]") for x in r.json()["reasons"]), r.json()
        assert d.metric("boxinspect_model_ready") == 0
        assert "model self-test failed" in d.log()
        d.send(signal.SIGTERM)
        assert d.wait(40) == 0, d.log()
    finally:
        d.stop()


@SLOW
def test_missing_model_and_bad_config_name_the_problem(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"model": {"path": str(tmp_path / "nope.tflite")}, "mqtt": {"enabled": False}}))
    res = subprocess.run([sys.executable, "-m", "boxinspect.cli", "run", "--config", str(p)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 3 and "model: model file not found" in res.stderr, res.stderr
    p.write_text(yaml.safe_dump({"mqtt": {"port": 99999}, "sorce": {"uri": "0"}}))
    res = subprocess.run([sys.executable, "-m", "boxinspect.cli", "run", "--config", str(p)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "mqtt.port" in res.stderr and "sorce" in res.stderr and "Traceback" not in res.stderr


def test_free_port_never_hands_out_a_port_an_outgoing_connection_could_take():
    """CI once failed with "api: cannot listen ... Address already in use": a bind-to-0 port, taken by the daemon's own
    MQTT client before its API bound it. Ports for listeners come from outside the kernel's ephemeral range."""
    low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = {free_port() for _ in range(200)}
    assert not any(low <= p <= high for p in ports), sorted(p for p in ports if low <= p <= high)[:5]
    assert len(ports) > 150  # drawn at random, so parallel workers rarely pick the same one


@SLOW
def test_api_port_in_use_stops_startup_with_a_clear_message(tmp_path, int8_model, synth_video):
    import socket

    video, gt = synth_video
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        cfg = base_cfg(tmp_path, int8_model, video, gt, None, api={"port": port})
        d = DaemonProc(tmp_path, cfg)
        rc = d.run()
    assert rc == 1, d.log()
    assert f"start-up failed: api: cannot listen on 127.0.0.1:{port}: Address already in use" in d.log()


@SLOW
def test_end_of_file_drains_and_exits_zero(tmp_path, int8_model, synth_video, broker):
    video, gt = synth_video
    positive = positive_class(int8_model)
    cfg = base_cfg(tmp_path, int8_model, video, gt, broker, source={"pace": "fast", "loop": False, "exit_on_end": True})
    sub = Subscriber(broker.host, broker.port, f"{topic_base(cfg)}/defect")
    d = DaemonProc(tmp_path, cfg).start()
    try:
        rc = d.wait(180)
        expected = defect_ids(d, positive)
        wait_for(lambda: set(expected) <= set(sub.ids()), 10, "every defect event at the subscriber", d=d)
    finally:
        d.stop()
        sub.close()
    assert rc == 0, d.log()
    assert "stopping (end of the source)" in d.log()
    assert expected, d.log()
    got = first_occurrences(sub.messages)
    assert [m["event_id"] for m in got] == expected
    schema = json.loads((Path(__file__).resolve().parents[1] / "edge" / "event.schema.json").read_text())
    for ev in got:
        jsonschema.validate(ev, schema)
        assert ev["is_defect"] and ev["label"] == positive
        assert ev["evidence"] and Path(ev["evidence"]["frame"]).is_file() and Path(ev["evidence"]["crop"]).is_file()
    assert "outbox empty" in d.log()


@SLOW
def test_max_frames_stops_the_daemon(tmp_path, int8_model, synth_video):
    video, gt = synth_video
    cfg = base_cfg(tmp_path, int8_model, video, gt, None, source={"pace": "fast"})
    d = DaemonProc(tmp_path, cfg)
    assert d.run("--max-frames", "40") == 0, d.log()
    assert "--max-frames 40 reached" in d.log()
    assert "stopped: frames=40 " in d.log()


@SLOW
def test_triggered_mode_over_mqtt_and_http(tmp_path, int8_model, synth_video, broker):
    video, gt = synth_video
    cfg = base_cfg(tmp_path, int8_model, video, gt, broker, decision={"mode": "triggered", "trigger_frames": 2},
                   api={"token": TEST_TOKEN})
    pub = Publisher(broker.host, broker.port, f"{topic_base(cfg)}/trigger")
    # a stale retained trigger is ignored (it would announce a phantom part on every reconnect)
    pub.send({"part_id": "STALE"}, retain=True)
    d = DaemonProc(tmp_path, cfg).start()
    try:
        d.wait_triggers()
        wait_for(lambda: d.status()["camera"]["state"] == "ok", 30, "camera ok", d=d)
        pub.send({"part_id": "P-100"})
        pub.send("P-101")
        r = httpx.post(d.base + "/trigger", json={"part_id": "P-102"}, headers=AUTH, timeout=5)
        assert r.status_code == 202, r.text
        parts = wait_for(
            lambda: {e["part_id"] for e in d.get("/events").json()} >= {"P-100", "P-101", "P-102"}
            and [e["part_id"] for e in d.get("/events").json()],
            60, "three triggered decisions", d=d,
        )
        assert sorted(parts) == ["P-100", "P-101", "P-102"]
        assert "ignoring a retained message on the trigger topic" in d.log()
        for e in d.get("/events").json():
            assert e["mode"] == "triggered" and e["frame_count"] == 2
        d.send(signal.SIGTERM)
        assert d.wait(40) == 0, d.log()
    finally:
        pub.close()
        d.stop()


def write_still_video(path: Path, frame: Any, n: int = 30, fps: int = 15) -> Path:
    """An mp4 showing one still frame (a fixed camera over a stopped belt) with fresh sensor noise per frame."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    h, w = frame.shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert vw.isOpened()
    for _ in range(n):
        noise = rng.normal(0, 1.5, frame.shape)
        vw.write(np.clip(frame.astype(np.float32) + noise, 0, 255).astype(np.uint8))
    vw.release()
    return path


def views_cfg(tmp_path: Path, model: Path, frames: dict[str, Any], broker: Broker | None, **over: Any) -> dict[str, Any]:
    """A daemon config with one source per view (``frames``: view -> the still frame its camera sees, as a looping
    video in ``tmp_path``); ``over`` as for :func:`base_cfg` (e.g. ``decision`` for triggered mode)."""
    videos = {v: write_still_video(tmp_path / f"{v}.mp4", f) for v, f in frames.items()}
    h, w = next(iter(frames.values())).shape[:2]
    cfg = base_cfg(tmp_path, model, next(iter(videos.values())), {"roi": {"x": 0, "y": 0, "width": w, "height": h}},
                   broker, **over)
    del cfg["source"], cfg["roi"]
    cfg["sources"] = [{"view": v, "source": {"uri": str(p), "pace": "realtime", "loop": True}} for v, p in videos.items()]
    return cfg


@SLOW
def test_no_box_is_never_classified(tmp_path, crop_model):
    """Triggered on an empty belt, a model that crops to the box says "no box": counted, visible in /status,
    the part is closed without a decision, and nothing is classified."""
    from boxinspect.synth import render_line_part

    assert json.loads(Path(str(crop_model) + ".json").read_text())["crop"]["method"] == "auto"
    empty = render_line_part(2, 0, "ok", None, empty=True)["empty"]["top"]
    video = write_still_video(tmp_path / "empty.mp4", empty)
    gt = {"roi": {"x": 0, "y": 0, "width": empty.shape[1], "height": empty.shape[0]}}
    cfg = base_cfg(tmp_path, crop_model, video, gt, None,
                   decision={"mode": "triggered", "trigger_frames": 2, "trigger_no_box_frames": 5},
                   api={"token": TEST_TOKEN})
    d = DaemonProc(tmp_path, cfg).start()
    try:
        d.wait_api()
        wait_for(lambda: d.status()["camera"]["state"] == "ok", 30, "camera ok", d=d)
        r = httpx.post(d.base + "/trigger", json={"part_id": "NOTHING"}, headers=AUTH, timeout=5)
        assert r.status_code == 202, r.text
        wait_for(lambda: "part NOTHING: no box found" in d.log(), 60, "the no-box log line", d=d)
        st = d.status()
        assert st["counters"]["no_box"] >= 5 and st["counters"]["no_box_parts"] == 1, st["counters"]
        assert st["model"]["crop"]["method"] == "auto"
        assert d.metric("boxinspect_no_box_parts_total") == 1
        assert d.metric("boxinspect_frames_processed_total") == 0  # the belt was never run through the model
        assert d.get("/events").json() == []  # no decision at all (the fail-safe deadline is far off here)
    finally:
        d.stop()


@SLOW
def test_two_views_in_triggered_mode_give_one_fused_event_per_part(tmp_path, crop_model, mosquitto):
    """One daemon, two sources (top and oblique view of a part), triggered over MQTT: every part id gives ONE
    event on the real broker, carrying both views' scores fused by max, with evidence per view."""
    from boxinspect.synth import render_line_part

    part = render_line_part(6, 1, "defective", "tear")
    cfg = views_cfg(tmp_path, crop_model, {v: part["views"][v] for v in ("top", "oblique")}, mosquitto,
                    decision={"mode": "triggered", "trigger_frames": 2, "fusion": "max"})
    base = topic_base(cfg)
    sub = Subscriber(mosquitto.host, mosquitto.port, f"{base}/defect")
    pub = Publisher(mosquitto.host, mosquitto.port, f"{base}/trigger")
    d = DaemonProc(tmp_path, cfg).start()
    try:
        d.wait_triggers()
        wait_for(lambda: d.status()["camera"]["state"] == "ok", 30, "both cameras ok", d=d)
        assert set(d.status()["camera"]["stats"]["views"]) == {"top", "oblique"}
        for pid in ("P-1", "P-2", "P-3"):
            pub.send({"part_id": pid})
        wait_for(lambda: len({m["part_id"] for m in sub.messages}) >= 3, 90, "three fused events", d=d)
        time.sleep(1.0)  # a second event for a part would arrive now
        events = first_occurrences(sub.messages)
        assert sorted(e["part_id"] for e in events) == ["P-1", "P-2", "P-3"]  # exactly one event per part id
        schema = json.loads((Path(__file__).resolve().parents[1] / "edge" / "event.schema.json").read_text())
        for e in events:
            jsonschema.validate(e, schema)
            assert e["fusion"] == "max" and set(e["views"]) == {"top", "oblique"}
            scores = [e["views"][v]["score"] for v in ("top", "oblique")]
            assert all(s is not None for s in scores) and not any(e["views"][v]["no_box"] for v in e["views"])
            assert e["score"] == pytest.approx(max(scores), abs=1e-6)
            assert e["frame_count"] == 4 and all(e["views"][v]["frame_count"] == 2 for v in e["views"])
            for v in e["views"]:  # evidence kept per view
                assert Path(e["views"][v]["evidence"]["crop"]).is_file()
            assert e["evidence"] == e["views"][max(e["views"], key=lambda v: e["views"][v]["score"])]["evidence"]
        assert len(d.decisions()) == 3
    finally:
        pub.close()
        sub.close()
        d.stop()


def test_sources_need_triggered_mode_and_unique_views(tmp_path):
    from edge.config import ConfigError, parse_config

    two = [{"view": "top", "source": {"uri": "a.mp4"}}, {"view": "side", "source": {"uri": "b.mp4"}}]
    with pytest.raises(ConfigError, match="decision.mode: triggered"):
        parse_config({"sources": two}, "test")
    with pytest.raises(ConfigError, match="unique"):
        parse_config({"sources": [two[0], two[0]], "decision": {"mode": "triggered"}}, "test")
    with pytest.raises(ConfigError, match="replaces source and roi"):
        parse_config({"sources": two, "decision": {"mode": "triggered"}, "source": {"uri": "c.mp4"}}, "test")
    with pytest.raises(ConfigError, match="sources.0.view"):
        parse_config({"sources": [{"view": "a/b"}], "decision": {"mode": "triggered"}}, "test")
    cfg = parse_config({"sources": two, "decision": {"mode": "triggered", "fusion": "noisy_or"}}, "test")
    assert [v.view for v in cfg.sources] == ["top", "side"] and cfg.decision.fusion == "noisy_or"
