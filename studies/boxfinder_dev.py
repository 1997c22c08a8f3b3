"""Score a learned box finder .tflite (``boxinspect boxfinder build``) on synth data sets with known boxes.

Runs the edge BoxFinder (LiteRT, no TensorFlow) on every photo of each DATA (a synth set with ``parts.json``),
decodes the probability grid at each ``--thr`` and scores as ``studies/learned_box.py eval`` does: IoU >= 0.8
share (a "no box" counts as a miss), IoU >= 0.5 share, "no box" share, per set and per view; plus ms per frame
(grid only, after one warm-up); ``--empty``: boxes found on the empty-belt frames. DEV sets only (line 7, belt 31, belt 32); the held-out sets are not for tuning.

    PYTHONPATH=. python studies/boxfinder_dev.py /work/wt/s35self/runs/{line7,belt31,belt32} \
        --finder runs/boxfinder/finder10.tflite --thr 0.5 0.7 0.8 0.85 0.9 --json runs/boxfinder/dev.json
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.judge.boxfinder import BoxFinder, decode
from edge.judge.crops import known_views
from edge.judge.localize import iou

log = logging.getLogger("boxfinder_dev")


def score_set(data: Path, finder: BoxFinder, thrs: list[float]) -> dict[str, Any]:
    rows: dict[str, list[dict[str, Any]]] = {str(t): [] for t in thrs}
    ms = []
    for t in known_views(data):
        bgr = cv2.imread(str(data / t["file"]), cv2.IMREAD_COLOR)
        t0 = time.perf_counter()
        prob = finder.probabilities(bgr)
        ms.append(1000 * (time.perf_counter() - t0))
        for thr in thrs:
            got = decode(prob, bgr.shape[:2], thr)
            rows[str(thr)].append({"view": t["view"], "nobox": got.box is None,
                                   "iou": iou(got.box, t["bbox"]) if got.box else 0.0})
    out: dict[str, Any] = {"ms_per_frame": float(np.median(ms[1:])) if len(ms) > 1 else None, "thr": {}}
    for thr, rs in rows.items():
        out["thr"][thr] = {v: _stats([r for r in rs if v == "all" or r["view"] == v]) for v in ("all", "top", "oblique")}
        a = out["thr"][thr]["all"]
        log.info("%-8s thr %-5s IoU>=0.8 %5.1f%% (top %5.1f, obl %5.1f)  IoU>=0.5 %5.1f%%  nobox %4.1f%%  n %d",
                 data.name, thr, 100 * a["iou08"], 100 * out["thr"][thr]["top"]["iou08"],
                 100 * out["thr"][thr]["oblique"]["iou08"], 100 * a["iou05"], 100 * a["nobox"], a["n"])
    return out


def empty_set(data: Path, finder: BoxFinder, thrs: list[float]) -> dict[str, Any]:
    """False boxes on a synth belt set's empty-belt frames (``DATA/empty/**``): frames with a box, per threshold."""
    frames = sorted(p for p in (data / "empty").rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    grids = [(finder.probabilities(img), img.shape[:2])
             for img in (cv2.imread(str(p), cv2.IMREAD_COLOR) for p in frames)]
    out = {str(t): sum(decode(g, shape, t).box is not None for g, shape in grids) for t in thrs}
    log.info("%s empty belt: %d frames, frames with a box per threshold %s", data.name, len(frames), out)
    return {"frames": len(frames), "boxes": out}


def _stats(rs: list[dict[str, Any]]) -> dict[str, float]:
    if not rs:
        return {"iou08": 0.0, "iou05": 0.0, "nobox": 0.0, "n": 0}
    return {"iou08": float(np.mean([r["iou"] >= 0.8 for r in rs])), "iou05": float(np.mean([r["iou"] >= 0.5 for r in rs])),
            "nobox": float(np.mean([r["nobox"] for r in rs])), "n": len(rs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, nargs="+")
    ap.add_argument("--finder", type=Path, required=True)
    ap.add_argument("--thr", type=float, nargs="+", default=[0.85])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--empty", action="store_true", help="count boxes on DATA/empty/** (empty belt) instead")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    finder = BoxFinder(a.finder, num_threads=a.threads)
    res = {d.name: empty_set(d, finder, a.thr) if a.empty else score_set(d, finder, a.thr) for d in a.data}
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
