"""Train-time symmetry augmentation for the linear head on the upright crop (issue 25; dev sets only).

The aligned crop turns the box's long side horizontal, so its mirror images (left-right, top-bottom) and its
180-degree turn are the same kind of upright box. Adding their pooled features to the head's training rows costs
nothing on the edge (one pass per crop as now); test-time averaging over them would cost four passes (reported for
information only).

    W=weights.h5 python studies/aug_study.py OUT.json DATA [DATA ...]

Per data set (synth line scenes, <class>/<part>_<view>.jpg): 5-fold x 2 repeats stratified grouped folds over parts,
the same folds for every arm; per-part score = the mean of its views' probabilities; AUC per fold, and each arm
minus the baseline with the folds where it is higher.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger("aug_study")

VARIANTS = {"id": lambda x: x, "h": lambda x: x[:, :, ::-1], "v": lambda x: x[:, ::-1], "r": lambda x: x[:, ::-1, ::-1]}
ARMS = {"base": ("id",), "h": ("id", "h"), "r": ("id", "r"), "hvr": ("id", "h", "v", "r")}


def load(ds: Path) -> tuple[list[Path], np.ndarray, np.ndarray]:
    paths = sorted(p for c in ("ok", "defective") for p in (ds / c).glob("*.jpg"))
    y = np.array([int(p.parent.name == "defective") for p in paths])
    parts = [f"{p.parent.name}/{p.stem.rsplit('_', 1)[0]}" for p in paths]
    _, part_ix = np.unique(parts, return_inverse=True)
    return paths, y, part_ix


def variant_features(paths: list[Path]) -> dict[str, np.ndarray]:
    from edge.judge.crops import finder_choice
    from training import model as model_mod
    from training.features import FeatureExtractor, FeatureSpec

    wp = model_mod.resolve_weights(os.environ.get("W", "imagenet"), 0.35, 224)  # W: the weight file, offline
    fx = FeatureExtractor(FeatureSpec(224, 0.35, wp, flip=False, crop="auto", finder=finder_choice(None, "auto"),
                                      shape="aligned"))
    pix = np.stack([fx.prepare(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)) for p in paths])
    return {k: fx.features_of_pixels(np.ascontiguousarray(f(pix))) for k, f in VARIANTS.items()}


def part_auc(s: np.ndarray, y: np.ndarray, part: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    ps = sorted(set(part.tolist()))
    return float(roc_auc_score([y[part == q][0] for q in ps], [s[part == q].mean() for q in ps]))


def study(ds: Path) -> dict:
    from sklearn.model_selection import StratifiedGroupKFold

    from training import linear

    paths, y, part = load(ds)
    feats = variant_features(paths)
    rows: dict[str, list[float]] = {a: [] for a in ARMS} | {"hvr+tta": []}
    for rep in range(2):
        for tr, te in StratifiedGroupKFold(5, shuffle=True, random_state=rep).split(paths, y, part):
            for arm, vs in ARMS.items():
                x = np.concatenate([feats[v][tr] for v in vs])
                fit = linear.fit(x, np.tile(y[tr], len(vs)), np.tile(part[tr], len(vs)), seed=rep)
                rows[arm].append(part_auc(fit["model"].predict_proba(feats["id"][te])[:, 1], y[te], part[te]))
                if arm == "hvr":
                    s = np.mean([fit["model"].predict_proba(feats[v][te])[:, 1] for v in VARIANTS], axis=0)
                    rows["hvr+tta"].append(part_auc(s, y[te], part[te]))
            log.info("%s fold %d: %s", ds.name, len(rows["base"]), {a: round(v[-1], 3) for a, v in rows.items()})
    return paired(ds.name, rows, "base")


def paired(name: str, rows: dict[str, list[float]], base_arm: str) -> dict:
    """Per arm: mean and sd of its fold AUCs, and its paired difference to ``base_arm`` (folds where it is higher)."""
    base = np.array(rows[base_arm])
    out = {}
    for arm, v in rows.items():
        a, d = np.array(v), np.array(v) - base
        out[arm] = {"mean": float(a.mean()), "sd": float(a.std(ddof=1)), "d": float(d.mean()),
                    "d_sd": float(d.std(ddof=1)), "up": int((d > 0).sum()), "n": len(d), "folds": v}
        log.info("| %s | %s | %.3f ± %.3f | %+.3f ± %.3f (%d/%d) |", name, arm, a.mean(), a.std(ddof=1), d.mean(),
                 d.std(ddof=1), (d > 0).sum(), len(d))
    return out


def main(study_one: Callable[[Path], dict], doc: str | None) -> None:
    """``OUT.json DATA [DATA ...]``: ``study_one`` of every DATA, written to OUT.json by data set name."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if len(sys.argv) < 3:
        sys.exit(doc)
    res = {Path(d).name: study_one(Path(d)) for d in sys.argv[2:]}
    Path(sys.argv[1]).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main(study, __doc__)
