"""Per-frame cost of the localiser with and without a learned empty-belt model (issue 25), 960x540 belt frames.

Times (median of ``--repeat`` passes over ``--frames`` frames, time.perf_counter, one thread for OpenCV):
``locate`` without a model (auto: salient + texture), ``locate`` with a BeltModel, the daemon's
``BeltLearner.observe`` of one empty frame (features only, and with a refit from 48 frames).

    python studies/time_belt_localizer.py [--frames 10] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import time

import cv2
import numpy as np

from boxinspect.synth.belt import render_belt_part
from edge.judge import localize
from edge.judge.beltmodel import BeltLearner, BeltModel


def _median_ms(fn, items, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        for it in items:
            t0 = time.perf_counter()
            fn(it)
            times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    spec = localize.CropSpec()
    empties = [render_belt_part(101, 100000 + 4 * k, "ok", None, 0, empty=True)["empty"]["top"] for k in range(48)]
    frames = [render_belt_part(101, 4 * k, "ok", None, 0)["views"]["top"] for k in range(args.frames)]
    model = BeltModel.fit(empties[:16], spec.work_size)
    learner = BeltLearner(capacity=48, refit_every=10**9)
    for f in empties[:47]:
        learner.observe(f)
    res = {
        "locate, no model (auto: salient + texture)": _median_ms(lambda f: localize.locate(f, spec), frames, args.repeat),
        "locate with the belt model": _median_ms(lambda f: localize.locate(f, spec, belt=model), frames, args.repeat),
        "learner.observe (features of one frame)": _median_ms(learner.observe, empties[:10], args.repeat),
        "BeltModel fit from 48 frames' features (trimmed)": _median_ms(
            lambda _: BeltModel.from_features(list(learner._feats), model.frame_shape, spec.work_size, 0.05),
            range(3), 1),
    }
    print(f"load average {os.getloadavg()[0]:.1f}, OpenCV threads 1")  # noqa: T201
    for k, v in res.items():
        print(f"{k:50s} {v:7.1f} ms")  # noqa: T201


if __name__ == "__main__":
    main()
