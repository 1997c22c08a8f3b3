"""Deadline slack of the daemon at real-time pace (docs/BENCHMARKS.md).

    python studies/bench_deadline.py MODEL.tflite VIDEO.mp4 --mode continuous   # every box of the video
    python studies/bench_deadline.py MODEL.tflite VIDEO.mp4 --mode triggered --parts 30 --every 1.5

Runs ``boxinspect run`` as a process over the video (``source.pace: realtime``, MQTT off, API on a free port),
in triggered mode posts a trigger to ``/trigger`` every ``--every`` seconds, reads the decisions from
``/events`` and prints the slack (``deadline_ms`` minus the time from trigger or ROI exit to the decision): p50, and p99 taken
on the side that matters, the worst 1 % (the 1st percentile of the slack = the 99th of the decision time).
The ROI is taken from the video's ground truth (``<video>.json``, written by ``boxinspect synth --video``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

from edge.deliver.broker import free_port


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("video")
    ap.add_argument("--mode", choices=["continuous", "triggered"], default="continuous")
    ap.add_argument("--deadline-ms", type=float, default=2000)
    ap.add_argument("--parts", type=int, default=30, help="triggered: how many triggers")
    ap.add_argument("--every", type=float, default=1.5, help="triggered: seconds between triggers")
    ap.add_argument("--trigger-frames", type=int, default=3)
    a = ap.parse_args()
    gt = json.loads(Path(a.video).with_suffix(".json").read_text())
    work = Path(tempfile.mkdtemp(prefix="bench-deadline-"))
    port = free_port()
    cfg = {
        "line": "bench", "camera": "cam1",
        "source": {"uri": str(Path(a.video).resolve()), "pace": "realtime", "loop": a.mode == "triggered", "exit_on_end": False},
        "roi": {k: gt["roi"][k] for k in ("x", "y", "width", "height")},
        "model": {"path": str(Path(a.model).resolve())},
        "decision": {"mode": a.mode, "trigger_frames": a.trigger_frames},
        "mqtt": {"enabled": False, "outbox_path": str(work / "outbox.sqlite3")},
        "api": {"port": port},
        "evidence": {"enabled": False},
        "reject": {"deadline_ms": a.deadline_ms},
        "shutdown_timeout_s": 5,
    }
    (work / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    log = open(work / "daemon.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "boxinspect.cli", "run", "--config", str(work / "cfg.yaml")],
                            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(base + "/status", timeout=2).json()["camera"]["state"] == "ok":
                    break
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(0.2)
        if a.mode == "triggered":
            for i in range(a.parts):
                httpx.post(base + "/trigger", json={"part_id": f"B-{i}"}, timeout=5)
                time.sleep(a.every)
            time.sleep(a.deadline_ms / 1000 + 1)
        else:
            n = len(gt["boxes"])
            while len(httpx.get(base + "/events", params={"limit": 1000}, timeout=5).json()) < n and proc.poll() is None:
                time.sleep(1)
        events = httpx.get(base + "/events", params={"limit": 1000}, timeout=5).json()
    finally:
        proc.terminate()
        proc.wait(30)
    slack = np.array([e["slack_ms"] for e in events if e.get("slack_ms") is not None])
    kinds = {k: sum(e["kind"] == k for e in events) for k in ("model", "timeout")}
    load = os.getloadavg()[0]
    sys.stdout.write(f"{a.mode}: {len(slack)} decisions ({kinds}), deadline {a.deadline_ms:g} ms, slack p50 {np.percentile(slack, 50):.0f} ms, "
          f"p99 (the worst 1 %: 1st percentile of the slack) {np.percentile(slack, 1):.0f} ms, min {slack.min():.0f} ms; late {sum(bool(e['late']) for e in events)}; "
          f"load average {load:.1f}; log {work / 'daemon.log'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
