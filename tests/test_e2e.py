"""End to end: synth -> train -> int8 TFLite (fixtures) -> the daemon as its own process over a generated
conveyor video -> a paho subscriber on the real broker receives exactly one event per defective box."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from boxinspect.groundtruth import match_events
from tests.helpers import Subscriber, free_port
from tests.helpers import metric as metric_value

pytestmark = pytest.mark.slow


def test_daemon_process_publishes_one_event_per_defective_box(tmp_path: Path, int8_model, synth_video, mosquitto):
    video, gt = synth_video
    camera = f"cam{uuid.uuid4().hex[:6]}"
    api_port = free_port()
    cfg = {
        "line": "e2e",
        "camera": camera,
        "source": {"uri": str(video), "pace": "fast", "exit_on_end": False},
        "roi": {k: gt["roi"][k] for k in ("x", "y", "width", "height")},
        "model": {"path": str(int8_model)},
        "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "outbox_path": str(tmp_path / "outbox.sqlite3")},
        "api": {"port": api_port},
        "evidence": {"dir": str(tmp_path / "evidence")},
    }
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    sub = Subscriber(mosquitto.host, mosquitto.port, f"boxinspect/e2e/{camera}/defect")
    log_path = tmp_path / "daemon.log"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "boxinspect.cli", "run", "--config", str(cfg_path)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
    base = f"http://127.0.0.1:{api_port}"
    try:
        # healthz answers while it runs
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None, f"daemon exited early:\n{log_path.read_text()}"
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, f"/healthz never answered:\n{log_path.read_text()}"
            time.sleep(0.2)
        # wait for the whole video to be processed
        deadline = time.time() + 180
        while True:
            metrics = httpx.get(base + "/metrics", timeout=2).text
            processed = metric_value(metrics, "boxinspect_frames_captured_total")
            status = httpx.get(base + "/status", timeout=2).json()
            if "ended" in json.dumps(status.get("camera", status)) and processed >= gt["frame_count"] - 1:
                break
            assert proc.poll() is None, f"daemon died:\n{log_path.read_text()}"
            assert time.time() < deadline, f"video not processed in time ({processed} frames):\n{log_path.read_text()}"
            time.sleep(0.5)
        assert processed >= gt["frame_count"] - 1
        # let the last events arrive over MQTT
        n_def = sum(b["defective"] for b in gt["boxes"])
        deadline = time.time() + 15
        while len(sub.messages) < n_def and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()

    events = sub.messages
    m = match_events(events, gt)
    assert (m.fp, m.fn) == (0, 0), (
        f"events {len(events)} vs defective boxes {n_def}: missed boxes {m.missed_boxes}, "
        f"unmatched events {m.unmatched_events}\n{[(e['first_frame'], e['last_frame'], e['score']) for e in events]}"
        f"\nGT: {[(b['id'], b['enter_frame'], b['exit_frame'], b['defective']) for b in gt['boxes']]}"
    )
    for ev in events:
        assert ev["is_defect"] is True and ev["score"] >= ev["threshold"]
        assert ev["model_id"] and ev["event_id"]
