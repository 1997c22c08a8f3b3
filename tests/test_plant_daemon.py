"""Plant integration on the daemon as a real process, the real broker, a real int8 model and the generated
conveyor video: deadlines met and missed, every fail-safe policy, one decision per part under overload, a
stalled classifier seen on MQTT, OPC UA (a real asyncua client subscription) and metrics, Home Assistant
discovery, the SPC alarm set and cleared.

The classifier is stalled with the test-only hook of edge/runtime/testhooks.py (a file whose content is the seconds each
score sleeps); the model itself is untouched.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from edge.runtime.testhooks import SLOW_MODEL_ENV
from tests.helpers import (
    DaemonProc,
    Publisher,
    Subscriber,
    first_occurrences,
    free_port,
    topic_base,
    wait_for,
)
from tests.test_daemon import base_cfg

SLOW = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
VALIDATOR = jsonschema.Draft202012Validator(
    json.loads((REPO / "edge" / "event.schema.json").read_text()), format_checker=jsonschema.FormatChecker()
)


class StalledDaemon(DaemonProc):
    """A daemon whose model can be slowed down or stalled from the test (edge/runtime/testhooks.py); ``stall``: the
    seconds each score sleeps from the start."""

    def __init__(self, workdir: Path, cfg: dict[str, Any], stall: float | None = None) -> None:
        super().__init__(workdir, cfg)
        self.stall_file = workdir / "stall-seconds"
        self.stall(stall)
        self.extra_env[SLOW_MODEL_ENV] = str(self.stall_file)

    def stall(self, seconds: float | None) -> None:
        if seconds is None:
            self.stall_file.unlink(missing_ok=True)
        else:
            self.stall_file.write_text(str(seconds))


def plant_cfg(tmp_path: Path, model_path: Path, synth_video: tuple[Path, dict], mosquitto: Any, **over: Any) -> dict[str, Any]:
    video, gt = synth_video
    cfg = base_cfg(tmp_path, model_path, video, gt, mosquitto, **over)
    cfg["mqtt"]["publish_results"] = True
    return cfg


def by_part(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        out.setdefault(e["part_id"], []).append(e)
    return out


def opcua_watch(url: str, paths: list[str], stop: threading.Event, got: list[tuple[str, Any]], ready: threading.Event) -> None:
    """A real asyncua client: subscribes to ``paths`` and records every data change until ``stop``."""
    from asyncua import Client

    async def run() -> None:
        client = Client(url)
        client.set_user("plc")
        client.set_password("plc-secret")

        class Handler:
            def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
                got.append((node.nodeid.Identifier, val))

        async with client:
            idx = await client.get_namespace_index("urn:boxinspect")
            nodes = [client.get_node(f"ns={idx};s={p}") for p in paths]
            sub = await client.create_subscription(20, Handler())
            await sub.subscribe_data_change(nodes)
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)
            await sub.delete()

    asyncio.run(run())


@SLOW
def test_stalled_classifier_times_out_parts_on_mqtt_opcua_and_metrics(tmp_path, int8_model, synth_video, mosquitto):
    port = free_port()
    cfg = plant_cfg(
        tmp_path, int8_model, synth_video, mosquitto,
        decision={"mode": "triggered", "trigger_frames": 2},
        reject={"deadline_ms": 3000, "on_timeout": "reject", "mqtt": True},
        opcua={"enabled": True, "endpoint": f"opc.tcp://127.0.0.1:{port}/boxinspect/", "username": "plc", "password": "plc-secret"},
        homeassistant={"enabled": True},
    )
    base = topic_base(cfg)
    node = f"boxinspect_{cfg['line']}_{cfg['camera']}"
    prefix = f"{cfg['line']}.{cfg['camera']}"
    sub = Subscriber(mosquitto.host, mosquitto.port, [f"{base}/#", f"homeassistant/+/{node}/+/config"])
    trig = Publisher(mosquitto.host, mosquitto.port, f"{base}/trigger")
    d = StalledDaemon(tmp_path, cfg).start()
    stop, ready, seen = threading.Event(), threading.Event(), []
    watcher: threading.Thread | None = None
    try:
        d.wait_triggers(90)
        wait_for(lambda: d.status()["camera"]["state"] == "ok", 30, "camera ok", d=d)
        watcher = threading.Thread(
            target=opcua_watch, daemon=True,
            args=(f"opc.tcp://127.0.0.1:{port}/boxinspect/", [f"{prefix}.LastDecision.PartId", f"{prefix}.LastDecision.Kind",
                  f"{prefix}.Counters.Timeouts"], stop, seen, ready),
        )
        watcher.start()
        assert ready.wait(30), "the OPC UA client could not subscribe"
        # 1. a healthy model: decisions well within the deadline
        for pid in ("M-1", "M-2"):
            trig.send({"part_id": pid})
        wait_for(lambda: {"M-1", "M-2"} <= set(by_part(sub.json("/result"))), 60, "two model decisions", d=d)
        # 2. the classifier stalls (5 s per score against a 3 s deadline): the watchdog decides, by policy
        d.stall(5)
        for pid in ("S-1", "S-2"):
            trig.send({"part_id": pid})
        wait_for(lambda: {"S-1", "S-2"} <= set(by_part(sub.json("/result"))), 30, "two timeout decisions", d=d)
        d.stall(None)
        wait_for(lambda: d.metric("boxinspect_timeouts_total", action="reject") == 2, 10, "the timeout metric", d=d)
        wait_for(lambda: {"S-1", "S-2"} <= {e["part_id"] for e in sub.json("/defect")}, 30, "timeouts via the outbox", d=d)
        wait_for(lambda: any(v == "S-2" for n, v in seen if n.endswith("PartId"))
                 and any(v == "timeout" for n, v in seen if n.endswith("Kind")), 15, "the timeout on OPC UA", d=d)
        late = d.metric("boxinspect_decisions_late_total")
        slack_n = d.metric("boxinspect_deadline_slack_seconds_count")
        wait_for(lambda: {"S-1", "S-2", "M-1", "M-2"} <= {json.loads(p)["part_id"] for _, p, _ in sub.on("/reject")}, 10,
                 "reject commands", d=d)
        d.send(signal.SIGTERM)
        assert d.wait(40) == 0, d.log()
    finally:
        stop.set()
        if watcher is not None:
            watcher.join(10)
        trig.close()
        d.stop()
    results = sub.json("/result")
    parts = by_part(results)
    for e in results + sub.json("/defect"):
        VALIDATOR.validate(e)
    # one decision per part; the healthy ones in time, the stalled ones timed out by policy
    assert {p: len(v) for p, v in parts.items()} == {"M-1": 1, "M-2": 1, "S-1": 1, "S-2": 1}, parts
    for pid in ("M-1", "M-2"):
        (e,) = parts[pid]
        assert e["kind"] == "model" and e["late"] is False and e["slack_ms"] > 0 and e["score"] is not None
    for pid in ("S-1", "S-2"):
        (e,) = parts[pid]
        assert e["kind"] == "timeout" and e["action"] == "reject" and e["is_defect"] and e["late"] is True
        assert e["label"] == "timeout" and "no decision within 3000 ms" in e["reason"]
    assert late >= 2 and slack_n >= 4
    # reject commands: QoS 1, never retained, one per rejected part
    cmds = [json.loads(p) for _, p, _ in sub.on("/reject")]
    assert Counter(c["part_id"] for c in cmds) == Counter({"M-1": 1, "M-2": 1, "S-1": 1, "S-2": 1})
    assert not any(r for _, _, r in sub.on("/reject"))
    # OPC UA saw the decisions of the run, the timeouts among them
    pids = [v for n, v in seen if n.endswith("PartId")]
    assert {"M-1", "M-2", "S-1", "S-2"} <= set(pids), seen
    assert "timeout" in [v for n, v in seen if n.endswith("Kind")] and 2 in [v for n, v in seen if n.endswith("Timeouts")]
    # Home Assistant discovery: retained config messages for the daemon's device, availability from .../status
    ha = {t: json.loads(p) for t, p, _ in sub.raw if t.startswith("homeassistant/") and p}
    assert {t.split("/")[3] for t in ha} == {"defect_rate", "last_verdict", "last_score", "fps", "outbox_depth", "camera_ok"}
    assert all(p["availability_topic"] == f"{base}/status" for p in ha.values())
    stats = sub.json("/stats")
    assert stats and {"defect_rate_pct", "last_label", "last_score", "fps", "outbox_depth", "camera_state"} <= set(stats[-1])
    for t in ha:  # leave the shared broker clean
        sub.client.publish(t, b"", qos=1, retain=True).wait_for_publish(5)
    sub.close()


@SLOW
def test_one_decision_per_part_under_overload(tmp_path, int8_model, synth_video, mosquitto):
    """Triggers come faster than the (slowed) model can decide: every part still gets exactly one decision."""
    cfg = plant_cfg(
        tmp_path, int8_model, synth_video, mosquitto,
        # ~40 triggers a second: above the flood gate's default (test_failsafe.py tests it); here the decider's overload
        decision={"mode": "triggered", "trigger_frames": 2, "trigger_min_gap_ms": 0},
        reject={"deadline_ms": 1500, "on_timeout": "reject"},
    )
    base = topic_base(cfg)
    sub = Subscriber(mosquitto.host, mosquitto.port, f"{base}/result")
    trig = Publisher(mosquitto.host, mosquitto.port, f"{base}/trigger")
    d = StalledDaemon(tmp_path, cfg, stall=0.25).start()  # 0.25 s per score: about two parts a second at best
    n = 40
    try:
        d.wait_triggers(90)
        wait_for(lambda: d.status()["camera"]["state"] == "ok", 30, "camera ok", d=d)
        for i in range(n):
            trig.send({"part_id": f"O-{i}"})
            time.sleep(0.02)
        wait_for(lambda: len(by_part(sub.json("/result"))) >= n, 60, f"decisions for all {n} parts", d=d)
        time.sleep(2)  # anything that would come twice has had time to
        d.send(signal.SIGTERM)
        assert d.wait(40) == 0, d.log()
    finally:
        trig.close()
        d.stop()
    events = sub.json("/result")
    counts = Counter(e["part_id"] for e in events)
    assert counts == Counter({f"O-{i}": 1 for i in range(n)}), counts
    kinds = Counter(e["kind"] for e in events)
    assert kinds["model"] >= 1 and kinds["timeout"] >= 1, kinds  # both paths ran: the test proves something
    for e in events:
        VALIDATOR.validate(e)
        assert (e["kind"] == "timeout") == (e["late"] and e["label"] == "timeout")
    assert "no model decision" not in d.log()


@SLOW
@pytest.mark.parametrize("policy", ["pass", "hold"])
def test_fail_safe_policy_on_the_wire(tmp_path, int8_model, synth_video, mosquitto, policy):
    cfg = plant_cfg(
        tmp_path, int8_model, synth_video, mosquitto,
        decision={"mode": "triggered", "trigger_frames": 2},
        reject={"deadline_ms": 500, "on_timeout": policy, "mqtt": True},
    )
    base = topic_base(cfg)
    sub = Subscriber(mosquitto.host, mosquitto.port, f"{base}/#")
    trig = Publisher(mosquitto.host, mosquitto.port, f"{base}/trigger")
    d = StalledDaemon(tmp_path, cfg, stall=3).start()
    try:
        d.wait_triggers(90)
        trig.send({"part_id": "F-1"})
        wait_for(lambda: sub.json("/result"), 30, "the timeout decision", d=d)
        if policy == "hold":
            wait_for(lambda: sub.json("/defect") and sub.on("/reject"), 30, "the held part via the outbox and a command", d=d)
        else:
            time.sleep(1)
        d.stall(None)
        d.send(signal.SIGTERM)
        assert d.wait(40) == 0, d.log()
    finally:
        trig.close()
        d.stop()
    (e,) = sub.json("/result")
    VALIDATOR.validate(e)
    assert (e["part_id"], e["kind"], e["action"], e["late"]) == ("F-1", "timeout", policy, True)
    assert e["is_defect"] is (policy == "hold")
    if policy == "hold":  # a held part is not passed as good: a defect event through the outbox, and a command
        assert [x["part_id"] for x in first_occurrences(sub.json("/defect"))] == ["F-1"]
        assert [json.loads(p)["action"] for _, p, _ in sub.on("/reject")] == ["hold"]
    else:  # pass: the part goes on, nothing to push, but the decision is on .../result and in the log
        assert not sub.json("/defect") and not sub.on("/reject")
    assert "TIMEOUT part F-1" in d.log()
    sub.close()


@SLOW
def test_spc_alarm_set_and_cleared_on_a_video_run(tmp_path, int8_model, synth_video, mosquitto):
    """The video's boxes: ok, DEFECT, ok x4, DEFECT x4 (then it loops). Two defects in a row raise the alarm;
    two good boxes in a row clear it. Continuous mode: part ids are passage numbers, slack from the ROI exit."""
    cfg = plant_cfg(
        tmp_path, int8_model, synth_video, mosquitto,
        source={"pace": "fast"},
        spc={"enabled": True, "consecutive": 2, "clear_consecutive_ok": 2, "window": 10, "rate_pct": 100, "clear_rate_pct": 99},
    )
    cfg["model"]["threshold"] = None  # the model's own threshold: real verdicts, not "everything is a defect"
    base = topic_base(cfg)
    sub = Subscriber(mosquitto.host, mosquitto.port, [f"{base}/alarm", f"{base}/result"])
    d = DaemonProc(tmp_path, cfg).start()
    try:
        d.wait_api()
        alarms = lambda: [a["active"] for a in sub.json("/alarm")]  # noqa: E731
        # the operator page shows it (its summary is what the page polls every second)
        page = wait_for(lambda: (d.get("/ui/summary").json().get("spc") or {}).get("active")
                        and d.get("/ui/summary").json()["spc"], 240, "the SPC alarm on the operator page", d=d)
        assert page["rules"] == ["consecutive"] and "in a row" in page["reason"]
        wait_for(lambda: True in alarms(), 10, "the SPC alarm on MQTT", d=d)
        assert d.metric("boxinspect_spc_alarm", rule="consecutive") == 1 or False in alarms()[alarms().index(True):]
        wait_for(lambda: alarms()[-1] is False and True in alarms(), 240, "the SPC alarm to clear", d=d)
        # the gauge and the MQTT state are set apart: wait for the gauge, do not race it
        wait_for(lambda: d.metric("boxinspect_spc_alarm", rule="consecutive") == 0, 30, "the SPC alarm metric to clear",
                 d=d)
        d.send(signal.SIGTERM)
        assert d.wait(40) == 0, d.log()
    finally:
        d.stop()
    msgs = sub.on("/alarm")
    assert msgs and not any(retained for _, _, retained in msgs)  # live copies; the broker keeps the last one
    states = sub.json("/alarm")
    assert states[0]["active"] is False  # the state is announced at connect (it is retained: it replaces a stale one)
    raised = next(s for s in states if s["active"])
    assert raised["rules"] == ["consecutive"] and "2 defective parts in a row" in raised["reason"]
    # the alarm came from two defect decisions in a row, and cleared after two good ones
    results = sub.json("/result")
    verdicts = [e["is_defect"] for e in results]
    assert any(verdicts[i] and verdicts[i + 1] for i in range(len(verdicts) - 1))
    assert [e["part_id"] for e in results] == [str(i) for i in range(1, len(results) + 1)]
    assert all(e["slack_ms"] is not None and e["late"] is not None for e in results)
    # leave the shared broker clean
    sub.client.publish(f"{base}/alarm", b"", qos=1, retain=True).wait_for_publish(5)
    sub.close()


@SLOW
def test_continuous_mode_stall_times_out_the_box_in_view(tmp_path, int8_model, synth_video, mosquitto):
    """Continuous mode: the model stalls (4 s per score, deadline 1 s) while a box is in view; the box gets its
    timeout decision, the later boxes their model decisions, every passage number exactly once."""
    cfg = plant_cfg(tmp_path, int8_model, synth_video, mosquitto, reject={"deadline_ms": 1000, "on_timeout": "reject"})
    base = topic_base(cfg)
    sub = Subscriber(mosquitto.host, mosquitto.port, f"{base}/result")
    d = StalledDaemon(tmp_path, cfg, stall=4).start()
    try:
        d.wait_api()
        first = wait_for(lambda: sub.json("/result"), 90, "the first decision", d=d)[0]
        d.stall(None)
        wait_for(lambda: sum(e["kind"] == "model" for e in sub.json("/result")) >= 2, 90, "two model decisions after", d=d)
        assert d.metric("boxinspect_timeouts_total", action="reject") >= 1
        d.send(signal.SIGTERM)
        assert d.wait(40) == 0, d.log()
    finally:
        d.stop()
    assert (first["part_id"], first["kind"], first["action"], first["mode"]) == ("1", "timeout", "reject", "continuous")
    assert "stalled for 1000 ms with box passage 1 open" in first["reason"]
    events = sub.json("/result")
    for e in events:
        VALIDATOR.validate(e)
    ids = [e["part_id"] for e in events]
    assert len(ids) == len(set(ids)), ids  # one decision per part
    assert all(e["kind"] == "model" and e["late"] is False for e in events[1:] if int(e["part_id"]) > 2)
