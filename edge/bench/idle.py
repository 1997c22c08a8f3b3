"""``boxinspect bench idle``: belt empty, camera still, the daemon at the camera's pace (its CPU, and how many frames
the idle rate only grabbed)."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.bench.common import (
    daemon_bench_main,
    daemon_config,
    machine_info,
    proc_cpu_s,
    rss_mb,
    start_daemon,
    stop_daemon,
)

IDLE_SETTLE_S = 3.0  # after start-up (imports, model load, learning the empty belt) before CPU is counted


def _idle_video(source: str, out: Path, seconds: float = 20.0, noise: float = 2.0) -> tuple[Path, float]:
    """A video of the source's first frame (an empty belt) with fresh sensor noise in every frame, at its fps."""
    cap = cv2.VideoCapture(str(source))
    ok, first = cap.read()
    fps = cap.get(cv2.CAP_PROP_FPS) or 15.0
    cap.release()
    if not ok:
        raise ValueError(f"the source {source} delivered no frame")
    h, w = first.shape[:2]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
    rng = np.random.default_rng(0)
    base = first.astype(np.float32)
    for _ in range(int(seconds * fps)):
        writer.write(np.clip(base + rng.normal(0, noise, base.shape), 0, 255).astype(np.uint8))
    writer.release()
    return out, float(fps)


def _camera_counts(logf: Path) -> dict[str, Any] | None:
    """The daemon's camera counters from its /status (URL from its log): frames captured, grabbed without decoding
    (the idle rate), whether it is at the idle rate now. None if the API does not answer."""
    import re
    import urllib.request

    m = re.search(r"API listening on (http://\S+)", logf.read_text(errors="replace"))
    if m is None:
        return None
    try:
        with urllib.request.urlopen(m.group(1) + "/status", timeout=5) as r:
            stats = json.load(r)["camera"]["stats"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {"frames": stats.get("frames"), "idle_skipped": stats.get("idle_skipped"), "idle": stats.get("idle")}


def bench_idle(source: str, model: str, threads: int = 1, duration: float = 30.0, roi: Any = None,
               broker: tuple[str, int] = ("127.0.0.1", 1883), overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """CPU of the daemon process (all threads) on an empty, still belt at the camera's pace (``pace: realtime``)."""
    import tempfile

    from edge.config import RoiConfig
    from edge.deliver.broker import DemoBroker

    roi = roi or RoiConfig()
    mqtt = DemoBroker(*broker)
    kind = mqtt.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
            video, fps = _idle_video(source, Path(tmp) / "idle.mp4")
            over = {"source.pace": "realtime", **(overrides or {})}
            cfg_path = daemon_config(Path(tmp), str(video), model, threads, roi, broker, over)
            proc, logf = start_daemon(cfg_path, Path(tmp))
            try:
                time.sleep(IDLE_SETTLE_S)
                cam0 = _camera_counts(logf)  # outside the window: the request costs the daemon a little CPU
                load0 = os.getloadavg()[0]
                c0, t0 = proc_cpu_s(proc.pid), time.monotonic()
                time.sleep(duration)
                c1, t1 = proc_cpu_s(proc.pid), time.monotonic()
                load1 = os.getloadavg()[0]
                cam1 = _camera_counts(logf)
                rss = rss_mb(proc.pid)
            finally:
                stop_daemon(proc, 30)
            text = logf.read_text(errors="replace")
    finally:
        mqtt.stop()
    return {
        "kind": "idle",
        "source": f"first frame of {source} + noise (sigma 2) at {fps:g} fps, looped, pace realtime",
        "model": str(model),
        "threads": threads,
        "broker": f"{broker[0]}:{broker[1]} ({kind})",
        "overrides": overrides or {},
        "seconds": round(t1 - t0, 1),
        "cpu_percent_of_a_core": round(100 * (c1 - c0) / (t1 - t0), 2),
        "rss_mb": rss,
        "load_avg_1m": [load0, load1],
        "camera": _camera_window(cam0, cam1),
        "machine": machine_info(),
        "daemon_errors": [ln for ln in text.splitlines() if " ERROR " in ln][:5],
    }


def _camera_window(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    """Frames the camera delivered in the measured window, and how many of them were decoded (source.idle_fps)."""
    if not a or not b or a["frames"] is None or b["frames"] is None:
        return None
    frames = b["frames"] - a["frames"]
    skipped = (b["idle_skipped"] or 0) - (a["idle_skipped"] or 0)
    return {"frames": frames, "decoded": frames - skipped, "grabbed_not_decoded": skipped, "idle_at_end": b["idle"]}


def idle_main(args: argparse.Namespace) -> int:
    return daemon_bench_main(
        args, "idle", bench_idle,
        lambda res: f"idle: {res['cpu_percent_of_a_core']} % of a core over {res['seconds']} s ({res['source']}); "
                    f"RSS {res['rss_mb']} MB; load {res['load_avg_1m']}; camera {res['camera']}")
