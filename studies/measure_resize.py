"""What the model-input interpolation costs in accuracy and time (issue 13, docs/BENCHMARKS.md).

For every frame of VIDEO whose ROI holds a box (per the synth ground truth, the box fully inside), the model input
is made with INTER_AREA (what training used), INTER_LINEAR and INTER_NEAREST, straight from the ROI to the model
size; reports the time per resize, the score differences to INTER_AREA and how many frames change side of the
model's threshold.

    python studies/measure_resize.py MODEL.tflite VIDEO.mp4     # VIDEO.json (from boxinspect synth) beside it
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.judge.classifier import Classifier

MODES = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("video", type=Path)
    args = ap.parse_args()
    gt = json.loads(args.video.with_suffix(".json").read_text())
    r = gt["roi"]
    inside = {i for b in gt["boxes"] for i in range(b["full_start"], b["full_end"] + 1)}
    clf = Classifier.load(args.model, num_threads=1)
    h, w = clf.runner.height, clf.runner.width
    cap = cv2.VideoCapture(str(args.video))
    scores: dict[str, list[float]] = {m: [] for m in MODES}
    times: dict[str, list[float]] = {m: [] for m in MODES}
    i = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        if i in inside:
            roi = img[r["y"]:r["y"] + r["height"], r["x"]:r["x"] + r["width"]]
            for m, interp in MODES.items():
                t0 = time.perf_counter()
                x = cv2.cvtColor(cv2.resize(roi, (w, h), interpolation=interp), cv2.COLOR_BGR2RGB)
                times[m].append(time.perf_counter() - t0)
                scores[m].append(clf.score_rgb(x))
        i += 1
    thr = clf.threshold
    ref = np.asarray(scores["area"])
    out = {"model": str(args.model), "video": str(args.video), "frames": len(ref), "threshold": thr, "modes": {}}
    for m in MODES:
        s = np.asarray(scores[m])
        out["modes"][m] = {
            "resize_ms_median": round(float(np.median(times[m])) * 1000, 3),
            "max_abs_dscore": round(float(np.abs(s - ref).max()), 4),
            "mean_abs_dscore": round(float(np.abs(s - ref).mean()), 4),
            "frames_flipped": int(((s >= thr) != (ref >= thr)).sum()),
        }
    sys.stdout.write(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
