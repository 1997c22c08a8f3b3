"""Repeated, stratified, grouped cross-validation of a training recipe: the project's yardstick.

Groups: the near-duplicate clusters of ``training.split`` (dHash over 8 dihedral transforms) merged with
part groups: files named ``<part>_<view>.<ext>`` (several views of one part) always stay in one fold. Folds:
scikit-learn's ``StratifiedGroupKFold`` with a different shuffle seed per repeat.

Recipes:
  linear    frozen MobileNetV2 features (cached on disk, see ``training.features``), optional flip
            test-time augmentation (mean of the features of the image and its mirror) and scales (mean of
            the features at several input sizes, through model.keras' own graph), standardise, L2
            logistic regression with C chosen by an inner grouped CV on the training side of each fold
            (or fixed with --C).
  finetune  the two-phase recipe of ``training.train`` per fold (the fold's training side is split again
            into train and validation for early stopping); expensive.

Per fold: ROC AUC, and at the fold's operating threshold (chosen on the training side only: the inner
out-of-fold scores for ``linear``, the validation split for ``finetune``) macro F1, defect recall and
specificity. Reported as mean +- sd over all folds of all repeats. Outputs in OUT: ``oof_scores.csv`` (every
image's out-of-fold score per repeat), ``summary.json``, ``cv.png``.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from training import backbones, operating
from training import data as data_mod
from training import split as split_mod
from training.parts import FUSIONS, fuse_parts, is_multiview
from training.split import part_ids

if TYPE_CHECKING:
    from edge.judge.localize import CropShape, CropSpec
    from training.model import Pooling

log = logging.getLogger(__name__)

RECIPES = ("linear", "finetune", "anomaly")


@dataclass
class CVConfig:
    data_dir: Path
    out_dir: Path
    recipe: str = "linear"
    folds: int = 5
    repeats: int = 2
    seed: int = 0
    img_size: int = 224
    alpha: float = 0.35
    weights: str = "imagenet"
    flip_tta: bool = False
    scales: list[int] | None = None  # linear: mean of the pooled features at these sizes (largest = img_size)
    crop: str = "none"
    empty_belt: str | None = None  # crop: a folder of empty-belt frames (CropSpec.empty_belt, --empty DIR)
    finder: str | None = None  # a learned box finder .tflite answering before the crop search (--finder)
    crop_shape: CropShape = "square"  # linear: the crop's shape around a found box (edge.judge.localize.shaped)
    pooling: Pooling = "gap"  # linear: the feature vector (training.model.POOLINGS)
    C: float | None = None  # None = inner grouped CV
    scaling: str = "global"  # linear: feature scaling before the logistic head (training.linear.SCALINGS)
    target_recall: float | None = None  # neither: training.operating.DEFAULT_COST_RATIO
    cost_ratio: float | None = None
    dup_threshold: int = split_mod.DEFAULT_DUP_THRESHOLD
    classes: list[str] | None = None
    positive_class: str | None = None
    views: bool = True  # group <part>_<view> files and report per-part fused metrics
    # finetune recipe
    epochs: int = 8
    fine_tune_epochs: int = 6
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-4
    unfreeze_blocks: int = 8
    label_smoothing: float = 0.0
    patience: int = 3
    resume: bool = False  # keep the folds already finished in OUT (folds.jsonl + their scores), run the rest
    only_folds: list[int] | None = None  # 1-based fold numbers (in run order) to run; None = all
    extra: dict = field(default_factory=dict)
    anomaly_method: str = "patchcore"  # anomaly recipe: patchcore | padim | pooled_gaussian (the baseline)
    target_frr: float = 0.001  # anomaly recipe: the threshold's false-reject rate on good parts
    coreset_max: int = 10000  # anomaly (patchcore): largest bank
    anomaly_banks: str = "one"  # anomaly: one bank, or "per-view" (training/anomaly.py banked_views)

    def to_json(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


# ---------------------------------------------------------------- metrics


def fold_metrics(y: np.ndarray, s: np.ndarray, threshold: float) -> dict:
    from sklearn.metrics import f1_score, roc_auc_score

    y = np.asarray(y).astype(int)
    pred = (np.asarray(s) >= threshold).astype(int)
    both = len(np.unique(y)) == 2
    return {
        "roc_auc": float(roc_auc_score(y, s)) if both else float("nan"),
        "macro_f1": float(f1_score(y, pred, average="macro", labels=[0, 1], zero_division=0)),
        "recall": float(np.mean(pred[y == 1])) if np.any(y == 1) else float("nan"),
        "specificity": float(np.mean(pred[y == 0] == 0)) if np.any(y == 0) else float("nan"),
        "macro_f1_at_0.5": float(f1_score(y, (np.asarray(s) >= 0.5).astype(int), average="macro", labels=[0, 1],
                                          zero_division=0)),
        "threshold": float(threshold),
        "n": int(len(y)),
    }


def mean_sd(rows: list[dict]) -> dict:
    keys = [k for k, v in rows[0].items() if k not in ("threshold", "n", "repeat", "fold") and isinstance(v, int | float)]
    out = {}
    for k in keys:
        v = np.array([r[k] for r in rows], dtype=np.float64)
        v = v[np.isfinite(v)]
        out[k] = {"mean": float(v.mean()) if len(v) else None, "sd": float(v.std(ddof=1)) if len(v) > 1 else None,
                  "n_folds": int(len(v))}
    return out


# ---------------------------------------------------------------- recipes


def linear_features(cfg: CVConfig, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(features (n, D), readable mask); with ``--weights auto`` the features of every candidate backbone stacked,
    (len(backbones.CANDIDATES), n, D), so each fold chooses on its own training part."""
    if not backbones.is_auto(cfg.weights):
        return _linear_features(cfg, cfg.weights, paths)
    both = [_linear_features(cfg, w, paths) for w in backbones.CANDIDATES]
    return np.stack([x for x, _ in both]), np.logical_and.reduce([ok for _, ok in both])


def _linear_features(cfg: CVConfig, weights: str, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    from training import model as model_mod
    from training.features import FeatureExtractor, FeatureSpec

    wp = model_mod.resolve_weights(weights, cfg.alpha, cfg.img_size)
    scales = model_mod.check_scales(cfg.scales, cfg.img_size)
    multi = scales if len(scales) > 1 else ()
    model_mod.check_pooling(cfg.pooling, scales, cfg.flip_tta)
    spec = FeatureSpec(cfg.img_size, cfg.alpha, wp, flip=False, crop=cfg.crop, scales=multi,
                       empty_belt=cfg.empty_belt, finder=cfg.finder, shape=cfg.crop_shape, pooling=cfg.pooling)
    x, ok = FeatureExtractor(spec).features(paths)
    if cfg.flip_tta:
        x2, ok2 = FeatureExtractor(FeatureSpec(cfg.img_size, cfg.alpha, wp, flip=True, crop=cfg.crop,
                                               scales=multi, empty_belt=cfg.empty_belt,
                                               finder=cfg.finder, shape=cfg.crop_shape)).features(paths)
        x = (x + x2) / 2.0
        ok = [a and b for a, b in zip(ok, ok2, strict=True)]
    return x, np.array(ok)


def _linear_fold(cfg: CVConfig, x, y, groups, tr, te, seed) -> tuple[np.ndarray, float, dict]:
    from training import linear

    info: dict = {}
    if x.ndim == 3:  # --weights auto: the backbone chosen on this fold's training part only
        choice = backbones.choose(x[:, tr], y[tr], groups[tr], c=cfg.C, seed=seed, scaling=cfg.scaling)
        fit, x = choice.fit, x[backbones.CANDIDATES.index(choice.weights)]
        info = {"weights": choice.weights, "oof_auc_by_weights": choice.oof_auc}
    else:
        fit = linear.fit(x[tr], y[tr], groups[tr], c=cfg.C, seed=seed, scaling=cfg.scaling)
    s = fit["model"].predict_proba(x[te])[:, 1]
    thr = operating.choose(y[tr], fit["oof"], cfg.target_recall, cfg.cost_ratio)["threshold"]
    return s, thr, {"C": fit["C"], **info}


def _finetune_fold(cfg: CVConfig, images: data_mod.ImageSet, rel: list[str], y, groups, tr, te, seed,
                   fold_dir: Path) -> tuple[np.ndarray, float, dict]:
    import keras

    from edge.judge.localize import NO_CROP
    from training.train import TrainConfig, train

    val_mask = split_mod.first_fold(y[tr], groups[tr], 0.15, seed + 1000)
    items = []
    for k, i in enumerate(tr):
        items.append({"path": rel[i], "label": images.labels[i], "group": int(groups[i]),
                      "split": "val" if val_mask[k] else "train"})
    for i in te:
        items.append({"path": rel[i], "label": images.labels[i], "group": int(groups[i]), "split": "test"})
    sp = split_mod.Split(items, images.classes, images.positive_class, {"method": "cv fold", "seed": seed})
    fold_dir.mkdir(parents=True, exist_ok=True)
    sp.save(fold_dir / "fold_split.json")
    tcfg = TrainConfig(
        data_dir=images.root, out_dir=fold_dir, classes=images.classes, positive_class=images.positive_class,
        img_size=cfg.img_size, alpha=cfg.alpha, weights=cfg.weights, epochs=cfg.epochs,
        fine_tune_epochs=cfg.fine_tune_epochs, learning_rate=cfg.learning_rate,
        fine_tune_learning_rate=cfg.fine_tune_learning_rate, unfreeze_blocks=cfg.unfreeze_blocks,
        patience=cfg.patience, label_smoothing=cfg.label_smoothing, split_manifest=fold_dir / "fold_split.json",
        seed=seed, verbose=0, overwrite=True, recipe="finetune", crop=NO_CROP,  # folds are scored uncropped below
    )
    train(tcfg)
    model = keras.models.load_model(fold_dir / "model.keras", compile=False)

    def predict(idx) -> np.ndarray:
        loaded = data_mod.load_images([images.paths[i] for i in idx], [images.labels[i] for i in idx], cfg.img_size)
        return model.predict(loaded.pixels.astype(np.float32), batch_size=32, verbose=0).ravel().astype(np.float64)

    va = tr[val_mask]
    thr = operating.choose(y[va], predict(va), cfg.target_recall, cfg.cost_ratio)["threshold"]
    s = predict(te)
    keras.backend.clear_session()
    return s, thr, {}


# ---------------------------------------------------------------- resume


FOLD_SCORES = "fold_scores.jsonl"


def _save_fold_scores(out: Path, r: int, f: int, rel_te: list[str], s: np.ndarray) -> None:
    with open(out / FOLD_SCORES, "a") as fh:
        fh.write(json.dumps({"repeat": r, "fold": f, "paths": rel_te, "scores": [float(v) for v in s]}) + "\n")


def _finished_folds(out: Path, rel: list[str]) -> dict[tuple[int, int], tuple[dict, np.ndarray | None]]:
    """Folds an earlier (interrupted) run finished: {(repeat, fold): (metrics row, test scores or None)}."""
    rows = {}
    if (out / "folds.jsonl").is_file():
        for line in (out / "folds.jsonl").read_text().splitlines():
            if line.strip():
                m = json.loads(line)
                rows[(m["repeat"], m["fold"])] = m
    scores: dict[tuple[int, int], dict[str, float]] = {}
    if (out / FOLD_SCORES).is_file():
        for line in (out / FOLD_SCORES).read_text().splitlines():
            if line.strip():
                d = json.loads(line)
                scores[(d["repeat"], d["fold"])] = dict(zip(d["paths"], d["scores"], strict=True))
    pos = {p: i for i, p in enumerate(rel)}
    out_d: dict[tuple[int, int], tuple[dict, np.ndarray | None]] = {}
    for k, m in rows.items():
        sc = scores.get(k)
        if sc is not None and not all(p in pos for p in sc):
            raise ValueError(f"--resume: {out} was made from other data (unknown files in its fold scores)")
        out_d[k] = (m, None if sc is None else sc)
    return out_d


def _finetune_rescore(cfg: CVConfig, images: data_mod.ImageSet, te: np.ndarray, fold_dir: Path) -> np.ndarray:
    """Test scores of a fine-tune fold's saved model (a fold finished before fold scores were kept)."""
    import keras

    model = keras.models.load_model(fold_dir / "model.keras", compile=False)
    loaded = data_mod.load_images([images.paths[i] for i in te], [images.labels[i] for i in te], cfg.img_size)
    s = model.predict(loaded.pixels.astype(np.float32), batch_size=32, verbose=0).ravel().astype(np.float64)
    keras.backend.clear_session()
    return s


# ---------------------------------------------------------------- main entry


@dataclass
class CVData:
    """The readable images of a CV run with their labels, parts and groups (one entry per image)."""

    images: data_mod.ImageSet
    rel: list[str]
    y: np.ndarray
    parts: list[str]
    groups: np.ndarray
    multiview: bool
    unreadable: list[Path]


@dataclass
class _Folds:
    """What the folds produce: metrics rows (per view and per part rule) and each image's out-of-fold score."""

    rows: list[dict]
    part_rows: dict[str, list[dict]]
    oof: np.ndarray  # (repeats, images), NaN where not scored
    fold_of: np.ndarray  # (repeats, images), -1 where not scored
    n_run: int = 0

    def record(self, d: CVData, r: int, f: int, te: np.ndarray, s: np.ndarray | None, m: dict) -> None:
        """Keep fold (r, f)'s metrics row and, when scored, its test scores and per-part metrics."""
        self.rows.append(m)
        if s is None:
            return
        self.oof[r, te] = s
        self.fold_of[r, te] = f
        if d.multiview:
            pte = [d.parts[i] for i in te]
            for rule in FUSIONS:
                yp, sp_ = fuse_parts(pte, d.y[te], s, rule)
                self.part_rows[rule].append({"repeat": r, "fold": f, **fold_metrics(yp, sp_, m["threshold"])})


def _check_config(cfg: CVConfig) -> None:
    if cfg.recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {cfg.recipe!r}")
    if cfg.recipe == "finetune" and (cfg.flip_tta or cfg.crop != "none" or (cfg.scales and len(cfg.scales) > 1)):
        raise ValueError("--flip-tta, --scales and --crop are measured with the linear recipe only")
    if cfg.pooling != "gap" and cfg.recipe != "linear":
        raise ValueError("--pooling is for the linear recipe")
    if backbones.is_auto(cfg.weights) and cfg.recipe != "linear":
        raise ValueError("--weights auto is the linear recipe's choice; pass --weights imagenet or boxes")
    if cfg.crop_shape != "square" and cfg.recipe != "linear":
        raise ValueError("--crop-shape is for the linear recipe (the anomaly recipe always cuts the aligned crop)")
    if cfg.finder and (cfg.recipe != "linear" or cfg.crop == "none"):
        raise ValueError("--finder is measured with the linear recipe and a crop method only (--crop auto: the "
                         "search where the finder finds no box)")


def hash_crop(cfg: CVConfig) -> tuple[CropSpec | None, str | None]:
    """The box the recipe's model sees, for judging near-duplicates on it: the linear recipe's box (its finder first)
    cut square whatever ``crop_shape`` says, so runs that differ only in the crop's shape share their groups and folds
    (paired differences; upright tight crops of different boxes look more alike and merge more); the anomaly
    recipe's aligned crop; None for the whole image."""
    if cfg.crop == "none" or cfg.recipe == "finetune":
        return None, None
    from edge.judge.localize import CropSpec, shaped

    spec = CropSpec(method=cfg.crop, empty_belt=cfg.empty_belt)  # type: ignore[arg-type]
    if cfg.recipe == "anomaly":
        return shaped(spec, "aligned"), None
    return spec, cfg.finder


def load_data(cfg: CVConfig) -> CVData:
    """Scan the data set, drop unreadable images, and group near-duplicates (and the views of a part)."""
    images = data_mod.scan(cfg.data_dir, cfg.classes, cfg.positive_class)
    rel = [images.rel(p) for p in images.paths]
    y_all = np.array([1 if lab == images.positive_class else 0 for lab in images.labels])

    loaded, hashes = split_mod.crop_hashes(images.paths, images.labels, *hash_crop(cfg))
    keep = np.array([p not in set(loaded.unreadable) for p in images.paths])
    dup = split_mod.near_duplicate_groups(hashes, cfg.dup_threshold)
    idx_keep = np.nonzero(keep)[0]
    rel = [rel[i] for i in idx_keep]
    images.paths = [images.paths[i] for i in idx_keep]
    images.labels = [images.labels[i] for i in idx_keep]
    y = y_all[idx_keep]
    parts = part_ids(rel)
    multiview = cfg.views and is_multiview(parts)
    groups = split_mod.merge_groups(dup.tolist(), parts) if cfg.views else dup
    log.info("cv: %d images (%d %s), %d groups (near-duplicates%s), %d x %d folds, recipe %s",
             len(y), int(y.sum()), images.positive_class, len(np.unique(groups)),
             " + parts of multi-view files" if cfg.views else "", cfg.repeats, cfg.folds, cfg.recipe)
    return CVData(images, rel, y, parts, groups, bool(multiview), list(loaded.unreadable))


def _kept_fold(cfg: CVConfig, d: CVData, out: Path, r: int, f: int, te: np.ndarray, m: dict,
               sc: dict[str, float] | None) -> np.ndarray | None:
    """The test scores of fold (r, f) finished by an earlier run (None if that run kept none)."""
    number = r * cfg.folds + f + 1
    s = None
    if sc is not None:
        if set(sc) != {d.rel[i] for i in te}:
            raise ValueError(f"--resume: fold {number} of {out} has other test images than this run's "
                             "fold (other --folds/--seed/--dup-threshold?)")
        s = np.array([sc[d.rel[i]] for i in te])
    fold_dir = out / "folds" / f"r{r}f{f}"
    if s is None and cfg.recipe == "finetune" and (fold_dir / "model.keras").is_file():
        s = _finetune_rescore(cfg, d.images, te, fold_dir)  # folds finished before scores were saved
        _save_fold_scores(out, r, f, [d.rel[i] for i in te], s)
    return s


def _new_fold(cfg: CVConfig, d: CVData, x: np.ndarray | None, out: Path, r: int, f: int, tr: np.ndarray,
              te: np.ndarray) -> tuple[np.ndarray, dict]:
    """Train and score fold (r, f); its metrics row and scores are appended to OUT before returning."""
    seed = cfg.seed + r
    if cfg.recipe == "linear":
        s, thr, info = _linear_fold(cfg, x, d.y, d.groups, tr, te, seed)
    elif cfg.recipe == "anomaly":
        from training import anomaly

        s, thr, info = anomaly.cv_fold(cfg, x, d.y, d.groups, tr, te, seed)
    else:
        s, thr, info = _finetune_fold(cfg, d.images, d.rel, d.y, d.groups, tr, te, seed,
                                      out / "folds" / f"r{r}f{f}")
    m = {"repeat": r, "fold": f, **fold_metrics(d.y[te], s, thr), **info}
    with open(out / "folds.jsonl", "a") as fh:  # partial results survive an interrupted run
        fh.write(json.dumps(m) + "\n")
    _save_fold_scores(out, r, f, [d.rel[i] for i in te], s)
    return s, m


def _run_folds(cfg: CVConfig, d: CVData, x: np.ndarray | None, out: Path, t0: float) -> _Folds:
    """Every fold of every repeat: kept from an earlier run (--resume), skipped (--only-folds) or run."""
    from sklearn.model_selection import StratifiedGroupKFold

    n = len(d.y)
    folds = _Folds([], {rule: [] for rule in FUSIONS}, np.full((cfg.repeats, n), np.nan),
                   np.full((cfg.repeats, n), -1))
    n_total = cfg.repeats * cfg.folds
    finished = _finished_folds(out, d.rel) if cfg.resume else {}
    if finished:
        log.info("resume: %d fold(s) already finished in %s are kept", len(finished), out)
    for r in range(cfg.repeats):
        sgkf = StratifiedGroupKFold(n_splits=cfg.folds, shuffle=True, random_state=cfg.seed + r)
        for f, (tr, te) in enumerate(sgkf.split(np.zeros(n), d.y, d.groups)):
            tf0 = time.monotonic()
            number = r * cfg.folds + f + 1
            if (r, f) in finished:
                m, sc = finished[(r, f)]
                folds.record(d, r, f, te, _kept_fold(cfg, d, out, r, f, te, m, sc), m)
                log.info("fold %d/%d (repeat %d, fold %d): kept from the earlier run, AUC %.3f", number, n_total,
                         r + 1, f + 1, m["roc_auc"])
                continue
            if cfg.only_folds is not None and number not in cfg.only_folds:
                continue
            s, m = _new_fold(cfg, d, x, out, r, f, tr, te)
            folds.record(d, r, f, te, s, m)
            folds.n_run += 1
            el = time.monotonic() - t0
            todo = (len(cfg.only_folds) if cfg.only_folds is not None else n_total) - len(finished) - folds.n_run
            log.info("fold %d/%d (repeat %d, fold %d): AUC %.3f, macro F1 %.3f, recall %.3f, specificity %.3f "
                     "at %.3f%s (%.0f s; %.0f s elapsed, ~%.0f s left)", number, n_total, r + 1, f + 1,
                     m["roc_auc"], m["macro_f1"], m["recall"], m["specificity"], m["threshold"],
                     (f", C {m['C']:g}" if "C" in m else "") + (f", backbone {m['weights']}" if "weights" in m else ""),
                     time.monotonic() - tf0, el,
                     el / folds.n_run * max(todo, 0))
    folds.rows.sort(key=lambda m: (m["repeat"], m["fold"]))
    if not folds.rows:
        raise ValueError("no fold ran (check --only-folds)")
    return folds


def _partial_summary(cfg: CVConfig, d: CVData, folds: _Folds, out: Path, t0: float) -> dict:
    """A partial run (--only-folds, or folds finished before their scores were kept): per-fold metrics only;
    the pooled operating point needs every image scored once."""
    mv = d.multiview
    summary = {"config": cfg.to_json(), "partial": True,
               "data": {"root": str(d.images.root), "n": int(len(d.y)), "n_positive": int(d.y.sum())},
               "per_view": mean_sd(folds.rows), "folds": folds.rows,
               "per_part": {rule: mean_sd(v) for rule, v in folds.part_rows.items() if v} if mv else None,
               "folds_per_part": folds.part_rows if mv else None,
               "wall_time_s": round(time.monotonic() - t0, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    log.info("cv partial (%d of %d folds) in %.0f s: %s", len(folds.rows), cfg.repeats * cfg.folds,
             summary["wall_time_s"], format_summary(summary))
    return summary


def _crop_report(cfg: CVConfig, images: data_mod.ImageSet, out: Path) -> dict | None:
    """How the localiser did on the data, before the folds (OUT/crops.json, OUT/crops.png); None with no crop."""
    if cfg.crop == "none":
        return None
    from edge.judge.crops import fallback_warning, finder_record, report_crops
    from edge.judge.localize import CropSpec, shaped

    # _check_config leaves a shape other than square to the linear recipe
    spec = shaped(CropSpec(method=cfg.crop, empty_belt=cfg.empty_belt), cfg.crop_shape)  # type: ignore[arg-type]
    st = report_crops(images.paths, spec, out, root=images.root, finder=cfg.finder)
    return {**st.to_dict(), "warning": fallback_warning(st, spec), "finder": finder_record(cfg.finder)}


def _summary(cfg: CVConfig, d: CVData, folds: _Folds, t0: float, crops: dict | None = None) -> dict:
    """The full summary: per-fold mean +- sd and the operating point on all out-of-fold scores (repeat 0:
    every image scored once, by a model that did not see it), in the line's terms."""
    from sklearn.metrics import roc_auc_score

    y, oof, mv = d.y, folds.oof, d.multiview
    complete = [bool(np.all(np.isfinite(oof[r]))) for r in range(cfg.repeats)]
    op = operating.choose(y, oof[0], cfg.target_recall, cfg.cost_ratio)
    op_row = operating.tradeoff_row(y, oof[0], op["threshold"])
    return {
        "config": cfg.to_json(),
        "data": {"root": str(d.images.root), "n": int(len(y)), "n_positive": int(y.sum()),
                 "positive_class": d.images.positive_class, "classes": d.images.classes,
                 "n_groups": int(len(np.unique(d.groups))), "multiview": mv,
                 "n_parts": int(len(set(d.parts))), "unreadable": [str(p) for p in d.unreadable]},
        "per_view": mean_sd(folds.rows),
        "per_part": {rule: mean_sd(v) for rule, v in folds.part_rows.items() if v} if mv else None,
        "pooled_oof_auc": [float(roc_auc_score(y, oof[r])) if complete[r] else None for r in range(cfg.repeats)],
        "operating_point": {**{k: v for k, v in op.items() if k != "fallback"}, **op_row,
                            "sentence": operating.sentence(op_row), "chosen_on": "out-of-fold scores, repeat 1"},
        "tradeoff": operating.tradeoff(y, oof[0]),
        "folds": folds.rows,
        "folds_per_part": folds.part_rows if mv else None,
        "wall_time_s": round(time.monotonic() - t0, 1),
        "crops": crops,
        # --weights auto: how many folds chose each backbone on their training part
        "backbones": {w: sum(r.get("weights") == w for r in folds.rows) for w in backbones.CANDIDATES}
        if any("weights" in r for r in folds.rows) else None,
    }


def _write_oof(path: Path, d: CVData, folds: _Folds) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "y", "part", "group", "repeat", "fold", "score"])
        for r in range(folds.oof.shape[0]):
            for i in range(len(d.y)):
                w.writerow([d.rel[i], d.images.labels[i], int(d.y[i]), d.parts[i], int(d.groups[i]), r,
                            int(folds.fold_of[r, i]), f"{folds.oof[r, i]:.6f}"])


def run_cv(cfg: CVConfig) -> dict:
    """Run the cross-validation; writes OUT/oof_scores.csv, OUT/summary.json, OUT/cv.png; returns the summary."""
    _check_config(cfg)
    t0 = time.monotonic()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.resume:
        (out / "folds.jsonl").unlink(missing_ok=True)
        (out / FOLD_SCORES).unlink(missing_ok=True)
    d = load_data(cfg)
    crops = _crop_report(cfg, d.images, out)
    x = None
    if cfg.recipe in ("linear", "anomaly"):
        from training import anomaly

        x, ok = (linear_features if cfg.recipe == "linear" else anomaly.cv_features)(cfg, d.images.paths)
        if not ok.all():
            raise data_mod.DataError(f"{int((~ok).sum())} image(s) could not be featurised")
    folds = _run_folds(cfg, d, x, out, t0)
    if not np.all(np.isfinite(folds.oof[0])):
        return _partial_summary(cfg, d, folds, out, t0)
    summary = _summary(cfg, d, folds, t0, crops)
    _write_oof(out / "oof_scores.csv", d, folds)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    try:
        _plot(out / "cv.png", d.y, folds.oof, summary)
    except Exception as e:  # a failed plot must not lose the numbers
        log.warning("cv plot failed: %s", e)
    log.info("cv done in %.0f s: %s", summary["wall_time_s"], format_summary(summary))
    return summary


def format_summary(s: dict) -> str:
    def ms(d: dict, k: str) -> str:
        v = d[k]
        return "n/a" if v["mean"] is None else f"{v['mean']:.3f} +- {v['sd'] if v['sd'] is not None else 0:.3f}"

    pv = s["per_view"]
    txt = (f"AUC {ms(pv, 'roc_auc')} | macro F1 {ms(pv, 'macro_f1')} | recall {ms(pv, 'recall')} | "
           f"specificity {ms(pv, 'specificity')} ({pv['roc_auc']['n_folds']} folds)")
    if s.get("per_part"):
        txt += " | per part AUC " + ", ".join(f"{r} {ms(d, 'roc_auc')}" for r, d in s["per_part"].items())
    if s.get("backbones"):
        txt += " | backbone chosen in " + ", ".join(f"{n} fold(s): {w}" for w, n in s["backbones"].items() if n)
    return txt


def _plot(path: Path, y: np.ndarray, oof: np.ndarray, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import RocCurveDisplay

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for r in range(oof.shape[0]):
        RocCurveDisplay.from_predictions(y, oof[r], ax=axes[0], name=f"repeat {r + 1} (out of fold)")
    axes[0].plot([0, 1], [0, 1], ":", color="grey")
    pv = summary["per_view"]["roc_auc"]
    axes[0].set_title(f"ROC, AUC per fold {pv['mean']:.3f} +- {pv['sd'] or 0:.3f}")
    op = summary["operating_point"]
    fpr, tpr = 1 - op["specificity"], op["recall"]
    axes[0].plot(fpr, tpr, "o", color="red", label=f"threshold {op['threshold']:.3f}")
    axes[0].legend(loc="lower right")
    operating.draw_tradeoff(axes[1], y, oof[0], op["threshold"], "Trade-off (out-of-fold scores, repeat 1)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- comparison table


def _paired(a: dict, b: dict, key: str = "roc_auc") -> tuple[float, float, int] | None:
    """Mean and sd of the per-fold difference a - b over the folds both ran (same repeat and fold = same split)."""
    fa = {(r["repeat"], r["fold"]): r[key] for r in a["folds"]}
    fb = {(r["repeat"], r["fold"]): r[key] for r in b["folds"]}
    common = sorted(set(fa) & set(fb))
    if len(common) < 2 or a["data"]["n"] != b["data"]["n"] or a["config"]["seed"] != b["config"]["seed"]:
        return None
    d = np.array([fa[k] - fb[k] for k in common])
    return float(d.mean()), float(d.std(ddof=1)), len(common)


def load_summary(d: Path) -> dict | None:
    """summary.json of a finished run, else the folds finished so far (folds.jsonl) of an interrupted one."""
    d = Path(d)
    if (d / "summary.json").is_file():
        return json.loads((d / "summary.json").read_text())
    if (d / "folds.jsonl").is_file():
        rows = [json.loads(x) for x in (d / "folds.jsonl").read_text().splitlines() if x.strip()]
        if rows:
            return {"folds": rows, "per_view": mean_sd(rows), "per_part": None, "partial": True,
                    "config": {"seed": 0}, "data": {"n": None}}
    return None


def markdown_table(dirs: list[Path], reference: Path | None = None) -> str:
    """One row per CV output folder: mean +- sd over folds, and the paired AUC difference to ``reference``."""
    ref = load_summary(reference) if reference else None

    def f(d: dict, k: str) -> str:
        v = d.get(k)
        if not v or v["mean"] is None:
            return "-"
        return f"{v['mean']:.3f} ± {v['sd'] or 0:.3f}"

    lines = ["| run | folds | ROC AUC | macro F1 | recall | specificity | per-part AUC (max / mean / noisy-OR) | "
             "AUC - reference, paired (mean ± sd) |", "|---|---|---|---|---|---|---|---|"]
    for d in dirs:
        s = load_summary(d)
        if s is None:
            continue
        pv = s["per_view"]
        pp = s.get("per_part") or {}
        parts = " / ".join(f(pp[r], "roc_auc") for r in FUSIONS if r in pp) or "-"
        diff = "-"
        if ref is not None and Path(d) != Path(reference):
            p = _paired(s, ref) if not s.get("partial") else _paired({**s, "data": ref["data"],
                                                                       "config": ref["config"]}, ref)
            diff = f"{p[0]:+.3f} ± {p[1]:.3f} ({p[2]} folds)" if p else "-"
        name = Path(d).name + (" (partial)" if s.get("partial") else "")
        lines.append(f"| `{name}` | {pv['roc_auc']['n_folds']} | {f(pv, 'roc_auc')} | {f(pv, 'macro_f1')} | "
                     f"{f(pv, 'recall')} | {f(pv, 'specificity')} | {parts} | {diff} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m training.cv [--reference DIR] DIR...: the comparison table
    import argparse

    ap = argparse.ArgumentParser(description="markdown table of boxinspect cv output folders")
    ap.add_argument("dirs", nargs="+", type=Path)
    ap.add_argument("--reference", type=Path, default=None)
    a = ap.parse_args()
    print(markdown_table(a.dirs, a.reference))  # noqa: T201 - a command-line report
