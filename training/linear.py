"""Linear head on frozen features: standardise -> L2 logistic regression, C chosen by inner grouped CV.

Used by ``boxinspect cv`` (recipe ``linear``) and by ``boxinspect train`` (the default recipe), which folds
the scaler into one Dense layer so the saved model.keras is an ordinary Keras model.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_CS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)
INNER_FOLDS = 5


SCALINGS = ("standard", "global")


def _global_scaler():
    from sklearn.base import BaseEstimator, TransformerMixin

    class GlobalScaler(TransformerMixin, BaseEstimator):
        """Centre every feature, divide all by one number (the root mean feature variance).

        Unlike per-feature standardisation this keeps the folded Dense kernel's range close to the logistic
        coefficients' own, which int8 (one scale per tensor) can represent: per-feature standardisation
        divides by tiny stds of near-silent channels and left two thirds of an int8 kernel at zero.
        """

        def fit(self, x, y=None):
            self.mean_ = np.asarray(x, np.float64).mean(axis=0)
            g = float(np.sqrt(np.mean(np.asarray(x, np.float64).var(axis=0)))) or 1.0
            self.scale_ = np.full(self.mean_.shape, g)
            return self

        def transform(self, x):
            return (np.asarray(x, np.float64) - self.mean_) / self.scale_

    return GlobalScaler()


def make_pipeline(c: float, seed: int = 0, scaling: str = "global"):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline as mk
    from sklearn.preprocessing import StandardScaler

    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    scaler = StandardScaler() if scaling == "standard" else _global_scaler()
    return mk(scaler, LogisticRegression(C=c, class_weight="balanced", max_iter=5000, random_state=seed))


def inner_splits(y: np.ndarray, groups: np.ndarray, n: int = INNER_FOLDS, seed: int = 0) -> list:
    """Stratified grouped folds of the training side (fewer folds if there are few groups)."""
    from sklearn.model_selection import StratifiedGroupKFold

    k = int(min(n, len(np.unique(groups)), np.bincount(np.asarray(y).astype(int)).min()))
    if k < 2:
        raise ValueError("too few groups or positives for an inner cross-validation")
    return list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(
        np.zeros(len(y)), y, groups))


def fit(x: np.ndarray, y: np.ndarray, groups: np.ndarray, c: float | None = None,
        cs: tuple[float, ...] = DEFAULT_CS, seed: int = 0, scaling: str = "global") -> dict:
    """Fit the head; ``c=None`` picks C by inner grouped CV (ROC AUC).

    Returns {"model": fitted pipeline, "C", "inner_auc": {C: mean AUC} or None, "oof": inner out-of-fold
    scores of the training data at the chosen C (for choosing a threshold without touching test data)}.
    """
    from threadpoolctl import threadpool_limits

    # One BLAS thread: on a shared CPU OpenBLAS' threads contend and a 0.05 s fit takes 2-5 s (measured).
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit(x, y, groups, c, cs, seed, scaling)


def _fit(x, y, groups, c, cs, seed, scaling) -> dict:
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y).astype(int)
    splits = inner_splits(y, groups, seed=seed)
    grid = [c] if c is not None else list(cs)
    inner: dict[float, float] = {}
    oof_by_c: dict[float, np.ndarray] = {}
    for cc in grid:
        oof = np.zeros(len(y))
        aucs = []
        for tr, va in splits:
            m = make_pipeline(cc, seed, scaling).fit(x[tr], y[tr])
            oof[va] = m.predict_proba(x[va])[:, 1]
            if len(np.unique(y[va])) == 2:
                aucs.append(roc_auc_score(y[va], oof[va]))
        inner[cc] = float(np.mean(aucs)) if aucs else float("nan")
        oof_by_c[cc] = oof
    best = max(grid, key=lambda cc: (inner[cc], -cc)) if c is None else c
    model = make_pipeline(best, seed, scaling).fit(x, y)
    return {"model": model, "C": float(best), "inner_auc": inner if c is None else None, "oof": oof_by_c[best]}


def folded_dense(model) -> tuple[np.ndarray, float]:
    """(kernel (D,), bias) of one Dense layer equal to StandardScaler followed by the logistic regression."""
    scaler, lr = model[0], model[-1]
    w = lr.coef_.ravel() / scaler.scale_
    b = float(lr.intercept_[0] - np.sum(lr.coef_.ravel() * scaler.mean_ / scaler.scale_))
    return w.astype(np.float32), b
