"""Does a supervised package's map (edge/judge/head_map.py) point at the defect? The "halves" check (issue 29).

Synth line scenes carry no defect location, so: for each pair (a defective part's photo, a good part's photo) take
the package's own crop of each (its localiser), put the left half of one beside the right half of the other, and
score that crop with the map. The map points at the defect when the defective side's cells have the higher mean
log-odds (``rate``), or when its hottest cell lies on the defective side (``rate_hottest``, the anomaly recipe's
rule). Chance is 50 %; it is a lower bound, since the defect may lie in the half that was cut away. Both sides are
shown defect-left and defect-right in turn.

    python studies/head_map_halves.py PACKAGE.tflite DATA_DIR [--pairs 80] [--json OUT]

DATA_DIR holds ``defective/`` and ``ok/`` (``boxinspect synth --scenes line``); both views are used.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import cv2
import numpy as np

from edge.judge.classifier import Classifier
from edge.judge.heatmap import heat_of
from edge.judge.localize import already_cropped

log = logging.getLogger("head_map_halves")


def crop_of(clf: Classifier, path: Path) -> np.ndarray:
    """The package's model input of a photo, back in BGR."""
    return cv2.cvtColor(clf.preprocess(cv2.imread(str(path))), cv2.COLOR_RGB2BGR)


def halves(defect: np.ndarray, good: np.ndarray, defect_left: bool) -> np.ndarray:
    w = good.shape[1]
    left, right = (defect, good) if defect_left else (good, defect)
    return np.concatenate([left[:, : w // 2], right[:, w // 2:]], axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("package")
    ap.add_argument("data", type=Path)
    ap.add_argument("--pairs", type=int, default=80)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    clf = Classifier.load(a.package)
    bad = sorted((a.data / "defective").glob("*.*"))[: a.pairs]
    good = sorted((a.data / "ok").glob("*.*"))[: a.pairs]
    right, right_max, margins = 0, 0, []
    for i, (b, g) in enumerate(zip(bad, good, strict=False)):
        left = i % 2 == 0
        img = halves(crop_of(clf, b), crop_of(clf, g), left)
        _, _, heat = heat_of(clf, img, already_cropped(img))
        assert heat is not None
        z = np.log(heat.ratio)
        c = z.shape[1]
        side_l, side_r = z[:, : c // 2].mean(), z[:, c - c // 2:].mean()
        right += int((side_l > side_r) == left)
        right_max += int((z[:, : c // 2].max() > z[:, c - c // 2:].max()) == left)  # the hottest cell's side
        margins.append(float((side_l - side_r) * (1 if left else -1)))
    n = len(margins)
    out = {"package": clf.model_id, "data": str(a.data), "pairs": n, "defect_side_higher": right,
           "rate": round(right / n, 3), "hottest_cell_on_defect_side": right_max, "rate_hottest": round(right_max / n, 3), "median_margin_logit": round(float(np.median(margins)), 3),
           "grid": list(heat.ratio.shape)}
    log.info("%s", json.dumps(out))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
