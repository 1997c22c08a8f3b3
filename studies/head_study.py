"""Other linear heads on the gap+mid vector, and other ways to fuse a part's views (issue 25; dev sets only).

The linear default fits a logistic regression (C by inner grouped CV) on the gap+mid vector after one global scale
(training.linear: one scale for all 1856 numbers, so int8 can hold the folded kernel). The vector joins three blocks
of different size and spread (the last map's GAP, 1280; the mid-level map's max and mean, 288 each). This tries, on
the same cached features and folds:

* ``standard``: every feature scaled to unit sd (``--scaling standard``);
* ``block``: each of the three blocks scaled to the same overall sd first (three numbers from the training fold, so
  the folded kernel keeps a small spread), then the product's head;
* ``lda``: a shrinkage linear discriminant (Ledoit-Wolf, no C to pick), a linear head like the product's;
* ``lr+lda``: the mean of the two heads' logits;

and, with the product's head, fusing a part's views by the mean of their logits (``logit``) or their largest
probability (``max``) in place of the mean probability.

    CACHE=DIR python studies/head_study.py OUT.json DATA [DATA ...]   # features from finder_mil_study's cache

Folds: stratified grouped over parts, 5 x 2 (studies/aug_study.py's); every arm paired with ``gap+mid``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aug_study import main, paired, part_auc
from finder_mil_study import features, gap_mid, load_any

log = logging.getLogger("head_study")
ARMS = os.environ.get("ARMS", "heads")  # "heads" (the linear heads and fusions), "c" (the head's C: c_arms)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def block_scaled(f: np.ndarray, tr: np.ndarray, widths: tuple[int, ...]) -> np.ndarray:
    """Each block of columns divided by its own overall sd on the training rows."""
    out, start = f.copy(), 0
    for w in widths:
        sl = slice(start, start + w)
        out[:, sl] /= f[tr, sl].std() + 1e-9
        start += w
    return out


def lda_logit(f: np.ndarray, y: np.ndarray, tr: np.ndarray, te: np.ndarray) -> np.ndarray:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    mu, sd = f[tr].mean(axis=0), f[tr].std() + 1e-9
    m = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit((f[tr] - mu) / sd, y[tr])
    return m.decision_function((f[te] - mu) / sd)


def fold(f: np.ndarray, y: np.ndarray, groups: np.ndarray, tr: np.ndarray, te: np.ndarray, rep: int,
         widths: tuple[int, ...]) -> dict[str, np.ndarray]:
    from training import linear

    def lr(g: np.ndarray, scaling: str = "global") -> np.ndarray:
        return linear.fit(g[tr], y[tr], groups[tr], seed=rep, scaling=scaling)["model"].predict_proba(g[te])[:, 1]

    if ARMS == "c":
        return c_arms(f, y, groups, tr, te, rep)
    base = lr(f)
    lda = lda_logit(f, y, tr, te)
    return {"gap+mid": base, "standard": lr(f, "standard"), "block": lr(block_scaled(f, tr, widths)),
            "lda": 1 / (1 + np.exp(-lda)), "lr+lda": 1 / (1 + np.exp(-(_logit(base) + lda) / 2))}


def c_arms(f: np.ndarray, y: np.ndarray, groups: np.ndarray, tr: np.ndarray, te: np.ndarray,
           rep: int) -> dict[str, np.ndarray]:
    """ARMS=c: the head's C. The product picks one C by inner grouped CV (5 folds); the pick is unstable between
    folds (0.003 or 1.0 on belt 31). Arms: a fixed C; the mean logit of the heads at the 3 best inner Cs; C picked by
    inner CV repeated 3 times (inner seeds 0-2, mean AUC)."""
    from training import linear

    r = linear.fit(f[tr], y[tr], groups[tr], seed=rep)
    out = {"gap+mid": r["model"].predict_proba(f[te])[:, 1]}
    for c in (0.003, 0.03, 0.3):
        m = linear.make_pipeline(c, rep).fit(f[tr], y[tr])
        out[f"C={c:g}"] = m.predict_proba(f[te])[:, 1]
    top = sorted(r["inner_auc"], key=lambda c: -r["inner_auc"][c])[:3]
    logits = [linear.make_pipeline(c, rep).fit(f[tr], y[tr]).decision_function(f[te]) for c in top]
    out["top3C"] = 1 / (1 + np.exp(-np.mean(logits, axis=0)))
    inner = [linear.fit(f[tr], y[tr], groups[tr], seed=s)["inner_auc"] for s in (rep, rep + 10, rep + 20)]
    best = max(inner[0], key=lambda c: (np.mean([a[c] for a in inner]), -c))
    out["rep3C"] = linear.make_pipeline(best, rep).fit(f[tr], y[tr]).predict_proba(f[te])[:, 1]
    return out


def study(ds: Path) -> dict:
    from sklearn.model_selection import StratifiedGroupKFold

    paths, y, part, groups = load_any(ds)
    x, patches = features(paths)
    f = gap_mid(x, patches)
    widths = (x.shape[1], patches.shape[-1], patches.shape[-1])
    rows: dict[str, list[float]] = {}
    for rep in range(2):
        for tr, te in StratifiedGroupKFold(5, shuffle=True, random_state=rep).split(paths, y, groups):
            scores = fold(f, y, groups, tr, te, rep, widths)
            for name, s in scores.items():
                rows.setdefault(name, []).append(part_auc(s, y[te], part[te]))
            if ARMS != "c":
                rows.setdefault("logit", []).append(part_auc(_logit(scores["gap+mid"]), y[te], part[te]))
                rows.setdefault("max", []).append(_part_max_auc(scores["gap+mid"], y[te], part[te]))
            log.info("%s fold %d: %s", ds.name, len(rows["gap+mid"]), {v: round(a[-1], 3) for v, a in rows.items()})
    return paired(ds.name, rows, "gap+mid")


def _part_max_auc(s: np.ndarray, y: np.ndarray, part: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    ps = sorted(set(part.tolist()))
    return float(roc_auc_score([y[part == q][0] for q in ps], [s[part == q].max() for q in ps]))


if __name__ == "__main__":
    main(study, __doc__)
