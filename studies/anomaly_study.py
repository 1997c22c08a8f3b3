"""Settings study for the anomaly recipe (issue 29) on a DEVELOPMENT set, never on the evaluation folds.

    nice -n 10 .venv/bin/python studies/anomaly_study.py DEV_DATA OUT.json [CROP...]

DEV_DATA is a synth line-scene set rendered with its own seed (docs/RESULTS.md uses seed 7; the evaluation set
is seed 3), so the settings chosen here are fixed before the evaluation folds are scored. For every crop
variant it featurises the crops once (raw ``block_6_expand_relu`` and ``block_13_expand_relu`` maps, cached in
OUT's folder) and then scores every scoring variant on 5 grouped folds (good parts of the training folds only),
printing the per-part (max over views) AUC, mean and sd over the folds.

    ... DEV OUT.json --third [VARIANT...]   # third pass: one bank per view, z-score, k = 3, Lab, mirror
    ... DEV OUT.json --fifth [VARIANT...]   # fifth pass: FIFTH_VARIANTS, "pooled", "a&b" / "z:a&b" ensembles
    ... DEV OUT.json --fifth-types OUT_OF_FIFTH.scores.npz   # per defect type, per-part AUC (mean fusion)
    ... MERGED.json --fifth-report FIFTH.json...   # one JSON of every run's per-fold rows, a table per dev set
    ... DEV OUT.json --curve [CAP [N...]]   # sixth pass: per-part AUC against N good training parts (0: all)
    ... DEV OUT.json --fifth base cp cpp rw lin linsq "z:base&lin"   # seventh pass: self-made defects (CutPaste),
                                            # PatchCore's reweighting, the linear head on the aligned / square crop

The fifth pass cuts the shipped crop once per photo (cached raw pixels) and runs one any-size backbone per
input variant (cached); every variant is scored on the same 10 grouped folds (5 x 2) with paired differences
to ``base`` (the shipped recipe) and the folds up.
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


# ---------------------------------------------------------------- fifth pass (2026-12-06): aspect, 180-degree turns, size,
# a finer layer, and the pooled Mahalanobis in an ensemble. The located crop is cut once per photo and kept (raw
# pixels); every variant's features come from one backbone built for any input size.

FIFTH_LAYERS = ("block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu", "out_relu")
FIFTH_FEATS = ("sq224", "rot224", "sq320", "rot320", "asp224", "asprot224")


def fifth_crops(paths: list[Path], cache: Path, crop: str = "upright_tight") -> list[np.ndarray]:
    """The shipped crop (upright, tight, margin 0.02; no self-learned belt, as cv now does), RGB, native size;
    ``crop="square"``: the linear recipe's square crop of the same located box."""
    import pickle

    if cache.exists():
        return list(pickle.loads(cache.read_bytes()))
    from edge.judge import boxfinder, crops

    finder = crops.open_finder(str(boxfinder.BUILTIN)) if crop == "finder" else None
    spec = CROPS["upright_tight" if crop == "finder" else crop]
    out = []
    for p in paths:
        bgr = cv2.imread(str(p))
        loc = crops.locate_still(bgr, spec, finder=finder) if finder else localize.locate_for_still(bgr, spec)
        out.append(cv2.cvtColor(localize.crop(bgr, loc, spec), cv2.COLOR_BGR2RGB))
    cache.write_bytes(pickle.dumps(out))
    return out


def _aspect_resize(rgb: np.ndarray, long_side: int) -> np.ndarray:
    """Long side (horizontal in the upright crop) to ``long_side`` px, the short side kept in proportion and rounded
    to whole 16 px cells (at least 4 cells): every cell covers about the same share of the box's length."""
    h, w = rgb.shape[:2]
    hh = int(max(64, 16 * round(h * long_side / max(w, 1) / 16)))
    ww = long_side if w >= h else int(max(64, 16 * round(w * long_side / max(h, 1) / 16)))
    interp = cv2.INTER_AREA if (h > hh or w > ww) else cv2.INTER_LINEAR
    return cv2.resize(rgb, (ww, hh), interpolation=interp)


def _fifth_input(rgb: np.ndarray, feat: str) -> np.ndarray:
    size = int(feat[-3:])
    x = _aspect_resize(rgb, size) if feat.startswith("asp") else data_mod.resize(rgb, size)
    return x[::-1, ::-1] if "rot" in feat else x


def fifth_features(crops: list[np.ndarray], feat: str, cache: Path) -> dict[str, Any]:
    """Raw maps of the four layers (object arrays: the aspect-kept grids differ per crop), cached."""
    import pickle

    if cache.exists():
        return dict(pickle.loads(cache.read_bytes()))
    res = backbone_features([_fifth_input(c, feat) for c in crops])
    cache.write_bytes(pickle.dumps(res))
    return res


def backbone_features(xs: list[np.ndarray]) -> dict[str, Any]:
    """Raw maps of the four layers and the pooled vector of RGB inputs (any size; equal shapes batched)."""
    import keras

    from training import model as model_mod

    wp = model_mod.resolve_weights(str(next(WEIGHTS.glob("*0.35_224*.h5"))), 0.35, 224)
    bb = model_mod.build_backbone(224, 0.35, wp, any_size=True)
    m = keras.Model(bb.input, [bb.get_layer(n).output for n in FIFTH_LAYERS])
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("b3", "mid", "deep", "pooled")}
    i = 0
    while i < len(xs):  # batches of equal shape
        j = i
        while j < len(xs) and j - i < 16 and xs[j].shape == xs[i].shape:
            j += 1
        b3, mid, deep, top = m.predict(np.stack(xs[i:j]).astype(np.float32) / 127.5 - 1.0, verbose=0)
        for k, a in (("b3", b3), ("mid", mid), ("deep", deep)):
            out[k].extend(list(a.astype(np.float16)))
        out["pooled"].extend(list(top.mean(axis=(1, 2))))
        i = j
    return {"b3": out["b3"], "mid": out["mid"], "deep": out["deep"], "pooled": np.stack(out["pooled"])}


def fifth_maps(f: dict[str, Any], layers: str) -> list[np.ndarray]:
    """Per crop (H/16, W/16, D) patch map: ``6+13`` as shipped (3 x 3 smoothing, block 6 averaged to stride 16),
    ``3+6+13`` adds block 3 (stride 4, smoothed 3 x 3, averaged 4 x 4 into the same grid)."""
    out = []
    for i in range(len(f["deep"])):
        m = patch_maps(f["mid"][i][None], f["deep"][i][None], "6+13", 3)[0]
        if layers == "6@28":  # block 6 at its native stride 8, block 13 repeated 2 x 2: a 28 x 28 grid
            mid = _box(f["mid"][i][None].astype(np.float32), 3)[0]
            deep = _box(f["deep"][i][None].astype(np.float32), 3)[0].repeat(2, axis=0).repeat(2, axis=1)
            m = np.concatenate([mid, deep], axis=-1)
        if layers == "3+6+13":
            b3 = _box(f["b3"][i][None].astype(np.float32), 3)[0]
            h, w, c = b3.shape
            m = np.concatenate([m, b3.reshape(h // 4, 4, w // 4, 4, c).mean(axis=(1, 3))], axis=-1)
        if layers.endswith("+std"):
            m = m.astype(np.float32)
        if "+pos" in layers:  # sixth pass: the cell's place in the upright crop, scaled, as two more channels
            lam = float(layers.split("+pos")[1])
            h, w = m.shape[:2]
            rr, cc = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
            m = np.concatenate([m, lam * np.stack([rr, cc], axis=-1).astype(m.dtype)], axis=-1)
        out.append(m)
    if layers.endswith("+std"):  # sixth pass: every channel to unit sd over all crops (label-free), so no layer's
        flat = np.concatenate([m.reshape(-1, m.shape[-1]) for m in out])  # loud channels rule the distance
        mu, sd = flat.mean(axis=0), flat.std(axis=0) + 1e-3 * flat.std(axis=0).mean()
        out = [((m - mu) / sd).astype(np.float32) for m in out]
    return out


def _fit_bank(maps: list[np.ndarray], groups: np.ndarray) -> an.PatchCore:
    """The shipped PatchCore fit (coreset 10 %, 1,000-10,000 rows) over crops whose grids may differ in size."""
    flat = np.concatenate([m.reshape(-1, m.shape[-1]) for m in maps]).astype(np.float32)
    src = np.concatenate([np.full(m.shape[0] * m.shape[1], g, np.int64) for m, g in zip(maps, groups, strict=True)])
    n = int(min(len(flat), max(1000, min(10000, round(0.1 * len(flat))))))
    idx = an.greedy_coreset(flat, n)
    return an.PatchCore(np.ascontiguousarray(flat[idx]), src[idx], idx)


def _crop_d(pc: an.PatchCore, maps: list[np.ndarray], i: int, group: int | None) -> float:
    sc = an.AnomalyScorer("patchcore", 1.0, border=2 if maps[i].shape[0] >= 28 else 1)  # the same outer ring
    return sc.crop_distance(pc.cell_distances(maps[i], group))


def fifth_patch_scores(maps: list[np.ndarray], rot: list[np.ndarray] | None, tta: bool, y: np.ndarray,
                       groups: np.ndarray, tr: np.ndarray, te: np.ndarray,
                       crop_d: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Normalised scores d / (d + d_thr) of the test crops (``_both``); ``rot``: the 180-degree-turned crops' maps, added to the
    bank (train time) and, with ``tta``, the test distance is the smaller of crop and turned crop."""
    _crop_d = crop_d or globals()["_crop_d"]
    good = tr[y[tr] == 0]
    bank_maps = [maps[i] for i in good] + ([rot[i] for i in good] if rot is not None else [])
    bank_groups = np.concatenate([groups[good]] * (2 if rot is not None else 1))
    pc = _fit_bank(bank_maps, bank_groups)
    d_tr = np.array([_crop_d(pc, maps, i, int(groups[i])) for i in good])
    if tta and rot is not None:
        d_tr = np.minimum(d_tr, [_crop_d(pc, rot, i, int(groups[i])) for i in good])
    thr = an.frr_threshold(d_tr, groups[good], 0.001, n_boot=2)["distance"]
    d = np.array([_crop_d(pc, maps, i, None) for i in te])
    if tta and rot is not None:
        d = np.minimum(d, [_crop_d(pc, rot, i, None) for i in te])
    return _both(d, d_tr, thr)


def fifth_pooled_scores(pooled: np.ndarray, y: np.ndarray, groups: np.ndarray, tr: np.ndarray,
                        te: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pooled-vector Mahalanobis baseline on the same crop, normalised by its own good-only threshold."""
    from training.anomaly import PooledGaussian, pooled_held_out

    good = tr[y[tr] == 0]
    d_tr = pooled_held_out(pooled[good], groups[good])
    thr = an.frr_threshold(d_tr, groups[good], 0.001, n_boot=2)["distance"]
    return _both(PooledGaussian(pooled[good]).distances(pooled[te]), d_tr, thr)


def _both(d: np.ndarray, d_tr: np.ndarray, thr: float) -> tuple[np.ndarray, np.ndarray]:
    """((2, n): the package score d / (d + d_thr) and the z-score of log d against the held-out good training
    crops' log-distances (an ensemble prefixed ``z:`` averages these instead); the training crops' own z-scores,
    for the ensemble's threshold)."""
    lg = np.log(np.maximum(d_tr, 1e-9))
    z_tr = (lg - lg.mean()) / lg.std()
    return np.stack([np.asarray(an.normalise(d, thr)), (np.log(np.maximum(d, 1e-9)) - lg.mean()) / lg.std()]), z_tr


# name -> (feature set, layers, 180-degree bank, test-time min); ensembles are "a&b" (mean of normalised scores)
FIFTH_VARIANTS: dict[str, tuple[str, str, bool, bool]] = {
    "base": ("sq224", "6+13", False, False),
    "rotbank": ("sq224", "6+13", True, False),
    "rottta": ("sq224", "6+13", True, True),
    "aspect": ("asp224", "6+13", False, False),
    "aspect+rot": ("asp224", "6+13", True, False),
    "s320": ("sq320", "6+13", False, False),
    "s320+rot": ("sq320", "6+13", True, False),
    "b3": ("sq224", "3+6+13", False, False),
    "g28": ("sq224", "6@28", False, False),
    # sixth pass (2026-12-07): the cell's position as two channels scaled by lambda (nearest-neighbour distances of
    # good cells are ~4 on dev7), so a plain patch where good parts have tape (missing_tape) is far from the bank
    **{f"pos{lam}": ("sq224", f"6+13+pos{lam}", False, False) for lam in (5, 10, 20, 40)},
    "std": ("sq224", "6+13+std", False, False),
}
FIFTH_ENSEMBLES = ("base&pooled", "base&s320", "rotbank&pooled", "base&s320&pooled", "s320&pooled320", "z:base&pooled",
                   "z:rotbank&pooled", "z:base&s320&pooled")


def _fifth_member(name: str, feats: Any, y: np.ndarray, groups: np.ndarray,
                  folds: list) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per fold, the test crops' normalised scores of one variant (``pooled``: the Mahalanobis baseline)."""
    if name == "fbase":  # seventh pass: the shipped bank on crops turned by the built-in finder's rectangle
        maps = fifth_maps(feats("fnd224"), "6+13")
        return [fifth_patch_scores(maps, None, False, y, groups, tr, te) for tr, te in folds]
    if name in ("lin", "linsq", "flin"):  # seventh pass: the supervised linear head on the aligned / square crop
        p = feats({"lin": "sq224", "linsq": "square224", "flin": "fnd224"}[name])["pooled"]
        return [linear_scores(p, y, groups, tr, te) for tr, te in folds]
    if name == "rw":  # seventh pass: PatchCore's own reweighting of the largest cell (Roth et al. 2022, eq. 7)
        maps = fifth_maps(feats("sq224"), "6+13")
        return [fifth_patch_scores(maps, None, False, y, groups, tr, te, crop_d=_crop_d_rw) for tr, te in folds]
    if name in ("cp", "cpp"):  # seventh pass: heads trained on good crops vs their pasted copies
        return [seventh_scores(name, feats("sq224"), feats("aug224"), y, groups, tr, te, k)
                for k, (tr, te) in enumerate(folds)]
    if name.startswith("spade"):  # eighth pass: "spade10" (all cells of the 10 nearest), "spade10r2" (within 2)
        kk, _, rr = name[5:].partition("r")
        f = feats("sq224")
        maps = np.stack(fifth_maps(f, "6+13"))
        return [spade_scores(maps, f["pooled"], y, groups, tr, te, int(kk), int(rr) if rr else None)
                for tr, te in folds]
    if name.startswith("pooled"):  # "pooled": from the 224 px crop, "pooled320": from the 320 px one
        p = feats("sq" + (name[6:] or "224"))["pooled"]
        return [fifth_pooled_scores(p, y, groups, tr, te) for tr, te in folds]
    fs, layers, rot, tta = FIFTH_VARIANTS[name]
    maps = fifth_maps(feats(fs), layers)
    rmaps = fifth_maps(feats(fs.replace("sq", "rot").replace("asp", "asprot")), layers) if rot else None
    return [fifth_patch_scores(maps, rmaps, tta, y, groups, tr, te) for tr, te in folds]


def fifth(data_dir: str, out: str, variants: tuple[str, ...]) -> None:
    """Variants and ensembles on 10 grouped folds (5 x 2 repeats) of a dev set: per view and per-part AUC (max,
    mean), paired differences against ``base`` (the shipped recipe) with the folds up."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    images, y, parts, groups, view = load_set(data_dir)
    cdir = Path(out).parent
    crops = fifth_crops(images.paths, cdir / "fifth-crops.pkl")
    cache: dict[str, dict[str, Any]] = {}

    def feats(fs: str) -> dict[str, Any]:
        if fs not in cache:
            if fs == "aug224":
                cache[fs] = seventh_features(crops, cdir / "seventh-aug224.pkl")
            elif fs == "fnd224":  # seventh pass: the shipped crop turned by the built-in finder's rectangle
                fc = fifth_crops(images.paths, cdir / "fifth-crops-finder.pkl", "finder")
                cache[fs] = fifth_features(fc, "sq224", cdir / "fifth-fnd224.pkl")
            elif fs == "square224":  # seventh pass: the linear recipe's square crop, for the crop comparison
                sq = fifth_crops(images.paths, cdir / "fifth-crops-square.pkl", "square")
                cache[fs] = fifth_features(sq, "sq224", cdir / "fifth-square224.pkl")
            else:
                cache[fs] = fifth_features(crops, fs, cdir / f"fifth-{fs}.pkl")
        return cache[fs]

    folds = [(tr, te) for r in range(2)
             for tr, te in StratifiedGroupKFold(5, shuffle=True, random_state=r).split(y, y, groups)]
    scores: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    res: dict[str, dict[str, list[float]]] = {}
    for name in variants:
        for member in name.removeprefix("z:").split("&"):
            if member not in scores:
                scores[member] = _fifth_member(member, feats, y, groups, folds)
        s_folds = [_combined(scores, name, k) for k in range(len(folds))]
        for (tr, te), s in zip(folds, s_folds, strict=True):
            for rule in ("max", "mean"):
                yp, sp = fuse_parts([parts[i] for i in te], y[te], s, rule)
                res.setdefault(name, {}).setdefault(rule, []).append(float(roc_auc_score(yp, sp)))
            res[name].setdefault("view", []).append(float(roc_auc_score(y[te], s)))
            frr, rec = _at_threshold(scores, name, len(res[name]["view"]) - 1, y, groups, tr, te)
            res[name].setdefault("frr", []).append(frr)
            res[name].setdefault("recall", []).append(rec)
        _fifth_log(res, name)
        np.savez(Path(out).with_suffix(".scores.npz"), te=np.concatenate([te for _, te in folds]),
                 **{n: np.concatenate([_combined(scores, n, k) for k in range(len(folds))]) for n in res})
        Path(out).write_text(json.dumps({"data": data_dir, "folds": res, "summary": _fifth_summary(res)}, indent=1))


def _combined(scores: dict[str, list[tuple[np.ndarray, np.ndarray]]], name: str, k: int) -> np.ndarray:
    """Fold ``k``'s test scores of a variant or ensemble: the mean of its members' package scores, or with ``z:``
    the mean of their log-distance z-scores."""
    row = 1 if name.startswith("z:") else 0
    return np.asarray(np.mean([scores[m][k][0][row] for m in name.removeprefix("z:").split("&")], axis=0))


def _at_threshold(scores: dict[str, list[tuple[np.ndarray, np.ndarray]]], name: str, k: int, y: np.ndarray,
                  groups: np.ndarray, tr: np.ndarray, te: np.ndarray) -> tuple[float, float]:
    """(FRR on the held-out good views, recall on the defective ones) at the shipped rule's threshold (target FRR
    0.001): score 0.5 for a single member or an ``a&b`` mean; for ``z:`` ensembles the combined distance
    exp(mean z) of the held-out good training crops through the same ``frr_threshold``."""
    s = _combined(scores, name, k)
    if name.startswith("z:"):
        good = tr[y[tr] == 0]
        d_tr = np.exp(np.mean([scores[m][k][1] for m in name.removeprefix("z:").split("&")], axis=0))
        thr = an.frr_threshold(d_tr, groups[good], 0.001, n_boot=2)["distance"]
        hit = np.exp(s) >= thr
    else:
        hit = s >= 0.5
    return float(hit[y[te] == 0].mean()), float(hit[y[te] == 1].mean())


def _fifth_summary(res: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for n, d in res.items():
        out[n] = {r: [float(np.mean(v)), float(np.std(v, ddof=1))] for r, v in d.items()}
        if "base" in res and n != "base":
            for r in ("view", "max", "mean"):
                dd = np.array(d[r]) - np.array(res["base"][r])
                out[n][f"d_{r}"] = [float(dd.mean()), float(dd.std(ddof=1)), int((dd > 0).sum()), int((dd < 0).sum())]
    return out


def _fifth_log(res: dict[str, dict[str, list[float]]], name: str) -> None:
    s = _fifth_summary(res)[name]
    parts = [f"{r} {s[r][0]:.3f}+-{s[r][1]:.3f}" for r in ("view", "max", "mean", "frr", "recall")]
    parts += [f"d_{r} {s[k][0]:+.3f}+-{s[k][1]:.3f} ({s[k][2]}/10 up)" for r in ("view", "max", "mean")
              if (k := f"d_{r}") in s]
    log.info("%-22s %s", name, "  ".join(parts))


def curve(data_dir: str, out: str, sizes: tuple[int, ...] = (60, 120, 240, 0), cap: int = 10000) -> None:
    """Sixth pass: per-part AUC against the number of GOOD training parts. The same 10 grouped folds (5 x 2) of a
    large dev set; in each fold the bank is fitted on a random subset of ``sizes`` good training parts (0 = all of
    them; nested subsets, seed = fold) and scores the same test parts. ``cap``: the coreset's row limit."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    images, y, parts, groups, view = load_set(data_dir)
    cdir = Path(out).parent
    maps = fifth_maps(fifth_features(fifth_crops(images.paths, cdir / "fifth-crops.pkl"), "sq224",
                                     cdir / "fifth-sq224.pkl"), "6+13")
    folds = [(tr, te) for r in range(2)
             for tr, te in StratifiedGroupKFold(5, shuffle=True, random_state=r).split(y, y, groups)]
    res: dict[str, dict[str, list[float]]] = {}
    for k, (tr, te) in enumerate(folds):
        good_groups = np.random.default_rng(k).permutation(np.unique(groups[tr][y[tr] == 0]))
        for n in sizes:
            keep = good_groups[:n] if n else good_groups
            sub = tr[(y[tr] == 0) & np.isin(groups[tr], keep)]
            pc = _fit_bank([maps[i] for i in sub], groups[sub]) if cap == 10000 else _fit_bank_cap(maps, sub, groups, cap)
            s = np.array([_crop_d(pc, maps, i, None) for i in te])
            row = res.setdefault(f"{n or 'all'}", {})
            row.setdefault("n_good_parts", []).append(float(len(keep)))
            row.setdefault("bank_rows", []).append(float(len(pc.bank)))
            row.setdefault("view", []).append(float(roc_auc_score(y[te], s)))
            for rule in ("max", "mean"):
                yp, sp = fuse_parts([parts[i] for i in te], y[te], s, rule)
                row.setdefault(rule, []).append(float(roc_auc_score(yp, sp)))
            log.info("fold %d, %s good parts (%d crops, bank %d): per part mean %.3f", k, n or "all", len(sub),
                     len(pc.bank), row["mean"][-1])
        Path(out).write_text(json.dumps({"data": data_dir, "cap": cap, "rows": res}, indent=1))
    for n, row in res.items():
        log.info("%s good parts (%.0f): view %.3f+-%.3f max %.3f+-%.3f mean %.3f+-%.3f", n, np.mean(row["n_good_parts"]),
                 *[f(np.array(row[r])) for r in ("view", "max", "mean") for f in (np.mean, lambda a: a.std(ddof=1))])


def _fit_bank_cap(maps: list[np.ndarray], sub: np.ndarray, groups: np.ndarray, cap: int) -> an.PatchCore:
    """``_fit_bank`` with another coreset row limit (10 % of the patches, at least 1,000, at most ``cap``)."""
    flat = np.concatenate([maps[i].reshape(-1, maps[i].shape[-1]) for i in sub]).astype(np.float32)
    n = int(min(len(flat), max(1000, min(cap, round(0.1 * len(flat))))))
    idx = an.greedy_coreset(flat, n)
    return an.PatchCore(np.ascontiguousarray(flat[idx]), np.repeat(groups[sub], maps[sub[0]].shape[0] ** 2)[idx], idx)


def fifth_types(data_dir: str, scores_npz: str, rule: str = "mean") -> dict[str, dict[str, float]]:
    """Per defect type (parts.json), each type's parts against all good parts, per-part AUC (``rule`` fusion) of
    every variant in a scores file ``fifth`` wrote, pooled over the 10 folds' test scores (each part scored
    twice, once per repeat; the AUC is taken per repeat and averaged)."""
    from sklearn.metrics import roc_auc_score

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    images, y, parts, _, _ = load_set(data_dir)
    kind = {p["part"]: p.get("defect") or "good" for p in json.loads((Path(data_dir) / "parts.json").read_text())["parts"]}
    z = np.load(scores_npz)
    te = z["te"]
    half = len(te) // 2  # the two repeats, each covering every crop once
    out: dict[str, dict[str, float]] = {}
    for name in [n for n in z.files if n != "te"]:
        by_type: dict[str, list[float]] = {}
        for r in range(2):
            idx = te[r * half:(r + 1) * half]
            yp, sp = fuse_parts([parts[i] for i in idx], y[idx], z[name][r * half:(r + 1) * half], rule)
            pnames = list(dict.fromkeys(parts[i] for i in idx))  # fuse_parts keeps first-seen order
            ptype = np.array([kind[p] for p in pnames])
            for t in sorted(set(ptype) - {"good"}):
                m = (ptype == t) | (ptype == "good")
                by_type.setdefault(t, []).append(float(roc_auc_score(yp[m], sp[m])))
        out[name] = {t: float(np.mean(v)) for t, v in by_type.items()}
        log.info("%-22s %s", name, "  ".join(f"{t} {v:.2f}" for t, v in out[name].items()))
    return out


def fifth_report(out: str, runs: list[str]) -> None:
    """Merge ``fifth`` outputs (several runs of one or more dev sets; a later run's row replaces an earlier one of
    the same name and data) into one JSON of per-fold rows, and log a markdown table per dev set."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    merged: dict[str, dict[str, Any]] = {}
    for r in runs:
        doc = json.loads(Path(r).read_text())
        d = merged.setdefault(doc["data"], {"folds": {}, "summary": {}})
        d["folds"].update(doc["folds"])
        d["summary"].update(doc["summary"])
    Path(out).write_text(json.dumps(merged, indent=1))
    for data, d in merged.items():
        log.info("\n%s\n| variant | per view | per part max | per part mean | paired view | paired max | paired mean |\n"
                 "|---|---|---|---|---|---|---|", data)
        for name, sm in d["summary"].items():
            cells = [f"{sm[r][0]:.3f} ± {sm[r][1]:.3f}" for r in ("view", "max", "mean")]
            cells += [f"{sm[k][0]:+.3f} ± {sm[k][1]:.3f} ({sm[k][2]}/10)" if (k := f"d_{r}") in sm else "-"
                      for r in ("view", "max", "mean")]
            log.info("| %s | %s |", name, " | ".join(cells))



# ---------------------------------------------------------------- seventh pass (2026-12-07): self-made defects (CutPaste)
# Li et al. 2021 (CutPaste): a good crop with a patch of itself cut out and pasted elsewhere (a rectangle of 2-15 %
# of the area, aspect 0.3-3.3) or a thin rotated "scar" is a defect made from good parts only; a classifier good vs
# pasted learns what a local irregularity looks like. Here on frozen features: "cp" a logistic head on the pooled
# vector, "cpp" one on the patch cells (pasted cells vs good cells; a crop's score is its largest inner cell).
AUG_K = 4  # pasted copies per crop: two rectangles, two scars


def _paste(x: np.ndarray, rng: np.random.Generator, scar: bool) -> tuple[np.ndarray, np.ndarray]:
    """(the 224 px crop with a pasted patch inside the grid's inner cells, each 14 x 14 cell's share pasted)."""
    n = x.shape[0]
    if scar:
        w, h, angle = rng.uniform(2, 16) * n / 256, rng.uniform(10, 25) * n / 256, rng.uniform(-45, 45)
    else:
        area, ar = rng.uniform(0.02, 0.15) * n * n, float(np.exp(rng.uniform(np.log(0.3), np.log(1 / 0.3))))
        w, h, angle = float(np.sqrt(area * ar)), float(np.sqrt(area / ar)), 0.0
    r = min(0.5 * float(np.hypot(w, h)), n / 2 - n / 14)
    lo, hi = n / 14 + r, n - n / 14 - r
    cx, cy = (rng.uniform(lo, hi) if hi > lo else n / 2 for _ in range(2))
    sx, sy = (rng.uniform(r, n - r) for _ in range(2))
    mask = np.zeros((n, n), np.uint8)
    cv2.fillPoly(mask, [cv2.boxPoints(((cx, cy), (w, h), angle)).astype(np.int32)], 1)
    moved = cv2.warpAffine(x, np.float32([[1, 0, cx - sx], [0, 1, cy - sy]]), (n, n), borderMode=cv2.BORDER_REFLECT)
    moved = np.clip(moved * rng.uniform(0.9, 1.1, 3) + rng.uniform(-10, 10, 3), 0, 255).astype(np.uint8)
    out = np.where(mask[..., None] > 0, moved, x)
    return out, mask.reshape(14, n // 14, 14, n // 14).mean(axis=(1, 3))


def seventh_features(crops: list[np.ndarray], cache: Path) -> dict[str, Any]:
    """Backbone features of AUG_K pasted copies of every crop (row i * AUG_K + k), with each copy's cell cover."""
    import pickle

    if cache.exists():
        return dict(pickle.loads(cache.read_bytes()))
    xs, cover = [], []
    for i, c in enumerate(crops):
        rng = np.random.default_rng(1000 + i)
        for k in range(AUG_K):
            x, cv = _paste(data_mod.resize(c, 224), rng, scar=k % 2 == 1)
            xs.append(x)
            cover.append(cv)
    res = {**backbone_features(xs), "cover": np.stack(cover)}
    cache.write_bytes(pickle.dumps(res))
    return res


def _aug_rows(idx: np.ndarray) -> np.ndarray:
    return (idx[:, None] * AUG_K + np.arange(AUG_K)).ravel()


def _pooled_head(pooled: np.ndarray, aug: np.ndarray, fit_idx: np.ndarray) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([pooled[fit_idx], aug[_aug_rows(fit_idx)]])
    t = np.r_[np.zeros(len(fit_idx)), np.ones(len(fit_idx) * AUG_K)]
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000)).fit(x, t)


def _cell_head(maps: list[np.ndarray], amaps: list[np.ndarray], cover: np.ndarray, fit_idx: np.ndarray,
               seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    neg = np.concatenate([maps[i][1:-1, 1:-1].reshape(-1, maps[i].shape[-1]) for i in fit_idx]).astype(np.float32)
    neg = neg[np.random.default_rng(seed).permutation(len(neg))[:20000]]
    rows = _aug_rows(fit_idx)
    pos = np.concatenate([amaps[j][cover[j] >= 0.25] for j in rows]).astype(np.float32)
    t = np.r_[np.zeros(len(neg)), np.ones(len(pos))]
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=3000, class_weight="balanced")).fit(
        np.concatenate([neg, pos]), t)


def _cell_score(head: Any, m: np.ndarray) -> float:
    inner = m[1:-1, 1:-1]
    return float(head.decision_function(inner.reshape(-1, inner.shape[-1]).astype(np.float32)).max())


def seventh_scores(kind: str, base: dict[str, Any], aug: dict[str, Any], y: np.ndarray, groups: np.ndarray,
                   tr: np.ndarray, te: np.ndarray, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """One fold of a self-made-defect member (``cp``: pooled head, ``cpp``: cell head): the test crops' scores as
    ``_both`` gives them (row 0 a squashed score, row 1 a z-score against the held-out good training crops, each
    scored by a head fitted without its group), and the training good crops' held-out z-scores."""
    from sklearn.model_selection import GroupKFold

    good = tr[y[tr] == 0]
    if kind == "cp":
        def fit(idx: np.ndarray) -> Any:
            return _pooled_head(base["pooled"], aug["pooled"], idx)

        def score(head: Any, idx: np.ndarray) -> np.ndarray:
            return np.asarray(head.decision_function(base["pooled"][idx]))
    else:
        maps, amaps = fifth_maps(base, "6+13"), fifth_maps(aug, "6+13")

        def fit(idx: np.ndarray) -> Any:
            return _cell_head(maps, amaps, aug["cover"], idx, fold)

        def score(head: Any, idx: np.ndarray) -> np.ndarray:
            return np.array([_cell_score(head, maps[i]) for i in idx])
    s_tr = np.zeros(len(good))
    for a, b in GroupKFold(3).split(good, groups=groups[good]):
        s_tr[b] = score(fit(good[a]), good[b])
    s = score(fit(good), te)
    z_tr = (s_tr - s_tr.mean()) / s_tr.std()
    return np.stack([1 / (1 + np.exp(-s)), (s - s_tr.mean()) / s_tr.std()]), z_tr



def _crop_d_rw(pc: an.PatchCore, maps: list[np.ndarray], i: int, group: int | None, b: int = 9) -> float:
    """The largest inner cell's nearest-bank distance times PatchCore's weight 1 - softmax(its distances to its
    nearest bank row m* and m*'s b - 1 nearest bank rows)[m*] (anomalib's form): a cell whose nearest row sits in a
    sparse part of the bank counts more (rows of ``group`` left out, as for the threshold)."""
    inner = maps[i][1:-1, 1:-1].astype(np.float32)
    q = inner.reshape(-1, inner.shape[-1])
    bank = pc.bank
    keep = np.ones(len(bank), bool) if group is None else pc.source != group
    d2 = (q * q).sum(1)[:, None] - 2 * q @ bank.T + (bank * bank).sum(1)[None, :]
    d2[:, ~keep] = np.inf
    near = d2.argmin(axis=1)
    c = int(d2[np.arange(len(q)), near].argmax())
    m = bank[near[c]]
    dm = ((bank - m) ** 2).sum(1)
    dm[~keep] = np.inf
    support = np.argsort(dm)[:b]
    dist = np.sqrt(np.maximum(((bank[support] - q[c]) ** 2).sum(1), 0.0))
    e = np.exp(dist - dist.max())
    w = 1.0 - float(e[0] / e.sum())
    return w * float(dist[0])



def _spade_d(maps: np.ndarray, pooled: np.ndarray, bank: np.ndarray, i: int, k: int, r: int | None) -> float:
    """Eighth pass: crop ``i``'s distance against only its ``k`` nearest good crops by pooled vector (``bank``,
    indices), and their 180-degree turns; ``r``: each cell compared with the cells within ``r`` rows / columns of
    its own place (None: all their cells). The largest inner cell, as shipped."""
    near = bank[np.argsort(((pooled[bank] - pooled[i]) ** 2).sum(axis=1))[:k]]
    ref = np.concatenate([maps[near], maps[near][:, ::-1, ::-1]]).astype(np.float32)  # (2k, H, W, D)
    m = maps[i].astype(np.float32)
    h, w, d = m.shape
    if r is None:
        flat = ref.reshape(-1, d)
        d2 = (m.reshape(-1, d) ** 2).sum(1)[:, None] - 2 * m.reshape(-1, d) @ flat.T + (flat ** 2).sum(1)[None]
        cells = np.sqrt(np.maximum(d2.min(axis=1), 0)).reshape(h, w)
    else:
        cells = np.zeros((h, w), np.float32)
        for a in range(1, h - 1):
            for b in range(1, w - 1):
                win = ref[:, max(0, a - r):a + r + 1, max(0, b - r):b + r + 1].reshape(-1, d)
                cells[a, b] = np.sqrt(((win - m[a, b]) ** 2).sum(axis=1).min())
    return float(cells[1:-1, 1:-1].max())


def spade_scores(maps: np.ndarray, pooled: np.ndarray, y: np.ndarray, groups: np.ndarray, tr: np.ndarray,
                 te: np.ndarray, k: int, r: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Eighth pass (SPADE, Cohen & Hoshen 2020): one fold's ``_both`` rows; a training good crop's distance leaves
    out its own group's crops, as the shipped threshold does."""
    good = tr[y[tr] == 0]
    d_tr = np.array([_spade_d(maps, pooled, good[groups[good] != groups[i]], i, k, r) for i in good])
    thr = an.frr_threshold(d_tr, groups[good], 0.001, n_boot=2)["distance"]
    return _both(np.array([_spade_d(maps, pooled, good, i, k, r) for i in te]), d_tr, thr)


def linear_scores(pooled: np.ndarray, y: np.ndarray, groups: np.ndarray, tr: np.ndarray,
                  te: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One fold of the product's linear head (training/linear.py: C by inner grouped CV, both classes), as
    ``_both`` rows: the probability and the logit's z-score against the training good crops' inner OOF logits."""
    from training import linear

    r = linear.fit(pooled[tr], y[tr], groups[tr])
    s = np.asarray(r["model"].decision_function(pooled[te]))
    p_oof = np.clip(r["oof"][y[tr] == 0], 1e-9, 1 - 1e-9)
    s_tr = np.log(p_oof / (1 - p_oof))
    return np.stack([1 / (1 + np.exp(-s)), (s - s_tr.mean()) / s_tr.std()]), (s_tr - s_tr.mean()) / s_tr.std()


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    if sys.argv[3:4] == ["--curve"]:
        curve(sys.argv[1], sys.argv[2], tuple(int(a) for a in sys.argv[5:]) or (60, 120, 240, 0),
              int(sys.argv[4]) if len(sys.argv) > 4 else 10000)
    elif sys.argv[2:3] == ["--fifth-report"]:
        fifth_report(sys.argv[1], sys.argv[3:])
    elif sys.argv[3:4] == ["--fifth-types"]:
        Path(sys.argv[2]).write_text(json.dumps(fifth_types(sys.argv[1], sys.argv[4]), indent=1))
    elif sys.argv[3:4] == ["--fifth"]:
        fifth(sys.argv[1], sys.argv[2], tuple(sys.argv[4:]) or (*FIFTH_VARIANTS, "pooled", *FIFTH_ENSEMBLES))
    elif sys.argv[3:4] == ["--third"]:
        third(sys.argv[1], sys.argv[2], tuple(sys.argv[4:]) or THIRD_VARIANTS)
    else:
        main(sys.argv[1], sys.argv[2], tuple(sys.argv[3:]) or tuple(CROPS))
