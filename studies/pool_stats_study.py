"""Other statistics of the mid-level patch map beside the gap+mid vector (issue 25; dev sets only).

The linear default's vector is the backbone's GAP (1280) plus the max and mean of the 14 x 14 x 288 patch map's
inner cells. This tries, on the same cached features and folds, what a pooled CNN vector is often given besides:
the cells' standard deviation, a generalised mean (p = 3) in place of the mean, the mean of each channel's top 3
cells in place of the max, and a signed square root (power normalisation) of the whole vector. The head is the
product's (training.linear.fit).

    CACHE=DIR python studies/pool_stats_study.py OUT.json DATA [DATA ...]   # features from finder_mil_study's cache

Folds: stratified grouped over parts, 5 x 2 (studies/aug_study.py's); every arm paired with ``gap+mid``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aug_study import main, paired, part_auc
from finder_mil_study import features, gap_mid, inner_cells, load_any

log = logging.getLogger("pool_stats_study")


def arms(x: np.ndarray, patches: np.ndarray) -> dict[str, np.ndarray]:
    inner = inner_cells(patches)
    mx, mn, sd = inner.max(axis=1), inner.mean(axis=1), inner.std(axis=1)
    gem = np.cbrt(np.mean(np.clip(inner, 0, None) ** 3, axis=1))
    top3 = np.sort(inner, axis=1)[:, -3:, :].mean(axis=1)
    base = gap_mid(x, patches)
    return {"gap+mid": base, "+std": np.c_[base, sd], "gem3": np.c_[x, mx, gem], "top3": np.c_[x, top3, mn],
            "sqrt": np.sqrt(np.clip(base, 0, None))}


def study(ds: Path) -> dict:
    from sklearn.model_selection import StratifiedGroupKFold

    from training import linear

    paths, y, part, groups = load_any(ds)
    x, patches = features(paths)
    feats = arms(x, patches)
    rows: dict[str, list[float]] = {}
    for rep in range(2):
        for tr, te in StratifiedGroupKFold(5, shuffle=True, random_state=rep).split(paths, y, groups):
            for name, f in feats.items():
                s = linear.fit(f[tr], y[tr], groups[tr], seed=rep)["model"].predict_proba(f[te])[:, 1]
                rows.setdefault(name, []).append(part_auc(s, y[te], part[te]))
            log.info("%s fold %d: %s", ds.name, len(rows["gap+mid"]), {v: round(a[-1], 3) for v, a in rows.items()})
    return paired(ds.name, rows, "gap+mid")


if __name__ == "__main__":
    main(study, __doc__)
