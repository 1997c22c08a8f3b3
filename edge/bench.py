"""``boxinspect bench MODEL``: latency of the interpreter per thread count, on this machine.

Two timings per setting, both on the model's golden samples (random input if it has none):
  invoke      set the prepared input tensor + invoke + read the output (what the runtime costs)
  pre+invoke  Classifier.score() on a 640x480 BGR frame: resize + colour conversion + quantisation + invoke
Only the median/p90/p99 of many runs after a warm-up mean anything; never compare single runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np

from edge.classifier import Classifier, ModelError
from edge.model_package import decode_golden
from edge.versions import installed_versions

log = logging.getLogger(__name__)

FRAME_W, FRAME_H = 640, 480


def _emit(text: str, stream: TextIO | None = None) -> None:
    (stream or sys.stdout).write(text + "\n")


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        info: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if ":" in line:
                key, val = line.split(":", 1)
                info.setdefault(key.strip().lower(), val.strip())
        # x86: "model name"; Raspberry Pi: "Model" (board) or "Hardware"; "model" on x86 is just a number
        for key in ("model name", "hardware", "model"):
            if info.get(key) and not info[key].isdigit():
                cpu = info[key]
                break
    except OSError:
        pass
    versions = installed_versions("ai-edge-litert", "tflite-runtime", "tensorflow", "tensorflow-cpu", "numpy",
                                "opencv-python-headless")
    return {
        "cpu": cpu,
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "commit": _commit(),
    }


def _commit() -> str | None:
    """The git commit of this code (with ``+dirty`` for uncommitted changes), or None outside a checkout."""
    repo = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "") if rev else None


def _stats(ms: list[float]) -> dict[str, Any]:
    a = np.asarray(ms)
    return {
        "median_ms": round(float(np.median(a)), 3),
        "p90_ms": round(float(np.percentile(a, 90)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "mean_ms": round(float(a.mean()), 3),
        "min_ms": round(float(a.min()), 3),
    }


def bench_model(model: str | Path, threads: list[int], runs: int = 200, warmup: int = 20) -> dict[str, Any]:
    """Time ``model`` at each thread count; returns a JSON-able dict (machine, model, results)."""
    rows = []
    clf = None
    for t in threads:
        clf = Classifier.load(model, num_threads=t)
        meta = clf.metadata
        if meta.golden:
            samples = [decode_golden(g.png_b64) for g in meta.golden]
        else:
            rng = np.random.default_rng(0)
            samples = [rng.integers(0, 256, (meta.input.height, meta.input.width, 3), dtype=np.uint8)]
        tensors = [clf.runner.set_input(s) for s in samples]
        frames = [cv2.resize(cv2.cvtColor(s, cv2.COLOR_RGB2BGR), (FRAME_W, FRAME_H)) for s in samples]
        for i in range(warmup):
            clf.runner.invoke(tensors[i % len(tensors)])
        inv, full = [], []
        for i in range(runs):
            x = tensors[i % len(tensors)]
            t0 = time.perf_counter()
            clf.runner.invoke(x)
            inv.append((time.perf_counter() - t0) * 1000)
        for i in range(warmup):
            clf.score(frames[i % len(frames)])
        for i in range(runs):
            f = frames[i % len(frames)]
            t0 = time.perf_counter()
            clf.score(f)
            full.append((time.perf_counter() - t0) * 1000)
        rows.append({"threads": t, "invoke": _stats(inv), "preprocess_invoke": _stats(full)})
        log.debug("threads=%d done", t)
    assert clf is not None
    return {
        "model": str(model),
        "model_id": clf.model_id,
        "format": clf.metadata.format,
        "size_bytes": clf.metadata.size_bytes,
        "input": f"{clf.metadata.input.width}x{clf.metadata.input.height} {clf.metadata.input.dtype}",
        "runtime": clf.runtime_name,
        "delegate": clf.delegate,
        "runs": runs,
        "warmup": warmup,
        "frame": f"{FRAME_W}x{FRAME_H} BGR",
        "machine": machine_info(),
        "results": rows,
    }


def bench_shadow(model: str | Path, candidate: str | Path, threads: int = 2, runs: int = 200,
                 warmup: int = 20) -> dict[str, Any]:
    """What shadow mode (edge/shadow.py) costs per box with ``candidate`` beside ``model``: the live invoke with
    and without its features, the candidate's own invoke (any candidate: a second invoke in the shadow worker)
    and, for a head-only candidate on the live backbone, its head on the live features (a dot product)."""
    from edge.shadow import head_on_backbone_of

    live = Classifier.load(model, num_threads=threads)
    cand = Classifier.load(candidate, num_threads=threads)
    meta = live.metadata
    samples = [decode_golden(g.png_b64) for g in meta.golden] or [
        np.random.default_rng(0).integers(0, 256, (meta.input.height, meta.input.width, 3), dtype=np.uint8)]
    fast = head_on_backbone_of(cand, live)
    feats = [live.score_features_rgb(s)[1] for s in samples] if live.has_features else []

    def timed(fn: Any, n: int) -> dict[str, Any]:
        for i in range(warmup):
            fn(i)
        ms = []
        for i in range(n):
            t0 = time.perf_counter()
            fn(i)
            ms.append((time.perf_counter() - t0) * 1000)
        return _stats(ms)

    k = len(samples)
    rows: dict[str, Any] = {
        "live_invoke": timed(lambda i: live.score_rgb(samples[i % k]), runs),
        "live_invoke_with_features": timed(lambda i: live.score_features_rgb(samples[i % k]), runs)
        if live.has_features else None,
        "candidate_invoke": timed(lambda i: cand.score_rgb(samples[i % k]), runs),
        "candidate_head_on_live_features": timed(lambda i: cand.head_score(feats[i % k]), runs * 10)
        if fast and feats else None,
    }
    return {"model_id": live.model_id, "candidate_id": cand.model_id, "threads": threads, "runs": runs,
            "fast_path": fast, "input": f"{meta.input.width}x{meta.input.height} {meta.input.dtype}",
            "machine": machine_info(), "results": rows}


def format_shadow(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [
        f"live       {res['model_id']} (input {res['input']}, {res['threads']} thread(s))",
        f"candidate  {res['candidate_id']}: " + ("a head on the live backbone, judged from the live features"
                                                if res["fast_path"] else "judged by its own invoke in the shadow worker"),
        f"machine    {m['cpu']} ({m['machine']}), {m['cores']} cores, load {m['load_avg_1m']}",
        "",
        f"{'':34s} {'median':>10s} {'p90':>9s} {'p99':>9s}",
    ]
    for name, r in res["results"].items():
        if r is not None:
            lines.append(f"{name:34s} {r['median_ms']:>7.3f} ms {r['p90_ms']:>9.3f} {r['p99_ms']:>9.3f}")
    return "\n".join(lines)


def format_table(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [
        f"model    {res['model_id']} ({res['format']}, {res['size_bytes'] / 1e6:.2f} MB, input {res['input']})",
        f"runtime  {res['runtime']} delegate={res['delegate']} "
        + " ".join(f"{k}={v}" for k, v in m["versions"].items() if k in ("ai-edge-litert", "tflite-runtime")),
        f"machine  {m['cpu']} ({m['machine']}), {m['cores']} cores, load {m['load_avg_1m']}, {m['platform']}",
        f"runs     {res['runs']} after {res['warmup']} warm-up; pre+invoke = score() on a {res['frame']} frame",
        "",
        f"{'threads':>7s} | {'invoke median':>13s} {'p90':>7s} {'p99':>7s} | {'pre+invoke median':>17s} {'p90':>7s} {'p99':>7s}",
    ]
    for r in res["results"]:
        a, b = r["invoke"], r["preprocess_invoke"]
        lines.append(
            f"{r['threads']:>7d} | {a['median_ms']:>10.2f} ms {a['p90_ms']:>7.2f} {a['p99_ms']:>7.2f} | "
            f"{b['median_ms']:>14.2f} ms {b['p90_ms']:>7.2f} {b['p99_ms']:>7.2f}"
        )
    return "\n".join(lines)


def _parse_roi(text: str | None) -> Any:
    from edge.config import RoiConfig

    if not text:
        return RoiConfig()
    x, y, w, h = (int(v) for v in text.split(","))
    return RoiConfig(x=x, y=y, width=w, height=h)


def _roi_from_ground_truth(source: str) -> str | None:
    """``boxinspect synth --video`` writes the ROI into conveyor.json beside the video."""
    gt = Path(source).with_suffix(".json")
    try:
        r = json.loads(gt.read_text())["roi"]
        return f"{r['x']},{r['y']},{r['width']},{r['height']}"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _daemon_bench_main(args: argparse.Namespace, what: str, run: Callable[..., dict[str, Any]],
                       summary: Callable[[dict[str, Any]], str]) -> int:
    """The CLI of the three daemon benches (pipeline, idle, soak): check the arguments, run, print the summary,
    write the JSON. Exit 2 for bad arguments, 1 when the run fails."""
    import yaml

    if not args.source or not args.pipeline_model:
        _emit(f"error: bench {what} needs --source VIDEO and --model MODEL.tflite", sys.stderr)
        return 2
    try:
        threads = int(str(args.threads).split(",")[0])
        roi = _parse_roi(args.roi or _roi_from_ground_truth(args.source))
        host, _, port = args.broker.rpartition(":")
        broker = (host, int(port))
        overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    except (ValueError, TypeError) as e:
        _emit(f"error: {e}", sys.stderr)
        return 2
    try:
        res = run(args.source, args.pipeline_model, threads, args.duration, roi=roi, broker=broker, overrides=overrides)
    except (ModelError, ValueError, RuntimeError) as e:
        _emit(f"error: {e}", sys.stderr)
        return 1
    _emit(summary(res))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    return 0


def pipeline_main(args: argparse.Namespace) -> int:
    return _daemon_bench_main(args, "pipeline", bench_pipeline, format_pipeline)


def main(args: argparse.Namespace) -> int:
    if args.model == "pipeline":
        return pipeline_main(args)
    if args.model == "idle":
        return idle_main(args)
    if args.model == "soak":
        return soak_main(args)
    try:
        threads = [int(t) for t in str(args.threads).split(",") if t.strip()]
        if not threads or min(threads) < 1:
            raise ValueError
    except ValueError:
        _emit(f"error: --threads must be comma-separated positive integers, got {args.threads!r}", sys.stderr)
        return 2
    if args.runs < 1 or args.warmup < 0:
        _emit("error: --runs must be >= 1 and --warmup >= 0", sys.stderr)
        return 2
    try:
        if getattr(args, "candidate", None):
            res = bench_shadow(args.model, args.candidate, threads[0], runs=args.runs, warmup=args.warmup)
        else:
            res = bench_model(args.model, threads, runs=args.runs, warmup=args.warmup)
    except ModelError as e:
        _emit(f"error: {e}", sys.stderr)
        return 2
    _emit(format_shadow(res) if "candidate_id" in res else format_table(res))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    return 0


# --------------------------------------------------------------------------------------------------
# `boxinspect bench pipeline`: the whole frame path against its two limits, decoding and the interpreter
# --------------------------------------------------------------------------------------------------

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
    from edge.roi import crop

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
    from edge.decision import ForegroundDetector

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


def _daemon_config(workdir: Path, source: str, model: str, threads: int, roi: Any, broker: tuple[str, int],
                   overrides: dict[str, Any] | None = None) -> Path:
    import yaml

    cfg: dict[str, Any] = {
        "line": "bench",
        "camera": "pipeline",
        "source": {"uri": str(Path(source).resolve()), "pace": "fast", "loop": True, "exit_on_end": False},
        "roi": {"x": roi.x, "y": roi.y, "width": roi.width, "height": roi.height},
        "model": {"path": str(Path(model).resolve()), "num_threads": threads},
        "mqtt": {"enabled": True, "host": broker[0], "port": broker[1], "base_topic": f"bench{os.getpid()}",
                 "client_id": f"boxinspect-bench-{os.getpid()}",  # two benches on one broker must not evict each other
                 "outbox_path": str(workdir / "outbox.sqlite3"), "stats_interval_s": 5},
        "evidence": {"enabled": True, "dir": str(workdir / "evidence")},
        "api": {"enabled": True, "host": "127.0.0.1", "port": 0},
        "logging": {"level": "INFO"},
    }
    for key, value in (overrides or {}).items():
        node = cfg
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path = workdir / "daemon.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def start_daemon(cfg_path: Path, workdir: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    """``boxinspect run --config CFG [extra]`` as its own process, its log in ``workdir/daemon.log``; returns once
    the daemon logs that it is inspecting (or raises with the log's tail)."""
    logf = workdir / "daemon.log"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    with open(logf, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "boxinspect.cli", "run", "--config", str(cfg_path), *extra],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    deadline = time.monotonic() + 120
    while "running: line=" not in logf.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_daemon(proc, 5)
            raise RuntimeError("the daemon did not start:\n" + logf.read_text(errors="replace")[-3000:])
        time.sleep(0.1)
    return proc, logf


def stop_daemon(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
    import tempfile

    from edge.broker import DemoBroker
    from edge.config import DecisionConfig, RoiConfig

    roi = roi or RoiConfig()
    part = max(3.0, duration / 4)
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
    del clf
    mqtt = DemoBroker(*broker)
    kind = mqtt.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-", dir=workdir) as tmp:
            cfg_path = _daemon_config(Path(tmp), source, model, threads, roi, broker, overrides)
            log.info("(d) the daemon for %.0f s ...", duration)
            load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
            tr, child = run_daemon(cfg_path, duration + PIPELINE_WARMUP_S, Path(tmp))
            load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    finally:
        mqtt.stop()
    daemon = analyse_trace(tr)
    daemon["process"] = child
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
        "broker": f"{broker[0]}:{broker[1]} ({kind})",
        "overrides": overrides or {},
        "machine": machine_info(),
        "load_avg_1m_daemon": [load_before, load_after],
        "stages": {"decode": decode, "invoke": invoke, **pre},
        "daemon": daemon,
        "ratios": ratios,
        "must_show": must,
    }


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


# --------------------------------------------------------------------------------------------------
# `boxinspect bench idle`: belt empty, camera still, the daemon at the camera's pace
# --------------------------------------------------------------------------------------------------

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


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_idle(source: str, model: str, threads: int = 1, duration: float = 30.0, roi: Any = None,
               broker: tuple[str, int] = ("127.0.0.1", 1883), overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """CPU of the daemon process (all threads) on an empty, still belt at the camera's pace (``pace: realtime``)."""
    import tempfile

    from edge.broker import DemoBroker
    from edge.config import RoiConfig

    roi = roi or RoiConfig()
    mqtt = DemoBroker(*broker)
    kind = mqtt.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
            video, fps = _idle_video(source, Path(tmp) / "idle.mp4")
            over = {"source.pace": "realtime", **(overrides or {})}
            cfg_path = _daemon_config(Path(tmp), str(video), model, threads, roi, broker, over)
            proc, logf = start_daemon(cfg_path, Path(tmp))
            try:
                time.sleep(IDLE_SETTLE_S)
                cam0 = _camera_counts(logf)  # outside the window: the request costs the daemon a little CPU
                load0 = os.getloadavg()[0]
                c0, t0 = _proc_cpu_s(proc.pid), time.monotonic()
                time.sleep(duration)
                c1, t1 = _proc_cpu_s(proc.pid), time.monotonic()
                load1 = os.getloadavg()[0]
                cam1 = _camera_counts(logf)
                rss = [ln for ln in Path(f"/proc/{proc.pid}/status").read_text().splitlines() if ln.startswith("VmRSS")]
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
        "rss": rss[0].split(":", 1)[1].strip() if rss else None,
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
    return _daemon_bench_main(
        args, "idle", bench_idle,
        lambda res: f"idle: {res['cpu_percent_of_a_core']} % of a core over {res['seconds']} s ({res['source']}); "
                    f"RSS {res['rss']}; load {res['load_avg_1m']}; camera {res['camera']}")


# --------------------------------------------------------------------------------------------------
# `boxinspect bench soak`: the daemon at pace fast for a long time, its RSS sampled
# --------------------------------------------------------------------------------------------------


def _rss_mb(pid: int) -> float | None:
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        if ln.startswith("VmRSS:"):
            return round(int(ln.split()[1]) / 1024, 1)
    return None


def bench_soak(source: str, model: str, threads: int = 1, duration: float = 600.0, every: float = 10.0,
               roi: Any = None, broker: tuple[str, int] = ("127.0.0.1", 1883),
               overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The daemon (pace fast, looped source, MQTT, evidence and API on) for ``duration`` s, RSS every ``every`` s."""
    import tempfile

    from edge.broker import DemoBroker
    from edge.config import RoiConfig

    roi = roi or RoiConfig()
    mqtt = DemoBroker(*broker)
    kind = mqtt.start()
    samples: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
            cfg_path = _daemon_config(Path(tmp), source, model, threads, roi, broker, overrides)
            proc, logf = start_daemon(cfg_path, Path(tmp))
            try:
                t0 = time.monotonic()
                c0 = _proc_cpu_s(proc.pid)
                while True:
                    t = time.monotonic() - t0
                    samples.append({"t_s": round(t, 1), "rss_mb": _rss_mb(proc.pid),
                                    "cpu_s": round(_proc_cpu_s(proc.pid) - c0, 1), "load_1m": os.getloadavg()[0]})
                    if t >= duration or proc.poll() is not None:
                        break
                    time.sleep(min(every, max(0.0, duration - t)))
            finally:
                stop_daemon(proc, 60)
            text = logf.read_text(errors="replace")
    finally:
        mqtt.stop()
    rss = [s["rss_mb"] for s in samples if s["rss_mb"] is not None]
    status = [ln for ln in text.splitlines() if "status: fps=" in ln or "stopped: frames=" in ln]
    return {
        "kind": "soak",
        "source": str(source),
        "model": str(model),
        "threads": threads,
        "broker": f"{broker[0]}:{broker[1]} ({kind})",
        "overrides": overrides or {},
        "duration_s": duration,
        "rss_mb": {"start": rss[0] if rss else None, "end": rss[-1] if rss else None, "max": max(rss) if rss else None},
        "exit_code": proc.returncode,
        "samples": samples,
        "status_lines": status[-3:],
        "errors": [ln for ln in text.splitlines() if " ERROR " in ln][:5],
        "machine": machine_info(),
    }


def _soak_summary(res: dict[str, Any]) -> str:
    r = res["rss_mb"]
    return (f"soak: {res['duration_s']:g} s at pace fast, RSS start {r['start']} MB, end {r['end']} MB, max {r['max']} MB; "
            f"exit {res['exit_code']}; {res['status_lines'][-1] if res['status_lines'] else ''}")


def soak_main(args: argparse.Namespace) -> int:
    return _daemon_bench_main(args, "soak", bench_soak, _soak_summary)
