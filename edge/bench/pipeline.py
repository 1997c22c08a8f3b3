"""``boxinspect bench pipeline``: the whole frame path against its two limits, decoding and the interpreter.

Stages (a) decode, (b) invoke and (c) preprocessing are timed alone; (d) runs the daemon as its own process with
``--trace`` and reads throughput, loop time per frame, CPU and each event's way to its PUBACK from the trace."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.bench.common import daemon_bench_main, daemon_config, machine_info, start_daemon
from edge.judge.classifier import Classifier

log = logging.getLogger(__name__)

PIPELINE_WARMUP_S = 2.0  # the daemon's first seconds (model warm-up, learning the empty belt) are not counted


def pct(values: Any, *, scale: float = 1000.0) -> dict[str, Any]:
    """n, p50/p95/p99/mean/max of ``values`` (seconds) in milliseconds."""
    a = np.asarray(values, dtype=np.float64) * scale
    if a.size == 0:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}
    return {
        "n": int(a.size),
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p95_ms": round(float(np.percentile(a, 95)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "mean_ms": round(float(a.mean()), 3),
        "max_ms": round(float(a.max()), 3),
    }


def _stage(times_s: list[float] | np.ndarray) -> dict[str, Any]:
    st = pct(times_s)
    st["fps"] = round(1000.0 / st["mean_ms"], 1) if st["mean_ms"] else None
    return st


def bench_decode(source: str | Path, seconds: float) -> dict[str, Any]:
    """(a) The bare decode rate of the source: ``cv2.VideoCapture.read`` back to back, the file looped."""
    times: list[float] = []
    end = time.monotonic() + seconds
    size = None
    while time.monotonic() < end:
        cap = cv2.VideoCapture(str(source))
        if not cap.isOpened():
            raise ValueError(f"cannot open the source {source}")
        try:
            while time.monotonic() < end:
                t0 = time.perf_counter()
                ok, img = cap.read()
                if not ok:
                    break
                times.append(time.perf_counter() - t0)
                size = img.shape
        finally:
            cap.release()
        if not times:
            raise ValueError(f"the source {source} delivered no frame")
    res = _stage(times)
    res["frame"] = f"{size[1]}x{size[0]}" if size else None
    return res


def _roi_frames(source: str | Path, roi: Any, limit: int) -> list[np.ndarray]:
    from edge.capture.roi import crop

    frames: list[np.ndarray] = []
    cap = cv2.VideoCapture(str(source))
    try:
        while len(frames) < limit:
            ok, img = cap.read()
            if not ok:
                break
            frames.append(crop(img, roi).copy())
    finally:
        cap.release()
    return frames


def bench_invoke(clf: Classifier, tensor: np.ndarray, seconds: float) -> dict[str, Any]:
    """(b) The bare invoke rate: the prepared input tensor, ``invoke`` back to back."""
    for _ in range(20):
        clf.runner.invoke(tensor)
    times = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        clf.runner.invoke(tensor)
        times.append(time.perf_counter() - t0)
    return _stage(times)


def bench_preprocess(clf: Classifier, rois: list[np.ndarray], presence: Any, seconds: float) -> dict[str, Any]:
    """(c) Preprocessing, per ROI of the video: presence detection (every frame, as the loop does) and the model
    input (crop as the package says + resize + colour order; the loop does it for frames with a box)."""
    from edge.judge.decision import ForegroundDetector

    fg = ForegroundDetector(presence)
    bg: tuple[int, np.ndarray] | None = None
    pres, model_in = [], []
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        roi = rois[i % len(rois)]
        t0 = time.perf_counter()
        fg.measure(roi)
        t1 = time.perf_counter()
        if fg.seen > presence.learning_frames and (bg is None or bg[0] != fg.version):
            bg = (fg.version, fg.mog.getBackgroundImage())  # as the daemon: one image per state of the model
        clf.preprocess(roi, None, bg[1] if bg is not None else None)
        t2 = time.perf_counter()
        pres.append(t1 - t0)
        model_in.append(t2 - t1)
        i += 1
    return {"presence": _stage(pres), "model_input": _stage(model_in)}


def run_daemon(cfg_path: Path, seconds: float, workdir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(d) ``boxinspect run --trace`` as its own process for ``seconds`` after it started inspecting, then SIGTERM.
    Returns (the trace, the child's rusage and exit code)."""

    trace = workdir / "trace.json"
    proc, logf = start_daemon(cfg_path, workdir, "--trace", str(trace))
    try:
        time.sleep(seconds)
        proc.send_signal(signal.SIGTERM)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    if not trace.exists():
        raise RuntimeError("the daemon wrote no trace:\n" + logf.read_text(errors="replace")[-3000:])
    child = {"exit_code": proc.returncode, "cpu_user_s": usage.ru_utime, "cpu_sys_s": usage.ru_stime,
             "max_rss_mb": round(usage.ru_maxrss / 1024, 1)}
    return json.loads(trace.read_text()), child


def analyse_trace(tr: dict[str, Any], warmup_s: float = PIPELINE_WARMUP_S) -> dict[str, Any]:
    """Throughput, per-frame loop time, CPU and end-to-end latency of the events from a daemon trace."""
    read = np.asarray(tr["read_at"], dtype=np.float64)
    done = np.asarray(tr["done_at"], dtype=np.float64)
    scored = np.asarray(tr["scored"], dtype=bool)
    if read.size < 10:
        raise RuntimeError(f"the daemon processed only {read.size} frames")
    start = int(np.searchsorted(read, read[0] + warmup_s))
    start = min(start, read.size - 2)
    window = read[-1] - read[start]
    loop = done - read
    res: dict[str, Any] = {
        "frames": int(read.size - start),
        "seconds": round(float(window), 2),
        "throughput_fps": round(float((read.size - 1 - start) / window), 1) if window > 0 else None,
        "scored_share": round(float(scored[start:].mean()), 3),
        "loop_per_frame": pct(loop[start:]),
        "loop_per_scored_frame": pct(loop[start:][scored[start:]]),
        "loop_per_unscored_frame": pct(loop[start:][~scored[start:]]),
    }
    if tr.get("cpu_first_s") is not None and tr.get("cpu_last_s") is not None and tr["cpu_last_frame"] > 0:
        wall = read[tr["cpu_last_frame"]] - read[0]
        res["cpu_percent_of_a_core"] = round(100 * (tr["cpu_last_s"] - tr["cpu_first_s"]) / wall, 1) if wall > 0 else None
    res["max_rss_mb"] = round(tr["max_rss_kb"] / 1024, 1)
    t0 = read[start]
    # decisions made by a frame in the window (not the one the shutdown flushes, which no frame made)
    evs = [e for e in tr["events"] if e.get("read_at") and e["read_at"] >= t0 and e.get("frame") is not None]
    defects = [e for e in evs if e.get("is_defect")]
    acked = [e for e in defects if e.get("puback_at")]
    gap = [read[e["frame"]] - read[e["last_frame"]] for e in evs
           if e.get("last_frame") is not None and e["frame"] < read.size]
    res["decisions"] = len(evs)
    res["defects"] = len(defects)
    res["defects_acked"] = len(acked)
    res["e2e_read_to_puback"] = pct([e["puback_at"] - e["read_at"] for e in acked])
    res["e2e_decoded_to_puback"] = pct([e["puback_at"] - e["captured_at"] for e in acked if e.get("captured_at")])
    res["e2e_parts"] = {
        "read_to_handoff": pct([e["handed_at"] - e["read_at"] for e in acked]),
        "handoff_to_publisher": pct([e["publish_started"] - e["handed_at"] for e in acked]),
        "evidence": pct([e["evidence_done"] - e["publish_started"] for e in acked if e.get("evidence_done")]),
        "outbox_store": pct([e["stored_at"] - e["evidence_done"] for e in acked if e.get("evidence_done")]),
        "store_to_puback": pct([e["puback_at"] - e["stored_at"] for e in acked]),
    }
    res["decision_delay_gap_frames"] = pct(gap)
    return res


def bench_pipeline(source: str, model: str, threads: int = 1, duration: float = 30.0, roi: Any = None,
                   broker: tuple[str, int] = ("127.0.0.1", 1883), overrides: dict[str, Any] | None = None,
                   workdir: Path | None = None) -> dict[str, Any]:
    """Stages (a)-(d) of ``bench pipeline``; returns the JSON-able result with the two ratios."""
    from edge.config import RoiConfig

    roi = roi or RoiConfig()
    stages = _bench_stages(source, model, threads, roi, max(3.0, duration / 4), overrides)
    run = _bench_daemon(source, model, threads, duration, roi, broker, overrides, workdir)
    daemon = analyse_trace(run.trace)
    daemon["process"] = run.process
    decode, invoke = stages["decode"], stages["invoke"]
    ratios, must = _ratios(daemon, decode, invoke)
    info = Classifier.load(model, num_threads=threads)
    return {
        "kind": "pipeline",
        "source": str(source),
        "model": str(model),
        "model_id": info.model_id,
        "format": info.metadata.format,
        "input": f"{info.metadata.input.width}x{info.metadata.input.height} {info.metadata.input.dtype}",
        "crop": info.metadata.crop.describe(),
        "threads": threads,
        "duration_s": duration,
        "roi": {"x": roi.x, "y": roi.y, "width": roi.width, "height": roi.height},
        "broker": f"{broker[0]}:{broker[1]} ({run.broker_kind})",
        "overrides": overrides or {},
        "machine": machine_info(),
        "load_avg_1m_daemon": [run.load_before, run.load_after],
        "stages": stages,
        "daemon": daemon,
        "ratios": ratios,
        "must_show": must,
    }


def _bench_stages(source: str, model: str, threads: int, roi: Any, part: float,
                  overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Stages (a) decode, (b) invoke and (c) preprocessing, each timed alone for ``part`` seconds."""
    from edge.config import DecisionConfig

    clf = Classifier.load(model, num_threads=threads)
    rois = _roi_frames(source, roi, 600)
    if not rois:
        raise ValueError(f"the source {source} delivered no frame")
    log.info("(a) decode ...")
    decode = bench_decode(source, part)
    log.info("(b) invoke ...")
    tensor = clf.runner.set_input(clf.preprocess(rois[len(rois) // 2]))
    invoke = bench_invoke(clf, tensor, part)
    log.info("(c) preprocessing ...")
    presence_cfg = DecisionConfig.model_validate(
        {"presence": {k.split(".", 2)[2]: v for k, v in (overrides or {}).items()
                      if k.startswith("decision.presence.")}}).presence
    pre = bench_preprocess(clf, rois, presence_cfg, part)
    return {"decode": decode, "invoke": invoke, **pre}


@dataclass
class _DaemonRun:
    """Stage (d): the daemon's trace and process figures, the broker it published to, the load around it."""

    trace: dict[str, Any]
    process: dict[str, Any]
    broker_kind: str
    load_before: float | None
    load_after: float | None


def _bench_daemon(source: str, model: str, threads: int, duration: float, roi: Any, broker: tuple[str, int],
                  overrides: dict[str, Any] | None, workdir: Path | None) -> _DaemonRun:
    """Stage (d): the daemon as its own process for ``duration`` s (after its warm-up), against ``broker``
    (a demo broker is started there when none answers)."""
    import tempfile

    from edge.deliver.broker import DemoBroker

    mqtt = DemoBroker(*broker)
    kind = mqtt.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-", dir=workdir) as tmp:
            cfg_path = daemon_config(Path(tmp), source, model, threads, roi, broker, overrides)
            log.info("(d) the daemon for %.0f s ...", duration)
            load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
            tr, child = run_daemon(cfg_path, duration + PIPELINE_WARMUP_S, Path(tmp))
            load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    finally:
        mqtt.stop()
    return _DaemonRun(tr, child, kind, load_before, load_after)


def _ratios(daemon: dict[str, Any], decode: dict[str, Any],
            invoke: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The daemon's throughput over the slower of decode and invoke, its end-to-end p99 over invoke's p99,
    and the two must-show verdicts (throughput >= 0.90 of the limit; e2e p99 <= 3 x invoke p99 + 5 ms)."""
    limit = min(decode["fps"], invoke["fps"])
    ratios: dict[str, Any] = {
        "throughput_over_limit": round(daemon["throughput_fps"] / limit, 3) if daemon["throughput_fps"] else None,
        "limit": "decode" if decode["fps"] <= invoke["fps"] else "invoke",
        "e2e_p99_over_invoke_p99": (round(daemon["e2e_read_to_puback"]["p99_ms"] / invoke["p99_ms"], 2)
                                    if daemon["e2e_read_to_puback"]["p99_ms"] else None),
    }
    e2e99 = daemon["e2e_read_to_puback"]["p99_ms"]
    must = {
        "throughput_ge_0.90_limit": bool(ratios["throughput_over_limit"] and ratios["throughput_over_limit"] >= 0.90),
        "e2e_p99_le_3x_invoke_p99_plus_5ms": bool(e2e99 is not None and e2e99 <= 3 * invoke["p99_ms"] + 5.0),
        "e2e_budget_ms": round(3 * invoke["p99_ms"] + 5.0, 2),
    }
    return ratios, must


def format_pipeline(res: dict[str, Any]) -> str:
    st, d, r = res["stages"], res["daemon"], res["ratios"]
    m = res["machine"]
    lines = [
        f"model    {res['model_id']} ({res['format']}, input {res['input']}, crop {res['crop']}), {res['threads']} thread(s)",
        f"source   {res['source']} ({st['decode'].get('frame')}), ROI {res['roi']}, broker {res['broker']}",
        f"machine  {m['cpu']}, {m['cores']} cores, load {m['load_avg_1m']} (during the daemon run: "
        f"{res['load_avg_1m_daemon'][0]} -> {res['load_avg_1m_daemon'][1]})",
        "",
        f"{'stage':28s} {'fps':>8s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s}",
    ]

    def row(name: str, s: dict[str, Any], fps: Any = None) -> None:
        fps = s.get("fps") if fps is None else fps
        lines.append(f"{name:28s} {fps if fps is not None else '-':>8} {s['p50_ms'] if s['p50_ms'] is not None else '-':>8} "
                     f"{s['p95_ms'] if s['p95_ms'] is not None else '-':>8} {s['p99_ms'] if s['p99_ms'] is not None else '-':>8}")

    row("(a) decode", st["decode"])
    row("(b) invoke", st["invoke"])
    row("(c) presence", st["presence"])
    row("(c) model input", st["model_input"])
    row("(d) daemon, loop per frame", d["loop_per_frame"], d["throughput_fps"])
    row("    scored frames", d["loop_per_scored_frame"], "")
    row("e2e read -> PUBACK", d["e2e_read_to_puback"], "")
    row("e2e decoded -> PUBACK", d["e2e_decoded_to_puback"], "")
    for k, v in d["e2e_parts"].items():
        row(f"  {k}", v, "")
    row("decision delay (gap frames)", d["decision_delay_gap_frames"], "")
    lines += [
        "",
        f"daemon   {d['frames']} frames in {d['seconds']} s ({d['scored_share']:.0%} scored), {d['decisions']} decisions, "
        f"{d['defects_acked']}/{d['defects']} defects acknowledged; CPU {d.get('cpu_percent_of_a_core')} % of a core, "
        f"peak RSS {d['max_rss_mb']} MB",
        f"ratios   throughput / min(decode, invoke) = {r['throughput_over_limit']} (limit: {r['limit']}); "
        f"e2e p99 / invoke p99 = {r['e2e_p99_over_invoke_p99']}",
        f"must     throughput >= 0.90 x limit: {res['must_show']['throughput_ge_0.90_limit']}; e2e p99 <= 3 x invoke p99 "
        f"+ 5 ms ({res['must_show']['e2e_budget_ms']} ms): {res['must_show']['e2e_p99_le_3x_invoke_p99_plus_5ms']}",
    ]
    return "\n".join(lines)


def pipeline_main(args: argparse.Namespace) -> int:
    return daemon_bench_main(args, "pipeline", bench_pipeline, format_pipeline)
