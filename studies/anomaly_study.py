"""Settings study for the anomaly recipe (issue 29) on a DEVELOPMENT set, never on the evaluation folds.

    nice -n 10 .venv/bin/python studies/anomaly_study.py DEV_DATA OUT.json [CROP...]

DEV_DATA is a synth line-scene set rendered with its own seed (docs/RESULTS.md uses seed 7; the evaluation set
is seed 3), so the settings chosen here are fixed before the evaluation folds are scored. For every crop
variant it featurises the crops once (raw ``block_6_expand_relu`` and ``block_13_expand_relu`` maps, cached in
OUT's folder) and then scores every scoring variant on 5 grouped folds (good parts of the training folds only),
printing the per-part (max over views) AUC, mean and sd over the folds.
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.judge import anomaly as an
from edge.judge import localize
from training import data as data_mod
from training.parts import fuse_parts
from training.split import part_ids

log = logging.getLogger("anomaly_study")
WEIGHTS = Path(__file__).resolve().parents[1] / ".." / "shared" / "weights"
LAYERS = ("6+13",)
CROPS = {
    "square": localize.CropSpec(method="auto"),
    "upright_tight": localize.CropSpec(method="auto", rotated=True, square=False, margin=0.02),
    "upright_square": localize.CropSpec(method="auto", rotated=True),
}


def patch_model() -> Any:
    """The 0.35 backbone with its two patch layers (block 6 and block 13 expand) as outputs."""
    import keras

    from training import model as model_mod

    wp = model_mod.resolve_weights(str(next(WEIGHTS.glob("*0.35_224*.h5"))), 0.35, 224)
    bb = model_mod.build_backbone(224, 0.35, wp)
    return keras.Model(bb.input, [bb.get_layer(n).output for n in ("block_6_expand_relu", "block_13_expand_relu")])


def crops_rgb(paths: list[Path], spec: localize.CropSpec) -> list[np.ndarray]:
    """Each still's crop as the localiser cuts it, RGB at 224 px."""
    out = []
    for p in paths:
        bgr = cv2.imread(str(p))
        c = localize.crop(bgr, localize.locate_for_still(bgr, spec), spec)
        out.append(data_mod.resize(cv2.cvtColor(c, cv2.COLOR_BGR2RGB), 224))
    return out


def raw_features(paths: list[Path], spec: localize.CropSpec, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    if cache.exists():
        z = np.load(cache)
        return z["mid"], z["deep"]
    m = patch_model()
    mids, deeps = [], []
    for i in range(0, len(paths), 16):
        x = np.stack(crops_rgb(paths[i:i + 16], spec)).astype(np.float32) / 127.5 - 1.0
        a, b = m.predict(x, verbose=0)
        mids.append(a.astype(np.float16))
        deeps.append(b.astype(np.float16))
    mid, deep = np.concatenate(mids), np.concatenate(deeps)
    np.savez(cache, mid=mid, deep=deep)
    return mid, deep


def _box(x: np.ndarray, k: int) -> np.ndarray:
    """k x k average over the spatial axes (N, H, W, C), same size, padding not counted (Keras
    AveragePooling2D(k, strides=1, padding="same"), as the shipped graph does)."""
    r = k // 2
    n, h, w, c = x.shape
    xp = np.pad(x, ((0, 0), (r, r), (r, r), (0, 0)))
    ones = np.pad(np.ones((1, h, w, 1), np.float32), ((0, 0), (r, r), (r, r), (0, 0)))
    tot, cnt = np.zeros_like(x), np.zeros((1, h, w, 1), np.float32)
    for dy in range(k):
        for dx in range(k):
            tot += xp[:, dy:dy + h, dx:dx + w]
            cnt += ones[:, dy:dy + h, dx:dx + w]
    return tot / cnt


def patch_maps(mid: np.ndarray, deep: np.ndarray, layers: str, smooth: int) -> np.ndarray:
    mid = mid.astype(np.float32)
    deep = deep.astype(np.float32)
    n, h, w, c = mid.shape
    mid = _box(mid, smooth) if smooth > 1 else mid
    mid = mid.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
    deep = _box(deep, smooth) if smooth > 1 else deep
    if layers == "6+13":
        return np.concatenate([mid, deep], axis=-1)
    if layers == "13":
        return deep
    return mid


def image_score(cell: np.ndarray, rule: str, blur: float) -> float:
    if blur > 0:
        cell = cv2.GaussianBlur(cell.astype(np.float32), (0, 0), blur)
    if rule == "inner":  # the shipped rule: the largest cell inside the edge ring (border 1)
        return float(cell[1:-1, 1:-1].max())
    flat = np.sort(cell.ravel())[::-1]
    if rule == "max":
        return float(flat[0])
    k = int(rule.split("top")[1])
    return float(flat[:k].mean())


def evaluate(maps: np.ndarray, y: np.ndarray, groups: np.ndarray, parts: list[str], view: np.ndarray,
             coreset: float, per_view: bool, rules: list[str], blurs: list[float]) -> dict[str, list[float]]:
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold

    res: dict[str, list[float]] = {}
    for tr, te in StratifiedGroupKFold(5, shuffle=True, random_state=0).split(maps, y, groups):
        good = tr[y[tr] == 0]
        cells = np.zeros((len(te),) + maps.shape[1:3], np.float32)
        for v in (np.unique(view) if per_view else [None]):
            g = good if v is None else good[view[good] == v]
            t = np.arange(len(te)) if v is None else np.nonzero(view[te] == v)[0]
            pc = an.PatchCore.fit(maps[g], groups[g], ratio=coreset, max_size=100000 if coreset >= 1 else 10000)
            for i in t:
                cells[i] = pc.cell_distances(maps[te[i]])
        for rule, blur in itertools.product(rules, blurs):
            s = np.array([image_score(c, rule, blur) for c in cells])
            yp, sp = fuse_parts([parts[i] for i in te], y[te], s, "max")
            res.setdefault(f"{rule}|blur{blur:g}", []).append(float(roc_auc_score(yp, sp)))
    return res


def load_set(data_dir: str) -> tuple[data_mod.ImageSet, np.ndarray, list[str], np.ndarray, np.ndarray]:
    """A line data set: its images, labels (1 = defective), part ids, their group index and view (0 = top)."""
    images = data_mod.scan(Path(data_dir), None, None)
    y = np.array([1 if lab == images.positive_class else 0 for lab in images.labels])
    rel = [images.rel(p) for p in images.paths]
    parts = part_ids(rel)
    groups = np.unique(parts, return_inverse=True)[1]
    view = np.array([0 if r.endswith("_top.jpg") else 1 for r in rel])
    return images, y, parts, groups, view


def main(data_dir: str, out: str, crops: tuple[str, ...] = tuple(CROPS)) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    images, y, parts, groups, view = load_set(data_dir)
    results: dict[str, dict[str, float]] = {}
    for crop_name, spec in CROPS.items():
        if crop_name not in crops:
            continue
        mid, deep = raw_features(images.paths, spec, Path(out).parent / f"study-{crop_name}.npz")
        for layers, smooth, coreset, per_view in itertools.product(LAYERS, (3,), (0.1,), (False, True)):
            maps = patch_maps(mid, deep, layers, smooth)
            r = evaluate(maps, y, groups, parts, view, coreset, per_view, ["max", "inner", "top3", "top10"], [0.0, 1.0])
            for k, v in r.items():
                name = f"{crop_name}|L{layers}|s{smooth}|c{coreset:g}|pv{int(per_view)}|{k}"
                results[name] = {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1))}
                log.info("%-60s %.3f +- %.3f", name, np.mean(v), np.std(v, ddof=1))
            prev = json.loads(Path(out).read_text()) if Path(out).exists() else {}
            Path(out).write_text(json.dumps({**prev, **results}, indent=1))


# ---------------------------------------------------------------- third pass (2026-12-06): cheap ideas on the shipped crop


def third_features(paths: list[Path], cache: Path) -> dict[str, np.ndarray]:
    """The shipped crop's raw maps, the same of the mirrored crop, and each cell's Lab mean (14 x 14 x 3), cached."""
    if cache.exists():
        return dict(np.load(cache))
    spec = CROPS["upright_tight"]
    m = patch_model()
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("mid", "deep", "mid_f", "deep_f", "lab")}
    for i in range(0, len(paths), 16):
        rgb = np.stack(crops_rgb(paths[i:i + 16], spec))
        lab = np.stack([cv2.cvtColor(b, cv2.COLOR_RGB2LAB) for b in rgb]).astype(np.float32)
        out["lab"].append(lab.reshape(len(rgb), 14, 16, 14, 16, 3).mean(axis=(2, 4)).astype(np.float16))
        for suffix, x in (("", rgb), ("_f", rgb[:, :, ::-1])):
            a, b = m.predict(x.astype(np.float32) / 127.5 - 1.0, verbose=0)
            out["mid" + suffix].append(a.astype(np.float16))
            out["deep" + suffix].append(b.astype(np.float16))
    res = {k: np.concatenate(v) for k, v in out.items()}
    np.savez(cache, **res)  # type: ignore[arg-type]
    return res


def _knn_cells(pc: an.PatchCore, x: np.ndarray, k: int) -> np.ndarray:
    """(H, W) mean distance to the k nearest bank rows (k = 1: the shipped nearest-neighbour distance)."""
    if k == 1:
        return pc.cell_distances(x)
    h, w, d = x.shape
    q = x.reshape(-1, d)
    d2 = (q * q).sum(1)[:, None] - 2 * q @ pc.bank.T + (pc.bank * pc.bank).sum(1)[None, :]
    part = np.sqrt(np.maximum(np.partition(d2, k, axis=1)[:, :k], 0.0))
    return part.mean(axis=1).reshape(h, w)


def third_variant(f: dict[str, np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray | None, int, bool]:
    """(maps, mirrored maps or None, k, per-view) of a named variant; z-scoring is done per fold (bank stats)."""
    maps = patch_maps(f["mid"], f["deep"], "6+13", 3)
    flip = patch_maps(f["mid_f"], f["deep_f"], "6+13", 3) if "mirror" in name else None
    if "lab" in name:  # the cell's Lab mean, scaled so its spread matches a typical feature channel's x w
        w = float(name.split("lab")[1].split("+")[0] or 1)
        lab = f["lab"].astype(np.float32)
        lab = (lab - lab.mean(axis=(0, 1, 2))) / lab.std(axis=(0, 1, 2)) * maps.std() * w
        maps = np.concatenate([maps, lab], axis=-1)
        if flip is not None:
            flip = np.concatenate([flip, lab[:, :, ::-1]], axis=-1)
    k = int(name.split("k")[1].split("+")[0]) if "+k" in name or name.startswith("k") else 1
    return maps, flip, k, "pv" in name


def third_fold(maps: np.ndarray, flip: np.ndarray | None, y: np.ndarray, groups: np.ndarray, view: np.ndarray,
               tr: np.ndarray, te: np.ndarray, k: int, per_view: bool, zscore: bool) -> np.ndarray:
    """Normalised scores d / (d + d_thr) of the test crops, as cv_fold makes them (per-view banks: each its own
    threshold from its own held-out good crops)."""
    good = tr[y[tr] == 0]
    s = np.zeros(len(te))
    for v in (np.unique(view) if per_view else [None]):
        g = good if v is None else good[view[good] == v]
        t = np.arange(len(te)) if v is None else np.nonzero(view[te] == v)[0]
        mu, sd = (maps[g].mean(axis=(0, 1, 2)), maps[g].std(axis=(0, 1, 2)) + 1e-3) if zscore else (0.0, 1.0)
        mg = (maps[g] - mu) / sd
        pc = an.PatchCore.fit(mg, groups[g], ratio=0.1, max_size=10000)
        sc = an.AnomalyScorer("patchcore", 1.0, patchcore=pc, border=1)
        d_tr = np.array([sc.crop_distance(pc.cell_distances(p, int(gg))) for p, gg in zip(mg, groups[g], strict=True)])
        thr = an.frr_threshold(d_tr, groups[g], 0.001, n_boot=2)["distance"]
        for i in t:
            d = sc.crop_distance(_knn_cells(pc, (maps[te[i]] - mu) / sd, k))
            if flip is not None:
                d = min(d, sc.crop_distance(_knn_cells(pc, (flip[te[i]] - mu) / sd, k)))
            s[i] = an.normalise(d, thr)
    return s


THIRD_VARIANTS = ("base", "pv", "z", "pv+z", "k3", "pv+k3", "lab1", "pv+lab1", "lab3", "pv+lab3", "mirror",
                  "pv+mirror")


def third(data_dir: str, out: str, variants: tuple[str, ...] = THIRD_VARIANTS) -> None:
    """Every variant on 10 grouped folds (5 x 2 repeats) of the dev set; per-part AUC (max, mean), paired
    differences against ``base`` (the shipped recipe)."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    images, y, parts, groups, view = load_set(data_dir)
    f = third_features(images.paths, Path(out).parent / "study-third.npz")
    folds = [(tr, te) for r in range(2)
             for tr, te in StratifiedGroupKFold(5, shuffle=True, random_state=r).split(y, y, groups)]
    res: dict[str, dict[str, list[float]]] = {}
    for name in variants:
        maps, flip, k, pv = third_variant(f, name)
        for tr, te in folds:
            s = third_fold(maps, flip, y, groups, view, tr, te, k, pv, "z" in name.split("+"))
            for rule in ("max", "mean"):
                yp, sp = fuse_parts([parts[i] for i in te], y[te], s, rule)
                res.setdefault(name, {}).setdefault(rule, []).append(float(roc_auc_score(yp, sp)))
            res[name].setdefault("view", []).append(float(roc_auc_score(y[te], s)))
        summary = {r: f"{np.mean(v):.3f} +- {np.std(v, ddof=1):.3f}" for r, v in res[name].items()}
        if "base" in res and name != "base":
            for r in ("max", "mean"):
                dd = np.array(res[name][r]) - np.array(res["base"][r])
                summary[f"d_{r}"] = f"{dd.mean():+.3f} +- {dd.std(ddof=1):.3f} ({int((dd > 0).sum())}/{len(dd)} up)"
        log.info("%-12s %s", name, summary)
        Path(out).write_text(json.dumps({"folds": res, "summary": {n: {r: [float(np.mean(v)), float(np.std(v, ddof=1))]
                                                                        for r, v in d.items()} for n, d in res.items()}},
                                        indent=1))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    if sys.argv[3:4] == ["--third"]:
        third(sys.argv[1], sys.argv[2], tuple(sys.argv[4:]) or THIRD_VARIANTS)
    else:
        main(sys.argv[1], sys.argv[2], tuple(sys.argv[3:]) or tuple(CROPS))
