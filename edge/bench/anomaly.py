"""``boxinspect bench anomaly``: the numpy scoring of an anomaly package per crop, per bank size (issue 29).

For banks of 1k, 10k and 100k patch vectors (default; ``--banks``) of the package's patch dimension (``--model``
PACKAGE: its bank's rows are resampled to each size, else random vectors of 288 values on a 14 x 14 grid, the
recipe's shape): the time to score one crop's patch map (nearest bank vector of every cell, the crop's largest
distance) p50 / p99 over ``--runs`` crops after a warm-up, and the bank's memory (float32 vectors + their squared
norms). With ``--model`` the interpreter's invoke of the same package is timed too, so the two add up to the
crop's cost on this machine. numpy's BLAS threads follow OPENBLAS_NUM_THREADS / OMP_NUM_THREADS.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.bench.common import emit, machine_info
from edge.bench.model import latency_stats
from edge.judge.anomaly import AnomalyScorer, PatchCore
from edge.judge.classifier import Classifier, ModelError

log = logging.getLogger(__name__)

DEFAULT_BANKS = (1000, 10000, 100000)


def bench_anomaly(model: str | Path | None, banks: tuple[int, ...] = DEFAULT_BANKS, runs: int = 100,
                  warmup: int = 5, threads: int = 2, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    grid, base, clf = (14, 14, 288), None, None
    if model is not None:
        clf = Classifier.load(model, num_threads=threads)
        if clf.anomaly is None or clf.anomaly.patchcore is None or clf.metadata.anomaly is None:
            raise ModelError(f"{model}: not a patchcore anomaly package")
        grid = tuple(clf.metadata.anomaly.grid)  # type: ignore[assignment]
        base = clf.anomaly.patchcore.bank
    rows = []
    for n in banks:
        bank = (base[rng.integers(len(base), size=n)] + rng.normal(0, 0.01, (n, grid[2])).astype(np.float32)
                if base is not None else rng.random((n, grid[2]), np.float32))
        scorer = AnomalyScorer("patchcore", 1.0, patchcore=PatchCore(np.ascontiguousarray(bank, np.float32),
                                                                     np.zeros(n, np.int64)))
        maps = (bank[rng.integers(n, size=(runs + warmup, grid[0] * grid[1]))]
                + rng.normal(0, 0.1, (runs + warmup, grid[0] * grid[1], grid[2])).astype(np.float32))
        ms = []
        for i, m in enumerate(maps):
            t0 = time.perf_counter()
            scorer.score_map(m.reshape(grid))
            if i >= warmup:
                ms.append((time.perf_counter() - t0) * 1000.0)
        rows.append({"bank_rows": n, "dim": grid[2], "cells": grid[0] * grid[1],
                     "bank_mb": round(scorer.bank_bytes / 1e6, 2), **latency_stats(ms)})
    out: dict[str, Any] = {"machine": machine_info(), "grid": list(grid), "runs": runs, "results": rows}
    if clf is not None:
        rgb = np.zeros((clf.runner.height, clf.runner.width, 3), np.uint8)
        for _ in range(warmup):
            clf.runner.run_patches(rgb)
        inv = []
        for _ in range(runs):
            t0 = time.perf_counter()
            clf.runner.run_patches(rgb)
            inv.append((time.perf_counter() - t0) * 1000.0)
        out["model"] = {"path": str(model), "model_id": clf.model_id, "format": clf.metadata.format,
                        "threads": threads, "shipped_bank_rows": clf.anomaly.bank_rows if clf.anomaly else 0,
                        # one bank per view (a crop is scored by one of them): their rows, and all banks' memory
                        "view_bank_rows": {v: sc.bank_rows for v, sc in clf.anomaly.views.items()} if clf.anomaly else {},
                        "banks_mb": round(clf.anomaly.bank_bytes / 1e6, 2) if clf.anomaly else 0.0,
                        "invoke": latency_stats(inv)}
    return out


def format_anomaly(res: dict[str, Any]) -> str:
    lines = [f"{'bank rows':>10s} {'bank MB':>8s} {'p50 ms':>8s} {'p99 ms':>8s}  (score one crop: "
             f"{res['grid'][0]}x{res['grid'][1]} cells x {res['grid'][2]} values)"]
    for r in res["results"]:
        lines.append(f"{r['bank_rows']:>10d} {r['bank_mb']:>8.2f} {r['median_ms']:>8.2f} {r['p99_ms']:>8.2f}")
    if "model" in res:
        m = res["model"]
        lines.append(f"invoke of {m['model_id']} ({m['format']}, {m['threads']} threads): p50 "
                     f"{m['invoke']['median_ms']:.2f} ms, p99 {m['invoke']['p99_ms']:.2f} ms; shipped bank "
                     f"{m['shipped_bank_rows']} rows"
                     + "".join(f", view {v} {n} rows" for v, n in m.get("view_bank_rows", {}).items())
                     + f" ({m.get('banks_mb', 0):.2f} MB in all)")
    return "\n".join(lines)


def anomaly_main(args: argparse.Namespace) -> int:
    try:
        banks = tuple(int(v) for v in str(getattr(args, "banks", None) or "1000,10000,100000").split(","))
        res = bench_anomaly(args.pipeline_model, banks, runs=args.runs, warmup=min(args.warmup, 10),
                            threads=int(str(args.threads).split(",")[0]))
    except (ModelError, ValueError) as e:
        log.error("%s", e)
        return 2
    emit(format_anomaly(res), sys.stdout)
    if args.json_out:
        import json

        Path(args.json_out).write_text(json.dumps(res, indent=1))
    return 0
