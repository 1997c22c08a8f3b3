"""Fail safe under a camera hang and a trigger flood (issue 24, items 2 and 3), on the daemon as a real process with a
real broker, the real int8 model and the generated conveyor video.

- camera hang: the capture stops delivering (edge/runtime/testhooks.py, ``TESTONLY_BOXINSPECT_CAMERA_HANG_FILE``) while a
  box is in view. Its part gets the fail-safe decision at its deadline; the frames after recovery are a new part.
  On 548d7c7 the deadline slid with the loop's turns, no decision came, and the next box merged into the part.
- trigger flood: 3,000 triggers in a burst on MQTT. On 548d7c7 most became timeout rejects (6,330 of 10,000 in the
  issue's probe); now they are dropped and counted, and a later trigger still becomes a decided part.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from edge.runtime.testhooks import CAMERA_HANG_ENV
from tests.helpers import DaemonProc, Publisher, Subscriber, topic_base, wait_for
from tests.test_plant_daemon import VALIDATOR, plant_cfg

SLOW = pytest.mark.slow


class HangingCamera(DaemonProc):
    def __init__(self, workdir: Path, cfg: dict[str, Any], at_frame: int, seconds: float) -> None:
        super().__init__(workdir, cfg)
        hang = workdir / "camera-hang"
        hang.write_text(f"{at_frame} {seconds}")
        self.extra_env[CAMERA_HANG_ENV] = str(hang)


@SLOW
def test_camera_hang_with_a_box_in_view_fails_safe_at_the_deadline(tmp_path, int8_model, synth_video, mosquitto):
    video, gt = synth_video
    box = gt["boxes"][2]
    at = (box["enter_frame"] + box["exit_frame"]) // 2  # mid-box: the passage is open
    cfg = plant_cfg(tmp_path, int8_model, synth_video, mosquitto, reject={"deadline_ms": 1500, "on_timeout": "reject"})
    cfg["source"]["loop"] = False
    sub = Subscriber(mosquitto.host, mosquitto.port, f"{topic_base(cfg)}/result")
    d = HangingCamera(tmp_path, cfg, at, 6.0).start()
    try:
        d.wait_api()
        timeout = wait_for(lambda: [e for e in sub.json("/result") if e["kind"] == "timeout"], 120,
                           "the fail-safe decision of the box in view", d=d)[0]
        wait_for(lambda: sum(e["kind"] == "model" for e in sub.json("/result")
                             if int(e["part_id"]) > int(timeout["part_id"])) >= 2, 120,
                 "two model decisions after the recovery", d=d)
        d.send(signal.SIGTERM)
        assert d.wait(40) == 0, d.log()[-3000:]
    finally:
        d.stop()
    assert timeout["action"] == "reject" and timeout["mode"] == "continuous"
    assert "no frame processed" in timeout["reason"], timeout["reason"]
    events = sub.json("/result")
    for e in events:
        VALIDATOR.validate(e)
    ids = [e["part_id"] for e in events]
    assert len(ids) == len(set(ids)), ids  # one decision per part: the rest of the box is a new part
    after = [e for e in events if int(e["part_id"]) > int(timeout["part_id"])]
    assert all(e["kind"] == "model" for e in after), after
    # the timed-out part is decided once, by the fail-safe; no model decision for it came later
    assert [e["kind"] for e in events if e["part_id"] == timeout["part_id"]] == ["timeout"]


@SLOW
def test_a_trigger_flood_is_dropped_and_counted_not_made_into_rejects(tmp_path, int8_model, synth_video, mosquitto):
    cfg = plant_cfg(tmp_path, int8_model, synth_video, mosquitto, decision={"mode": "triggered", "trigger_frames": 2},
                    reject={"deadline_ms": 60_000})
    base = topic_base(cfg)
    sub = Subscriber(mosquitto.host, mosquitto.port, f"{base}/result")
    pub = Publisher(mosquitto.host, mosquitto.port, f"{base}/trigger")
    d = DaemonProc(tmp_path, cfg).start()
    try:
        d.wait_triggers()
        wait_for(lambda: d.status()["camera"]["state"] == "ok", 30, "camera ok", d=d)
        for i in range(3000):
            pub.client.publish(f"{base}/trigger", f'{{"part_id": "F{i}"}}', qos=0)
        wait_for(lambda: d.metric("boxinspect_triggers_dropped_total", reason="rate") >= 2500, 60,
                 "the flood counted as dropped", d=d)
        dropped = d.metric("boxinspect_triggers_dropped_total", reason="rate")
        wait_for(lambda: d.status()["loop"]["parts_pending"] == 0 if "parts_pending" in d.status().get("loop", {})
                 else True, 60, "the admitted parts decided", d=d)
        import time

        time.sleep(1.0)  # one part window after the flood: the gate has room again
        pub.send({"part_id": "AFTER"})
        wait_for(lambda: any(e["part_id"] == "AFTER" for e in sub.json("/result")), 90, "the later part decided", d=d)
        timeouts = d.metric("boxinspect_timeouts_total", action="reject")
        d.send(signal.SIGTERM)
        assert d.wait(40) == 0, d.log()[-3000:]
    finally:
        pub.client.loop_stop()
        d.stop()
    assert dropped >= 2500
    assert timeouts <= 100, f"{timeouts} fail-safe rejects from a flood"
    assert d.log().count("trigger dropped") <= 20  # rate-limited log lines, with a count
