"""Feature probe CV: the same 10 grouped folds as `boxinspect cv` (seed 0, 5 x 2) for feature variants in probe npz files.

usage: SEED0=0 python studies/probe_cv.py [DATA] NAME=SRC[;SRC]@opts ...
SRC = NPZ:key1+key2 (features of runs/probe/NPZ.npz written by studies/probe_features.py, concatenated);
several SRC separated by ';' are averaged (flip / multi-scale); opts: scaling=standard, C=0.001, l2norm, sqrt,
ls=0.1 (label smoothing, fixed C: default 0.001).
Folds = `boxinspect cv --seed SEED0` (5 x 2); prints mean +- sd AUC and the paired difference to the first NAME.
"""
import json
import os
import sys
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from training import cv as cv_mod
from training import data as data_mod
from training import linear, operating
from training import split as split_mod

D = Path(sys.argv[1]) if not sys.argv[1].count("=") else Path("/work/shared/data/parcel-damage")
args = sys.argv[1:] if sys.argv[1].count("=") else sys.argv[2:]
gfile = Path(f"runs/probe/groups-{D.name}.npz")
if gfile.is_file():
    z = np.load(gfile)
    rel, y, groups = list(z["rel"]), z["y"], z["groups"]
else:
    images = data_mod.scan(D, None, None)
    rel = [images.rel(p) for p in images.paths]
    y = np.array([1 if lab == images.positive_class else 0 for lab in images.labels])
    loaded = data_mod.load_images(images.paths, images.labels, cv_mod.HASH_SIZE)
    assert not loaded.unreadable
    hashes = np.stack([split_mod.image_hashes(px) for px in loaded.pixels])
    dup = split_mod.near_duplicate_groups(hashes, split_mod.DEFAULT_DUP_THRESHOLD)
    groups = cv_mod.merge_groups(dup.tolist(), cv_mod.part_ids(rel))
    np.savez(gfile, rel=np.array(rel), y=y, groups=groups)

cache = {}


def load(spec):
    # spec: file1:k1+k2 ; file2:k3   (semicolon-separated sources), opts after '@'
    src, _, opts = spec.partition("@")
    xs = []
    for part in src.split(";"):
        f, keys = part.split(":")
        if f not in cache:
            cache[f] = dict(np.load(f"runs/probe/{f}.npz"))
            assert list(cache[f]["rel"]) == rel, f
        xs.append(np.concatenate([cache[f][k] for k in keys.split("+")], axis=1))
    x = xs[0] if len(xs) == 1 else np.mean(xs, axis=0)  # several sources = averaged (flip TTA)
    o = dict(kv.split("=") if "=" in kv else (kv, "1") for kv in opts.split(",") if kv)
    if "sqrt" in o:
        x = np.sqrt(np.clip(x, 0, None))
    if "l2norm" in o:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float64), o


def smoothed(xtr, ytr, gtr, xte, eps, c, seed):
    """Label-smoothed L2 logistic head (balanced class weights, the default's global scaling), fixed C."""
    from sklearn.linear_model import LogisticRegression

    def fit_predict(a, ya, b):
        sc = linear.make_pipeline(c, seed)[0].fit(a)
        cw = len(ya) / (2.0 * np.bincount(ya, minlength=2))
        xa = sc.transform(a)
        x2 = np.vstack([xa, xa])
        y2 = np.r_[ya, 1 - ya]
        w2 = np.r_[cw[ya] * (1 - eps / 2), cw[ya] * (eps / 2)]
        lr = LogisticRegression(C=c, max_iter=5000).fit(x2, y2, sample_weight=w2)
        return lr.predict_proba(sc.transform(b))[:, 1]

    oof = np.zeros(len(ytr))
    for tr2, va2 in linear.inner_splits(ytr, gtr, seed=seed):
        oof[va2] = fit_predict(xtr[tr2], ytr[tr2], xtr[va2])
    thr = operating.choose(ytr, oof, None, None)["threshold"]
    return fit_predict(xtr, ytr, xte), thr, c


results = {}
for a in args:
    name, spec = a.split("=", 1)
    x, o = load(spec)
    rows = []
    for r in range(int(os.environ.get("SEED0", "0")), int(os.environ.get("SEED0", "0")) + 2):
        sg = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=r)
        for f, (tr, te) in enumerate(sg.split(np.zeros(len(y)), y, groups)):
            c = float(o["C"]) if "C" in o else None
            if "ls" in o:  # label smoothing eps: each image twice, label y weight 1-eps/2 and 1-y weight eps/2
                s, thr, cc = smoothed(x[tr], y[tr], groups[tr], x[te], float(o["ls"]), c or 1e-3, r)
                fit = {"C": cc}
            else:
                fit = linear.fit(x[tr], y[tr], groups[tr], c=c, seed=r, scaling=o.get("scaling", "global"))
                s = fit["model"].predict_proba(x[te])[:, 1]
                thr = operating.choose(y[tr], fit["oof"], None, None)["threshold"]
            m = cv_mod.fold_metrics(y[te], s, thr)
            m.update(repeat=r, fold=f, C=fit["C"])
            rows.append(m)
    auc = np.array([m["roc_auc"] for m in rows])
    results[name] = rows
    ref = np.array([m["roc_auc"] for m in results[next(iter(results))]])
    d = auc - ref
    print(f"{name:40s} dim {x.shape[1]:5d} AUC {auc.mean():.4f} ± {auc.std(ddof=1):.4f}  paired {d.mean():+.4f} ± "  # noqa: T201
          f"{d.std(ddof=1):.4f} wins {int((d > 0).sum())}/10  C {[m['C'] for m in rows]}", flush=True)
    Path("runs/probe/results").mkdir(exist_ok=True)
    Path(f"runs/probe/results/{name}{os.environ.get('SEED0', '')}.json").write_text(json.dumps({"spec": spec, "folds": rows}))
