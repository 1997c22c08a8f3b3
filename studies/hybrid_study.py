"""Hybrid supervised heads that use patch evidence (issue 25, part 2), paired against the linear head.

    nice -n 10 .venv/bin/python studies/hybrid_study.py DATA OUT.json [--folds 5] [--repeats 2] [--variants a,b]

Same data loading, groups, folds (``StratifiedGroupKFold(folds, shuffle, random_state=seed + repeat)``), crop
(``auto``, the data set's own belt learned first, as ``boxinspect cv`` does) and linear head (C by inner grouped
CV) as ``boxinspect cv --recipe linear``, so the ``linear`` column is what cv reports and every other column is
paired with it fold by fold. Features are the project's cached ones: pooled (the linear recipe's square crop) and
the anomaly recipe's 14 x 14 x 288 patch maps (upright, tight crop).

Variants (all fitted on the training side of each fold only):
  * ``pc``: PatchCore distance of good training crops (largest inner cell), no labels of defects used;
  * ``stack``: logistic regression on [logit(linear inner out-of-fold score), log PatchCore distance], the
    training crops' distances taken leave-one-group-out from the bank (their own part's rows excluded);
  * ``stack_all``: the same with more patch statistics (top-3 / top-10 mean, each layer's own bank);
  * ``zsum``: no fitted weights, z(logit linear) + z(log PatchCore distance), z on the training side;
  * ``mil``: a patch-level logistic head on the inner cells: every sampled cell of a good crop a negative, the
    ``MIL_TOP`` cells of each defect crop farthest from the good bank the positives; crop score = largest cell;
  * ``stack_mil``: [linear, PatchCore, mil], mil's training scores from inner grouped folds.
Prints and writes, per variant: AUC per view, per part (max, mean), mean +- sd over folds, and the paired
difference to ``linear`` on the same folds.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from edge.judge import anomaly as an
from training import anomaly, linear
from training import cv as cv_mod
from training.parts import fuse_parts

log = logging.getLogger("hybrid_study")
WEIGHTS = Path(__file__).resolve().parents[1] / ".." / "shared" / "weights" / \
    "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
BORDER = 1
MIL_TOP = 3
MIL_NEG_PER_CROP = 48
MIL_C = 0.01
LAYERS = {"mid": slice(0, 96), "deep": slice(96, 288)}


def _inner(cells: np.ndarray) -> np.ndarray:
    return cells[BORDER:-BORDER, BORDER:-BORDER] if BORDER else cells


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def bank_stats(patches: np.ndarray, groups: np.ndarray, good: np.ndarray, idx: np.ndarray, own: bool,
               seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 5) log patch statistics of crops ``idx`` (inner max, top-3, top-10 of the joint bank; inner max of the
    mid and deep layers' own banks) and the joint bank's inner cell maps (N, 12, 12). ``own``: leave each crop's
    group out of the bank (training crops)."""
    feats = np.zeros((len(idx), 5))
    maps = None
    for j, (name, sl) in enumerate([("joint", slice(None)), *LAYERS.items()]):
        p = patches[..., sl]
        pc = an.PatchCore.fit(p[good], groups[good], ratio=0.1, max_size=10000, seed=seed)
        cells = np.stack([_inner(pc.cell_distances(p[i], int(groups[i]) if own else None)) for i in idx])
        flat = np.sort(cells.reshape(len(idx), -1), axis=1)[:, ::-1]
        if name == "joint":
            maps = cells
            feats[:, 0], feats[:, 1], feats[:, 2] = flat[:, 0], flat[:, :3].mean(1), flat[:, :10].mean(1)
        else:
            feats[:, 2 + j] = flat[:, 0]
    assert maps is not None
    return np.log(np.maximum(feats, 1e-6)), maps


def _lr(x: np.ndarray, y: np.ndarray, c: float = 1.0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=2000)).fit(x, y)


def mil_fit(patches: np.ndarray, y: np.ndarray, maps: np.ndarray, idx: np.ndarray, seed: int, c: float = MIL_C,
            top: int = MIL_TOP):
    """Patch head: sampled inner cells of good crops (negatives), the ``top`` farthest cells of defect crops
    (positives, by the bank's cell distances ``maps`` aligned with ``idx``)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k, i in enumerate(idx):
        cells = _inner(patches[i]).reshape(-1, patches.shape[-1])
        if y[i] == 0:
            pick = rng.choice(len(cells), size=min(MIL_NEG_PER_CROP, len(cells)), replace=False)
            xs.append(cells[pick])
            ys.append(np.zeros(len(pick)))
        else:
            pick = np.argsort(maps[k].ravel())[::-1][:top]
            xs.append(cells[pick])
            ys.append(np.ones(len(pick)))
    return _lr(np.concatenate(xs), np.concatenate(ys), c)


def mil_score(model, patches: np.ndarray, idx: np.ndarray, k: int = 1) -> np.ndarray:
    """Crop score: the largest inner cell logit (``k`` 1) or the mean of the ``k`` largest."""
    d = patches.shape[-1]
    z = model.decision_function(np.stack([_inner(patches[i]).reshape(-1, d) for i in idx]).reshape(-1, d))
    return np.sort(z.reshape(len(idx), -1), axis=1)[:, ::-1][:, :k].mean(axis=1)


def mil_extra(patches: np.ndarray, y: np.ndarray, m_tr: np.ndarray, tr: np.ndarray, te: np.ndarray,
              seed: int) -> dict[str, np.ndarray]:
    """Settings of the patch head (dev only): C, positives per defect crop, top-k crop score."""
    out = {"mil_top3mean": mil_score(mil_fit(patches, y, m_tr, tr, seed), patches, te, 3)}
    for name, c, top in (("mil_c0.1", 0.1, MIL_TOP), ("mil_c0.001", 0.001, MIL_TOP), ("mil_pos1", MIL_C, 1),
                         ("mil_pos10", MIL_C, 10)):
        out[name] = mil_score(mil_fit(patches, y, m_tr, tr, seed, c, top), patches, te)
    # a second round: the positives re-picked by the first head's own cell logits
    m1 = mil_fit(patches, y, m_tr, tr, seed)
    d = patches.shape[-1]
    z = m1.decision_function(np.stack([_inner(patches[i]).reshape(-1, d) for i in tr]).reshape(-1, d))
    out["mil_r2"] = mil_score(mil_fit(patches, y, z.reshape(m_tr.shape), tr, seed), patches, te)
    return out


def mil_oof(patches: np.ndarray, y: np.ndarray, groups: np.ndarray, maps: np.ndarray, tr: np.ndarray,
            seed: int) -> np.ndarray:
    """Inner grouped out-of-fold MIL scores of the training crops (for stacking)."""
    out = np.zeros(len(tr))
    for itr, iva in linear.inner_splits(y[tr], groups[tr], seed=seed):
        m = mil_fit(patches, y, maps[itr], tr[itr], seed)
        out[iva] = mil_score(m, patches, tr[iva])
    return out


def fold_scores(x: np.ndarray, patches: np.ndarray, y: np.ndarray, groups: np.ndarray, tr: np.ndarray,
                te: np.ndarray, seed: int, variants: set[str]) -> dict[str, np.ndarray]:
    """Test scores of every variant for one fold."""
    fit = linear.fit(x[tr], y[tr], groups[tr], seed=seed)
    out = {"linear": fit["model"].predict_proba(x[te])[:, 1]}
    l_tr, l_te = _logit(fit["oof"]), _logit(out["linear"])
    good = tr[y[tr] == 0]
    b_tr, m_tr = bank_stats(patches, groups, good, tr, True, seed)
    b_te, m_te = bank_stats(patches, groups, good, te, False, seed)
    out["pc"] = b_te[:, 0]
    ytr = y[tr]
    out["stack"] = _lr(np.c_[l_tr, b_tr[:, 0]], ytr).predict_proba(np.c_[l_te, b_te[:, 0]])[:, 1]
    out["stack_all"] = _lr(np.c_[l_tr, b_tr], ytr).predict_proba(np.c_[l_te, b_te])[:, 1]
    out["pc_sup"] = _lr(b_tr, ytr).predict_proba(b_te)[:, 1]
    g = ytr == 0
    out["zsum"] = ((l_te - l_tr[g].mean()) / l_tr[g].std() + (b_te[:, 0] - b_tr[g, 0].mean()) / b_tr[g, 0].std())
    if "mil" in variants:
        mil = mil_fit(patches, y, m_tr, tr, seed)
        out["mil"] = mil_score(mil, patches, te)
        o_tr = mil_oof(patches, y, groups, m_tr, tr, seed)
        out["stack_mil"] = _lr(np.c_[l_tr, b_tr[:, 0], o_tr], ytr).predict_proba(
            np.c_[l_te, b_te[:, 0], out["mil"]])[:, 1]
        out["lin_mil"] = _lr(np.c_[l_tr, o_tr], ytr).predict_proba(np.c_[l_te, out["mil"]])[:, 1]
    if "milx" in variants:
        out.update(mil_extra(patches, y, m_tr, tr, te, seed))
    return out


def fold_metrics(parts: list[str], y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    res = {"view": float(roc_auc_score(y, s))}
    for rule in ("max", "mean"):
        yp, sp = fuse_parts(parts, y, s, rule)
        res[f"part_{rule}"] = float(roc_auc_score(yp, sp))
    return res


def load(data: Path, self_belt: bool, out: Path) -> tuple[cv_mod.CVData, np.ndarray, np.ndarray]:
    """The cv's data (groups), pooled features (square crop) and patch maps (upright tight crop); kept in
    OUT/<data name>.pkl so a second study of the same data skips the self-learned belt and the features."""
    import pickle

    cache = out / f"{data.name}.pkl"
    if cache.is_file():
        d, x, p16 = pickle.loads(cache.read_bytes())
        return d, x, p16.astype(np.float32)
    cfg = cv_mod.CVConfig(data_dir=data, out_dir=out, recipe="linear", crop="auto", weights=str(WEIGHTS))
    if self_belt:
        from training.cli import self_belt as learn

        learn(data, "auto", argparse.Namespace(no_self_belt=False, background=None, empty=None))
    d = cv_mod.load_data(cfg)
    t0 = time.monotonic()
    x, ok = cv_mod.linear_features(cfg, d.images.paths)
    feats, ok2 = anomaly.cv_features(cfg, d.images.paths)
    if not (ok.all() and ok2.all()):
        raise RuntimeError("unreadable images")
    log.info("features in %.0f s: pooled %s, patches %s", time.monotonic() - t0, x.shape, feats.patches.shape)
    cache.write_bytes(pickle.dumps((d, x, feats.patches.astype(np.float16))))
    return d, x, feats.patches


def summarise(rows: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Per variant and metric: mean, sd over folds, and the paired difference to linear."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for v in rows[0]["scores"]:
        out[v] = {}
        for k in ("view", "part_max", "part_mean"):
            a = np.array([r["scores"][v][k] for r in rows])
            b = np.array([r["scores"]["linear"][k] for r in rows])
            out[v][k] = {"mean": float(a.mean()), "sd": float(a.std(ddof=1)), "diff": float((a - b).mean()),
                         "diff_sd": float((a - b).std(ddof=1)), "n": len(a)}
    return out


def table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = ["| variant | AUC per view | per part, max | per part, mean | - linear, view | - linear, part max | "
             "- linear, part mean |", "|---|---|---|---|---|---|---|"]
    for v, m in summary.items():
        cells = [f"{m[k]['mean']:.3f} ± {m[k]['sd']:.3f}" for k in ("view", "part_max", "part_mean")]
        cells += [f"{m[k]['diff']:+.3f} ± {m[k]['diff_sd']:.3f}" for k in ("view", "part_max", "part_mean")]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-self-belt", action="store_true")
    ap.add_argument("--variants", default="mil", help="optional extra variants (mil, milx; '' for none)")
    ap.add_argument("--features-only", action="store_true", help="cache the features (OUT's folder) and stop")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from sklearn.model_selection import StratifiedGroupKFold
    from threadpoolctl import threadpool_limits

    d, x, patches = load(a.data, not a.no_self_belt, a.out.parent)
    if a.features_only:
        return
    variants = set(filter(None, a.variants.split(",")))
    rows = []
    for r in range(a.repeats):
        sgkf = StratifiedGroupKFold(n_splits=a.folds, shuffle=True, random_state=a.seed + r)
        for f, (tr, te) in enumerate(sgkf.split(np.zeros(len(d.y)), d.y, d.groups)):
            t0 = time.monotonic()
            with threadpool_limits(limits=1, user_api="blas"):
                sc = fold_scores(x, patches, d.y, d.groups, tr, te, a.seed + r, variants)
            parts = [d.parts[i] for i in te]
            rows.append({"repeat": r, "fold": f, "scores": {v: fold_metrics(parts, d.y[te], s) for v, s in sc.items()},
                         "test": [d.rel[i] for i in te], "raw": {v: s.tolist() for v, s in sc.items()}})
            log.info("fold r%d f%d (%.0f s): %s", r, f, time.monotonic() - t0,
                     ", ".join(f"{v} {m['part_max']:.3f}" for v, m in rows[-1]["scores"].items()))
            a.out.write_text(json.dumps({"data": str(a.data), "folds": rows}, indent=0))
    summary = summarise(rows)
    a.out.write_text(json.dumps({"data": str(a.data), "summary": summary, "folds": rows}, indent=0))
    log.info("%s\n%s", a.data, table(summary))


if __name__ == "__main__":
    main()
