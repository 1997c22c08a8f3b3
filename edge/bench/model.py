"""``boxinspect bench MODEL``: latency of the interpreter per thread count, on this machine.

Two timings per setting, both on the model's golden samples (random input if it has none):
  invoke      set the prepared input tensor + invoke + read the output (what the runtime costs)
  pre+invoke  Classifier.score() on a 640x480 BGR frame: resize + colour conversion + quantisation + invoke
An anomaly package (issue 29) has no score output: its "invoke" is set input + invoke (the patch map is not read)
and its "pre+invoke" includes reading the patch map and scoring it against the package's bank (numpy), i.e. the
whole per-crop cost; ``bench anomaly`` gives the scoring alone per bank size. A package with a map (an anomaly
package, or a supervised one with the ``cells`` output, edge/judge/head_map.py) adds
  pre+invoke+map  what the daemon runs per frame: the score, the features and the map of the crop (heatmap.heat_of)
Only the median/p90/p99 of many runs after a warm-up mean anything; never compare single runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.bench.common import emit, machine_info
from edge.judge.classifier import Classifier, ModelError
from edge.judge.heatmap import heat_of
from edge.judge.model_package import decode_golden

log = logging.getLogger(__name__)

FRAME_W, FRAME_H = 640, 480


def latency_stats(ms: list[float]) -> dict[str, Any]:
    a = np.asarray(ms)
    return {
        "median_ms": round(float(np.median(a)), 3),
        "p90_ms": round(float(np.percentile(a, 90)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "mean_ms": round(float(a.mean()), 3),
        "min_ms": round(float(a.min()), 3),
    }


def _timed(fn: Any, items: list[Any], runs: int, warmup: int) -> dict[str, Any]:
    """Latency of ``fn(item)`` over ``runs`` calls cycling through ``items``, after ``warmup`` untimed ones."""
    for i in range(warmup):
        fn(items[i % len(items)])
    ms = []
    for i in range(runs):
        t0 = time.perf_counter()
        fn(items[i % len(items)])
        ms.append((time.perf_counter() - t0) * 1000)
    return latency_stats(ms)


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
        invoke = clf.runner.invoke_only if clf.anomaly is not None else clf.runner.invoke
        row: dict[str, Any] = {"threads": t, "invoke": _timed(invoke, tensors, runs, warmup),
                               "preprocess_invoke": _timed(clf.score, frames, runs, warmup)}
        if clf.map_kind is not None:  # the daemon's per-frame path: score, features and the map (edge/judge/heatmap.py)
            row["preprocess_invoke_map"] = _timed(lambda f, c=clf: heat_of(c, f, None), frames, runs, warmup)
        rows.append(row)
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
        "anomaly_bank_rows": clf.anomaly.bank_rows if clf.anomaly is not None else None,
        "machine": machine_info(),
        "results": rows,
    }


def bench_shadow(model: str | Path, candidate: str | Path, threads: int = 2, runs: int = 200,
                 warmup: int = 20) -> dict[str, Any]:
    """What shadow mode (edge/learn/shadow.py) costs per box with ``candidate`` beside ``model``: the live invoke with
    and without its features, the candidate's own invoke (any candidate: a second invoke in the shadow worker)
    and, for a head-only candidate on the live backbone, its head on the live features (a dot product)."""
    from edge.learn.shadow import head_on_backbone_of

    live = Classifier.load(model, num_threads=threads)
    cand = Classifier.load(candidate, num_threads=threads)
    meta = live.metadata
    samples = [decode_golden(g.png_b64) for g in meta.golden] or [
        np.random.default_rng(0).integers(0, 256, (meta.input.height, meta.input.width, 3), dtype=np.uint8)]
    fast = head_on_backbone_of(cand, live)
    feats = [live.score_features_rgb(s)[1] for s in samples] if live.has_features else []

    rows: dict[str, Any] = {
        "live_invoke": _timed(live.score_rgb, samples, runs, warmup),
        "live_invoke_with_features": _timed(live.score_features_rgb, samples, runs, warmup)
        if live.has_features else None,
        "candidate_invoke": _timed(cand.score_rgb, samples, runs, warmup),
        "candidate_head_on_live_features": _timed(cand.head_score, feats, runs * 10, warmup)
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
        *([f"anomaly  pre+invoke includes scoring the patch map against the bank ({res['anomaly_bank_rows']} rows); "
           "per bank size: boxinspect bench anomaly --model PACKAGE"] if res.get("anomaly_bank_rows") else []),
        "",
        f"{'threads':>7s} | {'invoke median':>13s} {'p90':>7s} {'p99':>7s} | {'pre+invoke median':>17s} {'p90':>7s} {'p99':>7s}",
    ]
    with_map = any("preprocess_invoke_map" in r for r in res["results"])
    if with_map:
        lines[-1] += f" | {'+map median':>11s} {'p90':>7s} {'p99':>7s}"
    for r in res["results"]:
        a, b = r["invoke"], r["preprocess_invoke"]
        line = (f"{r['threads']:>7d} | {a['median_ms']:>10.2f} ms {a['p90_ms']:>7.2f} {a['p99_ms']:>7.2f} | "
                f"{b['median_ms']:>14.2f} ms {b['p90_ms']:>7.2f} {b['p99_ms']:>7.2f}")
        if "preprocess_invoke_map" in r:
            c = r["preprocess_invoke_map"]
            line += f" | {c['median_ms']:>8.2f} ms {c['p90_ms']:>7.2f} {c['p99_ms']:>7.2f}"
        lines.append(line)
    return "\n".join(lines)


def model_main(args: argparse.Namespace) -> int:
    """``boxinspect bench MODEL``: check the arguments, time the interpreter (with ``--candidate``: shadow mode's
    cost), print the table, write the JSON."""
    try:
        threads = [int(t) for t in str(args.threads).split(",") if t.strip()]
        if not threads or min(threads) < 1:
            raise ValueError
    except ValueError:
        emit(f"error: --threads must be comma-separated positive integers, got {args.threads!r}", sys.stderr)
        return 2
    if args.runs < 1 or args.warmup < 0:
        emit("error: --runs must be >= 1 and --warmup >= 0", sys.stderr)
        return 2
    try:
        if getattr(args, "candidate", None):
            res = bench_shadow(args.model, args.candidate, threads[0], runs=args.runs, warmup=args.warmup)
        else:
            res = bench_model(args.model, threads, runs=args.runs, warmup=args.warmup)
    except ModelError as e:
        emit(f"error: {e}", sys.stderr)
        return 2
    emit(format_shadow(res) if "candidate_id" in res else format_table(res))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    return 0
