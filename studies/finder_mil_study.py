"""The patch head (``mil``, studies/hybrid_study.py) re-tested on the product's crop (issue 25; dev sets only).

The 2026-12-06 patch-evidence study found ``mil`` +0.12 per part on dev but -0.14 on held-out belt 21, and guessed
why: patch evidence needs a tight, upright crop, which the square search crop of the time was not. Since then the
built-in finder gives the box's rotated rectangle (median polygon IoU 0.977 on dev line scenes) and the linear
default crops upright. This re-runs the same variants with both heads on that crop: pooled features exactly as
``boxinspect cv --crop auto`` (finder, ``--crop-shape aligned``) and the anomaly recipe's 14 x 14 x 288 patch maps of
the very same pixels.

    W=weights.h5 python studies/finder_mil_study.py OUT.json DATA [DATA ...]

Folds: stratified grouped over parts, 5 x 2, the same for every variant (studies/aug_study.py's).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aug_study import load, main, paired, part_auc
from hybrid_study import fold_scores

log = logging.getLogger("finder_mil_study")


def features(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Pooled (the linear recipe's) and patch features of the product's crop of every photo (kept in $CACHE/<data
    name>.npz when CACHE is set)."""
    cache = Path(os.environ["CACHE"]) / f"{paths[0].parents[1].name}.npz" if os.environ.get("CACHE") else None
    if cache is not None and cache.is_file():
        with np.load(cache) as z:
            return z["pooled"], z["patches"].astype(np.float32)
    pooled, patches = _features(paths)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, pooled=pooled, patches=patches.astype(np.float16))
    return pooled, patches


def _features(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    from edge.judge.crops import finder_choice
    from training import anomaly
    from training import model as model_mod
    from training.features import FeatureExtractor, FeatureSpec

    wp = model_mod.resolve_weights(os.environ.get("W", "imagenet"), 0.35, 224)
    fx = FeatureExtractor(FeatureSpec(224, 0.35, wp, flip=False, crop="auto", finder=finder_choice(None, "auto"),
                                      shape="aligned"))
    pix = np.stack([fx.prepare(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)) for p in paths])
    pooled = fx.features_of_pixels(pix)
    _, patches = anomaly.build_patch_model(224, 0.35, wp).predict(pix.astype(np.float32), batch_size=16, verbose=0)
    return pooled, np.asarray(patches, np.float32)


VARIANTS = set(os.environ.get("VARIANTS", "mil,pooled").split(","))


def inner_cells(patches: np.ndarray) -> np.ndarray:
    """(N, cells, C): the patch maps' inner cells (the outer ring left out, as training.model.mid_pooled does)."""
    return patches[:, 1:-1, 1:-1, :].reshape(len(patches), -1, patches.shape[-1])


def gap_mid(x: np.ndarray, patches: np.ndarray) -> np.ndarray:
    """The linear default's "gap+mid" vector in numpy: GAP features, then the inner cells' max and mean."""
    inner = inner_cells(patches)
    return np.c_[x, inner.max(axis=1), inner.mean(axis=1)]


def pooled_variants(x: np.ndarray, patches: np.ndarray, y: np.ndarray, part: np.ndarray, views: np.ndarray,
                    tr: np.ndarray, te: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The linear head on more pooled evidence: the mid-level patch maps' inner cells max- (and mean-) pooled beside
    the backbone's vector; and one head per camera view."""
    from training import linear

    mx = inner_cells(patches).max(axis=1)
    out = {"linear": linear.fit(x[tr], y[tr], part[tr], seed=seed)["model"].predict_proba(x[te])[:, 1]}
    if "pooled" not in VARIANTS:
        return out
    for name, f in (("lin+midmax", np.c_[x, mx]), ("lin+midmax+mean", gap_mid(x, patches)), ("midmax", mx)):
        out[name] = linear.fit(f[tr], y[tr], part[tr], seed=seed)["model"].predict_proba(f[te])[:, 1]
    per_view = np.zeros(len(te))
    for v in np.unique(views):
        a, b = tr[views[tr] == v], views[te] == v
        per_view[b] = linear.fit(x[a], y[a], part[a], seed=seed)["model"].predict_proba(x[te][b])[:, 1]
    out["per_view"] = per_view
    return out


def load_any(ds: Path) -> tuple[list[Path], np.ndarray, np.ndarray, np.ndarray]:
    """(paths, labels, part of each photo (fused per part), fold groups). Synth line scenes: parts are the groups.
    Other photos (parcel-damage): each photo its own part, grouped as ``boxinspect cv`` groups them (near-duplicates
    judged on the crop)."""
    if (ds / "parts.json").is_file():
        paths, y, part = load(ds)
        return paths, y, part, part
    from edge.judge.crops import finder_choice
    from training import cv as cv_mod

    cfg = cv_mod.CVConfig(data_dir=ds, out_dir=Path("/tmp"), crop="auto", finder=finder_choice(None, "auto"),
                          crop_shape="aligned", weights=os.environ.get("W", "imagenet"))
    d = cv_mod.load_data(cfg)
    return list(d.images.paths), np.asarray(d.y), np.arange(len(d.y)), np.asarray(d.groups)


def study(ds: Path) -> dict:
    from sklearn.model_selection import StratifiedGroupKFold

    paths, y, part, groups = load_any(ds)
    views = np.array([p.stem.rsplit("_", 1)[-1] for p in paths]) if (ds / "parts.json").is_file() \
        else np.zeros(len(paths), str)
    x, patches = features(paths)
    rows: dict[str, list[float]] = {}
    for rep in range(2):
        for tr, te in StratifiedGroupKFold(5, shuffle=True, random_state=rep).split(paths, y, groups):
            scores = fold_scores(x, patches, y, groups, tr, te, rep, {"mil"}) if "mil" in VARIANTS else {}
            scores.update(pooled_variants(x, patches, y, groups, views, tr, te, rep))
            if "midstack" in VARIANTS:  # the same stacks with the gap+mid vector as the supervised head's
                stacked = fold_scores(gap_mid(x, patches), patches, y, groups, tr, te, rep, {"mil"})
                scores.update({f"m:{k}": v for k, v in stacked.items() if k not in ("pc", "pc_sup", "mil")})
            for v, s in scores.items():
                rows.setdefault(v, []).append(part_auc(s, y[te], part[te]))
            log.info("%s fold %d: %s", ds.name, len(rows["linear"]), {v: round(a[-1], 3) for v, a in rows.items()})
    return paired(ds.name, rows, "linear")


if __name__ == "__main__":
    main(study, __doc__)
