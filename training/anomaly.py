"""The ``anomaly`` recipe: inspect from good parts only (issue 29).

``boxinspect train DATA --recipe anomaly``: DATA holds ``ok/`` (or ``good/``, ``intact/``) only, or both classes,
in which case the defects are used for evaluation only (never for fitting, never for the threshold).

Model: the frozen ImageNet MobileNetV2 (alpha 0.35) on the box crop at 224 px, with two outputs:
  * ``gap``: the pooled final features (1280 values), the same vector as the linear recipe's (the device
    retrain and the pooled-vector baseline use it);
  * ``patches``: a 14 x 14 grid of mid-level patch vectors, ``block_6_expand_relu`` (stride 8, 96 channels,
    averaged over 2 x 2 to stride 16) next to ``block_13_expand_relu`` (stride 16, 192 channels), each smoothed
    by a 3 x 3 average (PatchCore's local neighbourhood aggregation): 288 values per cell. Both are outputs of
    the one graph, so convert exports them from the same .tflite.

Scoring (edge/judge/anomaly.py, numpy): PatchCore (a greedy-coreset memory bank of good patch vectors; distance of a
cell = to its nearest bank vector; of the crop = its largest cell) or PaDiM (a Gaussian per cell). The method
was chosen by grouped CV (docs/RESULTS.md, "Good parts only"): PatchCore.

Threshold: from good parts only. Every training good crop is scored by the bank without its own group (its
views and near-duplicates: leave-one-group-out, cheap for a bank, since the bank rows remember their group),
and the threshold is the distance whose false-reject rate on good parts is ``target_frr`` (default 1 in 1,000),
with its bootstrap CI (edge/judge/anomaly.py ``frr_threshold``).

Views (``--anomaly-banks per-view``): a multi-view data set (``<part>_<view>.jpg``) can get one bank per view name,
each fitted on that view's good crops with its own threshold, next to the pooled bank (every view), which scores a
crop of no view or of a view without a bank. ``bank_index.<view>.npy`` lets convert rebuild each view's bank.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.judge import anomaly as an
from edge.judge.localize import CropSpec, shaped
from training import data as data_mod
from training import split as split_mod
from training.model import PATCH_LAYERS

log = logging.getLogger(__name__)

GOOD_NAMES = ("ok", "good", "intact")
POOLED_DIM = 1280
CV_METHODS = (*an.METHODS, "pooled_gaussian")  # the last one is the baseline, measured in CV only
BANK_FILE = "anomaly_bank.npz"
# The crop the bank sees: the box turned upright (its minimum-area rectangle, long side horizontal) and cut
# tight (a 2 % margin, no square padding), so every cell of the 14 x 14 grid is box, not belt, at one scale and
# orientation (PatchCore compares cells of different crops; misalignment and belt cells are false anomalies):
# edge.judge.localize's "aligned" crop shape. Chosen on a development set before the evaluation folds were scored
# (docs/RESULTS.md, "Good parts only").
BORDER = 1  # with it, the outer ring of the 14 x 14 grid is left out of the crop's distance (border_of)
BANKS = ("one", "per-view")  # --anomaly-banks: one bank for every view, or one per view name (and a pooled one)
MIN_VIEW_GOOD = 20  # a view gets its own bank only with at least this many good training crops


def aligned_crop(spec: CropSpec) -> CropSpec:
    """The anomaly recipe's crop for a requested one: upright and tight (``localize.shaped(spec, "aligned")``: margin
    0.02 when the request kept the default margin); ``none`` stays none."""
    return shaped(spec, "aligned")


# ---------------------------------------------------------------- the graph


def build_patch_model(img_size: int, alpha: float, weights_path: str | None) -> Any:
    """RGB float32 [0, 255] (img_size px) -> (pooled features (1280,), patch map (S/16, S/16, 288))."""
    import keras
    from keras import layers

    from training import model as model_mod

    backbone = model_mod.build_backbone(img_size, alpha, weights_path)
    backbone.trainable = False
    inputs = keras.Input(shape=(img_size, img_size, 3), dtype="float32", name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="to_minus1_plus1")(inputs)
    mid, deep, top = model_mod.trunk(backbone)(x, training=False)
    pooled = layers.GlobalAveragePooling2D(name="gap")(top)
    patches = model_mod.patch_map(mid, deep)
    return keras.Model(inputs, [pooled, patches], name="boxinspect_mobilenetv2_anomaly")


# ---------------------------------------------------------------- features, cached


@dataclass
class PatchFeatures:
    pooled: np.ndarray  # (N, 1280) float32
    patches: np.ndarray  # (N, H, W, D) float32
    ok: np.ndarray  # (N,) bool: readable
    views: np.ndarray | None = None  # (N,) view name of each file ("" none; view_names), when the caller knows it


def patch_features(paths: list[Path], img_size: int, alpha: float, weights_path: str, crop: CropSpec,
                   flip: bool = False) -> PatchFeatures:
    """Pooled + patch features of image files (cropped as ``crop`` says, all of it: upright, tight), cached on
    disk like the linear recipe's (training.features)."""
    import hashlib

    from training.features import FeatureExtractor, FeatureSpec

    tag = hashlib.sha1(crop.model_dump_json().encode()).hexdigest()[:8]

    class _Patches(FeatureExtractor):
        @property
        def cache_file(self) -> Path:
            return self.cache_dir / f"patches-{'-'.join(PATCH_LAYERS)}-{self.spec.key()}-{tag}.npz"

        def prepare(self, rgb: np.ndarray) -> np.ndarray:
            import cv2

            from edge.judge import localize

            if crop.method != "none":
                bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
                rgb = cv2.cvtColor(localize.crop(bgr, localize.locate_for_still(bgr, crop), crop), cv2.COLOR_BGR2RGB)
            return data_mod.resize(rgb, self.spec.img_size)

        def model(self) -> Any:
            if self._model is None:
                self._model = build_patch_model(self.spec.img_size, self.spec.alpha, self.spec.weights_path)
            return self._model

        def features_of_pixels(self, pixels: np.ndarray) -> np.ndarray:
            x = pixels[:, :, ::-1, :] if self.spec.flip else pixels
            pooled, patches = self.model().predict(x.astype(np.float32), batch_size=16, verbose=0)
            return np.concatenate([pooled, patches.reshape(len(patches), -1)], axis=1).astype(np.float16)

    ext = _Patches(FeatureSpec(img_size, alpha, weights_path, crop=crop.method, flip=flip))
    flat, ok = ext.features(paths)
    g = img_size // 16
    patches = flat[:, POOLED_DIM:].reshape(len(flat), g, g, -1).astype(np.float32)
    return PatchFeatures(flat[:, :POOLED_DIM].astype(np.float32), patches, np.array(ok))


# ---------------------------------------------------------------- fit and score (numpy)


def border_of(crop_method: str) -> int:
    """Edge rings left out of a crop's distance: ``BORDER`` with the aligned (upright, tight) crop, none on a
    whole image (``--crop none``: box-centred photos, whose edge cells are not the box's outline)."""
    return 0 if crop_method == "none" else BORDER


def view_names(rel: list[str]) -> np.ndarray:
    """The view of each file (``<part>_<view>.jpg``, edge/judge/fusion.py ``part_and_view``); "" for none."""
    from edge.judge.fusion import part_and_view

    return np.array([part_and_view(r)[1] or "" for r in rel], dtype=object)


def banked_views(views: np.ndarray | None, good: np.ndarray, banks: str) -> list[str]:
    """The views that get a bank of their own: with ``banks`` "per-view", every named view with at least
    ``MIN_VIEW_GOOD`` good training crops (of the rows ``good``) when there are two or more such views."""
    if banks not in BANKS:
        raise ValueError(f"--anomaly-banks must be one of {', '.join(BANKS)}, got {banks!r}")
    if banks == "one" or views is None:
        return []
    names, counts = np.unique(views[good].astype(str), return_counts=True)
    keep = [str(v) for v, c in zip(names, counts, strict=True) if v and c >= MIN_VIEW_GOOD]
    return keep if len(keep) >= 2 else []


def fit_thresholded(method: str, patches: np.ndarray, groups: np.ndarray, target_frr: float, seed: int = 0,
                    coreset_max: int = 10000, border: int = 0,
                    n_boot: int = 300) -> tuple[an.AnomalyScorer, dict[str, Any]]:
    """A scorer on good crops and its threshold (held-out good distances at ``target_frr``), set on it."""
    scorer = fit_scorer(method, patches, groups, seed, coreset_max=coreset_max, border=border)
    return scorer, set_threshold(method, scorer, patches, groups, target_frr, seed, n_boot)


def set_threshold(method: str, scorer: an.AnomalyScorer, patches: np.ndarray, groups: np.ndarray, target_frr: float,
                  seed: int = 0, n_boot: int = 300) -> dict[str, Any]:
    """Set ``scorer``'s threshold distance at ``target_frr`` on the held-out distances of the good crops it was
    fitted on (``held_out_good``); the rule with its CI (``frr_threshold``). Train, convert and retrain alike."""
    d = held_out_good(method, scorer, patches, groups, seed)
    thr = an.frr_threshold(d, groups, target_frr, n_boot=n_boot, seed=seed)
    scorer.threshold_distance = thr["distance"]
    return thr


def view_scores(scorer: an.AnomalyScorer, patches: np.ndarray, views: np.ndarray | None) -> np.ndarray:
    """Package scores ``d / (d + d_thr)`` of patch maps, each by its view's bank (``AnomalyScorer.for_view``)."""
    vs = [None] * len(patches) if views is None else [str(v) or None for v in views]
    return np.array([scorer.score_map(p, v)[0] for p, v in zip(patches, vs, strict=True)])


def fit_scorer(method: str, patches: np.ndarray, groups: np.ndarray, seed: int = 0,
               coreset_ratio: float = 0.1, coreset_max: int = 10000, border: int = 0) -> an.AnomalyScorer:
    """A scorer (threshold not yet set: 1.0) fitted on good crops' patch maps."""
    if method == "patchcore":
        return an.AnomalyScorer(method, 1.0, patchcore=an.PatchCore.fit(patches, groups, coreset_ratio, coreset_max,
                                                                        seed=seed), border=border)
    if method == "padim":
        return an.AnomalyScorer(method, 1.0, padim=an.Padim.fit(patches, seed=seed), border=border)
    raise ValueError(f"unknown anomaly method {method!r} (choose {', '.join(an.METHODS)})")


def crop_distances(scorer: an.AnomalyScorer, patches: np.ndarray) -> np.ndarray:
    """The crop distance (largest cell distance inside the scorer's border) of each patch map."""
    return np.array([scorer.crop_distance(scorer.cell_distances(p)) for p in patches])


def held_out_good(method: str, scorer: an.AnomalyScorer, patches: np.ndarray, groups: np.ndarray,
                  seed: int = 0, folds: int = 5) -> np.ndarray:
    """A distance for every training good crop from a model that did not see its group: PatchCore drops the
    bank rows of the crop's own group (leave-one-group-out); PaDiM refits on grouped folds."""
    if method == "patchcore":
        assert scorer.patchcore is not None
        return np.array([scorer.crop_distance(scorer.patchcore.cell_distances(p, int(g)))
                         for p, g in zip(patches, groups, strict=True)])
    from sklearn.model_selection import GroupKFold

    out = np.full(len(patches), np.nan)
    for tr, te in GroupKFold(n_splits=min(folds, len(np.unique(groups)))).split(patches, groups=groups):
        out[te] = crop_distances(fit_scorer(method, patches[tr], groups[tr], seed, border=scorer.border), patches[te])
    return out


class PooledGaussian:
    """Baseline: one pooled feature vector per crop, a Gaussian (Ledoit-Wolf) on good crops, Mahalanobis."""

    def __init__(self, x: np.ndarray):
        from sklearn.covariance import LedoitWolf

        self.lw = LedoitWolf().fit(np.asarray(x, np.float64))

    def distances(self, x: np.ndarray) -> np.ndarray:
        return np.sqrt(np.maximum(self.lw.mahalanobis(np.asarray(x, np.float64)), 0.0))


def pooled_held_out(x: np.ndarray, groups: np.ndarray, folds: int = 5) -> np.ndarray:
    """A Mahalanobis distance for every good crop from a Gaussian fitted without its group (grouped folds): what the
    pooled baseline's threshold is set on (studies/anomaly_study.py uses it too)."""
    from sklearn.model_selection import GroupKFold

    out = np.full(len(x), np.nan)
    for tr, te in GroupKFold(n_splits=min(folds, len(np.unique(groups)))).split(x, groups=groups):
        out[te] = PooledGaussian(x[tr]).distances(x[te])
    return out


# ---------------------------------------------------------------- cross-validation (training/cv.py calls these)


def cv_features(cfg: Any, paths: list[Path]) -> tuple[PatchFeatures, np.ndarray]:
    from training import model as model_mod

    wp = model_mod.resolve_weights(cfg.weights, cfg.alpha, cfg.img_size)
    if wp is None:
        raise data_mod.DataError("the anomaly recipe needs pretrained weights (--weights)")
    crop = aligned_crop(CropSpec(method=cfg.crop, empty_belt=cfg.empty_belt))
    f = patch_features(paths, cfg.img_size, cfg.alpha, wp, crop)
    f.views = view_names([p.name for p in paths])
    return f, f.ok


def cv_fold(cfg: Any, feats: PatchFeatures, y: np.ndarray, groups: np.ndarray, tr: np.ndarray, te: np.ndarray,
            seed: int) -> tuple[np.ndarray, float, dict]:
    """Fit on the GOOD crops of the training side only, threshold from their held-out distances at the target
    false-reject rate; score the test side (good and defective). Scores are ``d / (d + d_thr)``: threshold 0.5."""
    method = getattr(cfg, "anomaly_method", "patchcore")
    target = getattr(cfg, "target_frr", an.DEFAULT_TARGET_FRR)
    good = tr[y[tr] == 0]
    t0 = time.monotonic()
    if method == "pooled_gaussian":
        d_tr = pooled_held_out(feats.pooled[good], groups[good])
        d_te = PooledGaussian(feats.pooled[good]).distances(feats.pooled[te])
        bank = 0
    else:
        return _cv_fold_banks(cfg, feats, groups, good, te, seed, t0)
    thr = an.frr_threshold(d_tr, groups[good], target, n_boot=100, seed=seed)
    s = an.normalise(d_te, thr["distance"])
    return np.asarray(s), 0.5, {"n_good_fit": int(len(good)), "bank_rows": bank, "fit_s": round(time.monotonic() - t0, 1),
                                "threshold_distance": thr["distance"], "expected_frr_ci95": thr["frr_ci95"]}


def _cv_fold_banks(cfg: Any, feats: PatchFeatures, groups: np.ndarray, good: np.ndarray, te: np.ndarray, seed: int,
                   t0: float) -> tuple[np.ndarray, float, dict]:
    """``cv_fold`` for a PatchCore/PaDiM scorer: one bank, or one per view (``--anomaly-banks per-view``; a test
    crop of a view without a bank of its own is scored by the pooled bank, as the package does)."""
    method = getattr(cfg, "anomaly_method", "patchcore")
    kw = {"target_frr": getattr(cfg, "target_frr", an.DEFAULT_TARGET_FRR), "seed": seed, "n_boot": 100,
          "coreset_max": getattr(cfg, "coreset_max", 10000), "border": border_of(cfg.crop)}
    vnames = banked_views(feats.views, good, getattr(cfg, "anomaly_banks", "one"))
    te_views = feats.views[te] if feats.views is not None else None
    scorer = an.AnomalyScorer(method, 1.0)
    thr: dict[str, Any] = {}
    if not vnames or te_views is None or not set(te_views.astype(str)) <= set(vnames):  # the pooled bank is used
        scorer, thr = fit_thresholded(method, feats.patches[good], groups[good], **kw)
    info: dict[str, Any] = {"n_good_fit": int(len(good)), "bank_rows": scorer.bank_rows}
    if thr:
        info.update(threshold_distance=thr["distance"], expected_frr_ci95=thr["frr_ci95"])
    for v in vnames:  # flat keys (the CV summary averages every numeric key over the folds)
        g = good[feats.views[good] == v]  # type: ignore[index]
        scorer.views[v], vt = fit_thresholded(method, feats.patches[g], groups[g], **kw)
        info.update({f"n_good_fit_{v}": int(len(g)), f"bank_rows_{v}": scorer.views[v].bank_rows,
                     f"threshold_distance_{v}": vt["distance"], f"expected_frr_ci95_{v}": vt["frr_ci95"]})
    s = view_scores(scorer, feats.patches[te], te_views)
    return s, 0.5, {**info, "fit_s": round(time.monotonic() - t0, 1)}


# ---------------------------------------------------------------- data with good parts only


def scan(data_dir: Path, positive_class: str | None = None) -> tuple[data_mod.ImageSet, bool]:
    """The images of DATA: good parts only (one class folder) or both classes. Returns (images, has_defects);
    a good-only set gets a nominal defect class ``defective`` (no images) so the package has two labels."""
    classes = data_mod.discover_classes(Path(data_dir))
    if len(classes) >= 2:
        return data_mod.scan(data_dir, None, positive_class), True
    if len(classes) == 1 and classes[0] in GOOD_NAMES:
        root = Path(data_dir).resolve()
        good = classes[0]
        images = data_mod.ImageSet(root=root, classes=[good, "defective"], positive_class="defective")
        images.paths = list(data_mod.image_files(root / good))
        images.labels = [good] * len(images.paths)
        return images, False
    raise data_mod.DataError(f"{data_dir}: the anomaly recipe needs a good-parts folder named one of "
                             f"{', '.join(GOOD_NAMES)} (found {classes or 'no class folders'})")


def _groups(images: data_mod.ImageSet, dup_threshold: int, crop: CropSpec) -> np.ndarray:
    """Near-duplicates judged on the crops the bank will see (``split.crop_hashes``), joined with the parts' views."""
    from training.split import part_ids

    loaded, hashes = split_mod.crop_hashes(images.paths, images.labels, crop)
    if loaded.unreadable:
        raise data_mod.DataError(f"{len(loaded.unreadable)} unreadable image(s), e.g. {loaded.unreadable[0]}")
    dup = split_mod.near_duplicate_groups(hashes, dup_threshold)
    return split_mod.merge_groups(dup.tolist(), part_ids([images.rel(p) for p in images.paths]))


# ---------------------------------------------------------------- boxinspect train --recipe anomaly


def _split(images: data_mod.ImageSet, y: np.ndarray, groups: np.ndarray, test_frac: float,
           seed: int) -> split_mod.Split:
    """Good groups: ``test_frac`` of them held out (test), the rest fit the bank (train). Defects: test only."""
    rng = np.random.default_rng(seed)
    good_groups = np.unique(groups[y == 0])
    n_test = int(round(test_frac * len(good_groups))) if len(good_groups) >= 10 else 0
    test_groups = set(rng.choice(good_groups, size=n_test, replace=False).tolist()) if n_test else set()
    items = [{"path": images.rel(p), "label": lab, "group": int(g),
              "split": "test" if (yy == 1 or int(g) in test_groups) else "train"}
             for p, lab, yy, g in zip(images.paths, images.labels, y, groups, strict=True)]
    return split_mod.Split(items, images.classes, images.positive_class,
                           {"method": "anomaly: good groups to train/test, defects to test only", "seed": seed,
                            "test_frac": test_frac})


def _evaluate(scorer: an.AnomalyScorer, feats: PatchFeatures, y: np.ndarray, te: np.ndarray,
              rel: list[str]) -> dict[str, Any]:
    """The held-out test side at the threshold: false rejects of good crops (and parts), defects found."""
    from sklearn.metrics import roc_auc_score

    from training.operating import wilson
    from training.parts import fuse_parts, is_multiview
    from training.split import part_ids

    if not len(te):
        return {"n": 0}
    s = view_scores(scorer, feats.patches[te], feats.views[te] if feats.views is not None else None)
    yt = y[te]
    out: dict[str, Any] = {"n": int(len(te)), "n_good": int((yt == 0).sum()), "n_defect": int((yt == 1).sum())}
    k = int(np.sum(s[yt == 0] >= 0.5))
    out["false_rejects"] = k
    out["frr"] = k / max(1, out["n_good"])
    out["frr_ci95"] = list(wilson(k, out["n_good"])) if out["n_good"] else None
    if out["n_defect"]:
        out["recall"] = float(np.mean(s[yt == 1] >= 0.5))
        out["auc"] = float(roc_auc_score(yt, s)) if out["n_good"] else None
    parts = part_ids([rel[i] for i in te])
    if is_multiview(parts):
        yp, sp = fuse_parts(parts, yt, np.asarray(s), "max")
        out["per_part_max"] = {"n": int(len(yp)), "frr": float(np.mean(sp[yp == 0] >= 0.5)) if np.any(yp == 0) else None,
                               "recall": float(np.mean(sp[yp == 1] >= 0.5)) if np.any(yp == 1) else None,
                               "auc": float(roc_auc_score(yp, sp)) if len(np.unique(yp)) == 2 else None}
    return out


def train_anomaly(cfg: Any) -> Path:
    """Fit the anomaly recipe per ``cfg`` (a training.train.TrainConfig); returns the run directory."""
    from training import model as model_mod

    t_start = time.monotonic()
    out = Path(cfg.out_dir)
    _check_anomaly_options(cfg, out)
    images, has_defects = scan(cfg.data_dir, cfg.positive_class)
    y = np.array([1 if lab == images.positive_class else 0 for lab in images.labels])
    log.info("data: %s, %d good%s; recipe anomaly (%s), fitted on good parts only", images.root, int((y == 0).sum()),
             f", {int(y.sum())} {images.positive_class} (evaluation only)" if has_defects else "", cfg.anomaly_method)
    weights_path = model_mod.resolve_weights(cfg.weights, cfg.alpha, cfg.img_size)
    if weights_path is None:
        raise data_mod.DataError("the anomaly recipe needs pretrained weights (frozen random features are useless)")
    groups = _groups(images, cfg.dup_threshold, cfg.crop)
    split = _split(images, y, groups, cfg.test_frac, cfg.seed)
    tr = np.array([i for i, it in enumerate(split.items) if it["split"] == "train" and y[i] == 0])
    te = np.array([i for i, it in enumerate(split.items) if it["split"] == "test"], dtype=int)
    if len(tr) < 20:
        raise data_mod.DataError(f"only {len(tr)} good training images: the anomaly recipe needs at least 20")
    t1 = time.monotonic()
    feats = patch_features(images.paths, cfg.img_size, cfg.alpha, weights_path, cfg.crop)
    feats.views = view_names([p.name for p in images.paths])
    if not feats.ok.all():
        raise data_mod.DataError(f"{int((~feats.ok).sum())} image(s) could not be featurised")
    t_feat = time.monotonic() - t1
    t2 = time.monotonic()
    scorer, thr = _fit_and_threshold(cfg, feats, groups, tr)
    test = _evaluate(scorer, feats, y, te, [images.rel(p) for p in images.paths])
    log.info("held-out test: %s", json.dumps({k: v for k, v in test.items() if not isinstance(v, dict)}))
    t_fit = time.monotonic() - t2

    model = build_patch_model(cfg.img_size, cfg.alpha, weights_path)
    out.mkdir(parents=True, exist_ok=True)
    split.save(out / "split.json")
    (out / BANK_FILE).write_bytes(scorer.to_bytes())
    np.save(out / "bank_index.npy", _bank_index(scorer, feats, tr))
    for v, sc in scorer.views.items():  # rows into that view's good training crops (tr of that view, in order)
        np.save(out / f"bank_index.{v}.npy", _bank_index(sc, feats, tr))
    wall = time.monotonic() - t_start
    history = {"anomaly": {"method": cfg.anomaly_method, "n_good_fit": int(len(tr)), "features_seconds": round(t_feat, 1),
                           "fit_seconds": round(t_fit, 1)}}
    _write_anomaly_run(out, cfg, model, history, wall, images, weights_path, split, scorer, thr, len(tr),
                       has_defects, test)
    log.info("trained in %.1f s (features %.1f s, fit %.1f s); run directory %s", wall, t_feat, t_fit, out)
    return out


def _check_anomaly_options(cfg: Any, out: Path) -> None:
    """Refuse what cannot run (an existing model, an unknown method); turn a box crop into the recipe's aligned one."""
    if (out / "model.keras").exists() and not cfg.overwrite:
        raise FileExistsError(f"{out} already holds a model.keras; choose another --out or pass --overwrite")
    if cfg.anomaly_method not in an.METHODS:
        raise ValueError(f"--anomaly-method must be one of {', '.join(an.METHODS)} to train, got {cfg.anomaly_method!r}")
    if cfg.crop.method != "none":
        cfg.crop = aligned_crop(cfg.crop)
        log.info("crop: %s (the anomaly recipe turns the box upright and cuts it tight)", cfg.crop.describe())


def _fit_and_threshold(cfg: Any, feats: Any, groups: np.ndarray, tr: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """The scorer on the good training crops, and its threshold for ``target_frr`` from held-out good groups."""
    method = cfg.anomaly_method
    kw = {"target_frr": cfg.target_frr, "seed": cfg.seed, "coreset_max": cfg.coreset_max,
          "border": border_of(cfg.crop.method)}
    scorer, thr = fit_thresholded(method, feats.patches[tr], groups[tr], **kw)
    for v in banked_views(feats.views, tr, getattr(cfg, "anomaly_banks", "one")):
        g = tr[feats.views[tr] == v]
        scorer.views[v], vt = fit_thresholded(method, feats.patches[g], groups[g], **kw)
        log.info("view %s: its own bank on %d good crops, %d patches; threshold distance %.3f", v, len(g),
                 scorer.views[v].bank_rows, vt["distance"])
    log.info("%s on %d good crops (%d groups): %s; threshold distance %.3f (95%% CI %.3f-%.3f) for FRR %g "
             "(expected FRR 95%% CI %.4f-%.4f)", method, len(tr), len(np.unique(groups[tr])),
             f"bank {scorer.bank_rows} patches" if scorer.patchcore is not None else "per-cell Gaussians",
             thr["distance"], *thr["distance_ci95"], cfg.target_frr, *thr["frr_ci95"])
    return scorer, thr


def _write_anomaly_run(out: Path, cfg: Any, model: Any, history: dict[str, Any], wall: float, images: Any,
                       weights_path: Path, split: Any, scorer: Any, thr: dict[str, Any], n_good: int,
                       has_defects: bool, test: dict[str, Any]) -> None:
    """The run directory as the other recipes write it, plus the anomaly settings and metrics."""
    from training import rundir

    rundir.write_run(out, model, cfg, history, wall, images, weights_path, {0: 1.0, 1: 1.0}, split.counts(), split)
    doc = json.loads((out / "train_config.json").read_text())
    doc.update(recipe="anomaly", output="(pooled features (1280,), patch map (14, 14, 288)); score in numpy",
               anomaly={"method": cfg.anomaly_method, "layers": list(PATCH_LAYERS), "threshold": thr,
                        "bank_file": BANK_FILE, "border": scorer.border, "views": scorer.view_thresholds,
                        "bank_rows": scorer.bank_rows, "train_good": int(n_good), "has_defects": has_defects})
    (out / "train_config.json").write_text(json.dumps(doc, indent=1))
    metrics = {"recipe": "anomaly", "threshold": 0.5, "threshold_distance": thr["distance"], "threshold_rule": thr,
               "threshold_selection": {"split": "train (held-out good, leave-one-group-out)",
                                       "target_frr": cfg.target_frr}, "test": test}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))


def _bank_index(scorer: an.AnomalyScorer, feats: PatchFeatures, tr: np.ndarray) -> np.ndarray:
    """(rows, 2): for each bank row, the training image (index into ``tr``) and the cell it came from, so convert
    can rebuild the bank from the converted model's own patch features. Empty for PaDiM."""
    if scorer.patchcore is None or scorer.patchcore.index is None:
        return np.zeros((0, 2), np.int64)
    cells = feats.patches.shape[1] * feats.patches.shape[2]
    pos = scorer.patchcore.index
    return np.stack([pos // cells, pos % cells], axis=1)
