"""``--weights auto`` (the linear recipe's default on the command line): the backbone chosen per data set by the
inner grouped CV the head already runs (issue 25).

Two frozen backbones are candidates: the ImageNet MobileNetV2 and the built-in one adapted to boxes
(``--weights boxes``, training/assets/). Neither wins everywhere: on rendered line and belt scenes the adapted one
is far ahead (per part AUC +0.09 to +0.35 held-out), on the real parcel-damage photos it is behind (-0.03), so a
line's own labelled parts decide. Both feature sets are computed; the head is fitted on each with C by inner
grouped CV; the backbone whose head has the higher out-of-fold AUC on the training data is kept (ImageNet on a
tie). Training costs a second feature pass; the package holds one backbone, so the edge pays nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

AUTO = "auto"
BOXES_ALPHA = 0.35  # the width multiplier of the boxes backbone (training/assets/)
CANDIDATES = ("imagenet", "boxes")  # in this order in every stacked feature array; the first wins a tie


@dataclass(frozen=True)
class Choice:
    """The backbone kept, its head's fit (training.linear.fit's dict) and every candidate's out-of-fold AUC."""

    weights: str
    fit: dict
    oof_auc: dict[str, float]

    def sentence(self) -> str:
        others = ", ".join(f"{w} {a:.3f}" for w, a in self.oof_auc.items())
        return f"backbone {self.weights} (out-of-fold AUC of the head on the training data: {others})"


def is_auto(weights: str) -> bool:
    return weights.lower() == AUTO


def for_recipe(asked: str, recipe: str, alpha: float) -> str:
    """--weights as asked; ``auto``: the linear recipe chooses by inner CV (:func:`choose`), the anomaly recipe (no
    defects to choose by) takes boxes, finetune and any alpha but :data:`BOXES_ALPHA` imagenet."""
    if not is_auto(asked) or (recipe == "linear" and alpha == BOXES_ALPHA):
        return asked
    weights = "boxes" if recipe == "anomaly" and alpha == BOXES_ALPHA else "imagenet"
    log.info("--weights auto: %s (recipe %s, alpha %g)", weights, recipe, alpha)
    return weights


def choose(xs: np.ndarray, y: np.ndarray, groups: np.ndarray, c: float | None = None, seed: int = 0,
           scaling: str = "global") -> Choice:
    """``xs``: (len(CANDIDATES), n, D) features of the same images by each candidate backbone."""
    from sklearn.metrics import roc_auc_score

    from training import linear

    fits = {w: linear.fit(x, y, groups, c=c, seed=seed, scaling=scaling) for w, x in zip(CANDIDATES, xs, strict=True)}
    auc = {w: float(roc_auc_score(y, f["oof"])) for w, f in fits.items()}
    best = max(CANDIDATES, key=lambda w: (auc[w], -CANDIDATES.index(w)))
    return Choice(best, fits[best], auc)
