"""The default training recipe: frozen MobileNetV2 features + standardised L2 logistic regression.

Chosen by repeated grouped cross-validation (docs/RESULTS.md): on parcel-damage it beats two-phase
fine-tuning, trains in about a minute and has one hyper-parameter (C), chosen by an inner grouped CV.

Steps: the same leakage-safe split as the fine-tune recipe (the test split stays held out for evaluate and
the convert gate); the head is fitted on train + val (it needs no early stopping); C by grouped CV on those
images (near-duplicate clusters and the parts of multi-view files stay together); the operating threshold
is chosen on the out-of-fold scores of that CV (``--target-recall`` or ``--cost-ratio``), not on a small
validation split. The saved model.keras is an ordinary Keras model: rescaling -> MobileNetV2 -> global
average pooling -> Dense(1, sigmoid) whose kernel and bias fold in the standardisation, so evaluate,
convert, predict and the edge use it unchanged.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.judge.localize import shape_of, shaped
from training import backbones, operating, rundir
from training import data as data_mod
from training import split as split_mod

log = logging.getLogger(__name__)


@dataclass
class _FitSet:
    """The train+val images the head is fitted on: paths, labels (1 = positive), relative paths, CV groups."""

    paths: list[Path]
    y: np.ndarray
    rel: list[str]
    groups: np.ndarray


@dataclass
class _Head:
    """The fitted head (training.linear.fit) and its operating point on the out-of-fold scores."""

    fit: dict
    oof_auc: float
    op: dict
    op_row: dict


def train_linear(cfg) -> Path:
    from training import model as model_mod

    t_start = time.monotonic()
    out = Path(cfg.out_dir)
    if (out / "model.keras").exists() and not cfg.overwrite:
        raise FileExistsError(f"{out} already holds a model.keras; choose another --out or pass --overwrite")
    scales = model_mod.check_scales(cfg.scales, cfg.img_size)
    model_mod.check_pooling(cfg.pooling, scales, cfg.flip_tta)
    images = data_mod.scan(cfg.data_dir, cfg.classes, cfg.positive_class)
    log.info("data: %s, classes %s, positive %r, %d files; recipe linear (frozen features + logistic head)",
             images.root, images.classes, images.positive_class, len(images.paths))
    candidates = backbones.CANDIDATES if backbones.is_auto(cfg.weights) else (cfg.weights,)
    weight_paths = {w: model_mod.resolve_weights(w, cfg.alpha, cfg.img_size) for w in candidates}
    if None in weight_paths.values():
        raise data_mod.DataError("the linear recipe needs pretrained weights (frozen random features are "
                                 "useless); pass --weights or use --recipe finetune")
    import keras

    keras.utils.set_random_seed(cfg.seed)

    split, _ = rundir.prepare_split(cfg, images)
    counts = split.counts()
    log.info("split counts: %s", counts)
    fs = _fit_set(split, images)

    t1 = time.monotonic()
    feats = {w: _features(cfg, str(p), scales, fs.paths) for w, p in weight_paths.items()}
    keep = np.logical_and.reduce([k for _, k in feats.values()])  # readable: the same files for every backbone
    xs = {w: x[keep[k]] for w, (x, k) in feats.items()}  # each backbone's rows of the kept files
    y, groups = fs.y[keep], fs.groups[keep]
    rel = [r for r, k in zip(fs.rel, keep, strict=True) if k]
    t_feat = time.monotonic() - t1

    t2 = time.monotonic()
    weights, choice = _choose_backbone(cfg, xs, y, groups)
    weights_path, x = str(weight_paths[weights]), xs[weights]
    head = _fit_head(cfg, x, y, groups, choice.fit if choice else None)
    model = _folded_model(cfg, weights_path, scales, head.fit, x, fs.paths, keep)
    t_fit = time.monotonic() - t2

    out.mkdir(parents=True, exist_ok=True)
    split.save(out / "split.json")
    _write_oof(out / "oof_scores.csv", rel, y, groups, head.fit["oof"], images.positive_class)
    operating_point = {
        **{k: v for k, v in head.op.items() if k != "fallback"}, **head.op_row,
        "sentence": operating.sentence(head.op_row), "chosen_on": "out-of-fold scores of train+val (grouped CV)",
        "oof_roc_auc": head.oof_auc, "n": int(len(y)),
    }
    (out / "operating_point.json").write_text(json.dumps(operating_point, indent=1))
    history = {
        "linear": {
            "note": "frozen backbone features, standardised, L2 logistic regression (class_weight balanced)",
            "fit_on": ["train", "val"], "n": int(len(y)), "C": head.fit["C"],
            "inner_cv_auc_by_C": {str(k): v for k, v in (head.fit["inner_auc"] or {}).items()} or None,
            "oof_roc_auc": head.oof_auc, "features_seconds": round(t_feat, 1), "fit_seconds": round(t_fit, 1),
            "backbone": {"weights": weights, "oof_auc_by_weights": choice.oof_auc if choice else None},
        }
    }
    cw = rundir.class_weights(y)
    wall = time.monotonic() - t_start
    rundir.write_run(out, model, cfg, history, wall, images, weights_path, cw, counts, split)
    _record_head(out / "train_config.json", head.fit["C"], operating_point)
    log.info("trained in %.1f s (features %.1f s, head %.1f s); run directory %s", wall, t_feat, t_fit, out)
    return out


def _fit_set(split: split_mod.Split, images: data_mod.ImageSet) -> _FitSet:
    """The train and val items of ``split``, with groups that keep near-duplicates and a part's views together."""
    fit_items = [it for it in split.items if it["split"] in ("train", "val")]
    if len({it["label"] for it in fit_items}) < 2:
        raise data_mod.DataError("train + val hold only one class")
    paths = [images.root / it["path"] for it in fit_items]
    y = np.array([1 if it["label"] == images.positive_class else 0 for it in fit_items])
    rel = [it["path"] for it in fit_items]
    groups = split_mod.merge_groups([it["group"] for it in fit_items], split_mod.part_ids(rel))
    return _FitSet(paths, y, rel, groups)


def _features(cfg, weights_path: str, scales: list[int], paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Frozen backbone features of the readable ``paths`` (averaged with the mirror's for flip_tta) and the
    mask of which paths were readable."""
    from training.features import FeatureExtractor, FeatureSpec

    # the box crop of the run (train_config.json, the model sidecar): features are computed on the same crops
    # convert, predict and the daemon make (edge.judge.model_package.model_input); only default crop parameters here
    crop, empty, shape = cfg.crop.method, cfg.crop.empty_belt, shape_of(cfg.crop)
    if cfg.crop != shaped(type(cfg.crop)(method=crop, empty_belt=empty), shape):
        raise ValueError("the linear recipe crops with the default crop parameters (--crop METHOD, --crop-shape and "
                         "--empty only); --crop-margin and --background need --recipe finetune")
    multi = scales if len(scales) > 1 else ()
    spec = FeatureSpec(cfg.img_size, cfg.alpha, weights_path, crop=crop, scales=multi, empty_belt=empty,
                       finder=cfg.finder, shape=shape, pooling=cfg.pooling)
    x, ok = FeatureExtractor(spec).features(paths)
    if cfg.flip_tta:
        x2, ok2 = FeatureExtractor(FeatureSpec(cfg.img_size, cfg.alpha, weights_path, flip=True, crop=crop,
                                               scales=multi, empty_belt=empty, finder=cfg.finder,
                                               shape=shape)).features(paths)
        x, ok = (x + x2) / 2.0, [a and b for a, b in zip(ok, ok2, strict=True)]
    keep = np.array(ok)
    return x[keep], keep


def _choose_backbone(cfg, xs: dict[str, np.ndarray], y: np.ndarray,
                     groups: np.ndarray) -> tuple[str, backbones.Choice | None]:
    """The one backbone asked for, or with --weights auto the candidate whose head scores better out of fold."""
    if len(xs) == 1:
        return next(iter(xs)), None
    choice = backbones.choose(np.stack([xs[w] for w in backbones.CANDIDATES]), y, groups, c=cfg.C, seed=cfg.seed)
    log.info("--weights auto: %s", choice.sentence())
    return choice.weights, choice


def _fit_head(cfg, x: np.ndarray, y: np.ndarray, groups: np.ndarray, fit: dict | None = None) -> _Head:
    """Standardise + L2 logistic regression, C by grouped CV (``fit``: already fitted so); the threshold by the rule
    on its out-of-fold scores."""
    from sklearn.metrics import roc_auc_score

    from training import linear

    fit = fit or linear.fit(x, y, groups, c=cfg.C, seed=cfg.seed)
    if fit["inner_auc"]:
        log.info("C by grouped %d-fold CV on %d images: %s -> C = %g", linear.INNER_FOLDS, len(y),
                 ", ".join(f"{c:g}: {a:.3f}" for c, a in fit["inner_auc"].items()), fit["C"])
    oof_auc = float(roc_auc_score(y, fit["oof"]))
    op = operating.choose(y, fit["oof"], cfg.target_recall, cfg.cost_ratio)
    op_row = operating.tradeoff_row(y, fit["oof"], op["threshold"])
    log.info("out-of-fold AUC %.3f on train+val; operating point: %s", oof_auc, operating.sentence(op_row))
    return _Head(fit, oof_auc, op, op_row)


def _folded_model(cfg, weights_path: str, scales: list[int], fit: dict, x: np.ndarray, paths: list[Path],
                  keep: np.ndarray):
    """The Keras model with the head folded into its Dense layer, checked against the fitted head."""
    from training import linear
    from training import model as model_mod

    kernel, bias = linear.folded_dense(fit["model"])
    model = model_mod.build_linear_model(cfg.img_size, cfg.alpha, weights_path, kernel, bias, cfg.flip_tta, scales,
                                         cfg.pooling)
    # The folded Dense layer must reproduce scaler + logistic regression (checked on up to 16 images).
    n_chk = min(16, len(paths))
    chk = data_mod.load_images(paths[:n_chk], [""] * n_chk, cfg.img_size, cfg.crop, cfg.finder)
    if len(chk.paths):
        want = fit["model"].predict_proba(x[:len(chk.paths)])[:, 1] if keep[:n_chk].all() else None
        got = model.predict(chk.pixels.astype(np.float32), verbose=0).ravel()
        if want is not None and np.max(np.abs(want - got)) > 1e-3:
            raise RuntimeError(f"folded linear head disagrees with the fitted head (max diff "
                               f"{np.max(np.abs(want - got)):.4f}); please report this")
    return model


def _write_oof(path: Path, rel: list[str], y: np.ndarray, groups: np.ndarray, oof, positive: str) -> None:
    """oof_scores.csv: every fitted image's out-of-fold score (evaluate chooses the threshold on these)."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "y", "group", "score"])
        for r, yy, g, s in zip(rel, y, groups, oof, strict=True):
            w.writerow([r, positive if yy else "", int(yy), int(g), f"{s:.6f}"])


def _record_head(config_path: Path, c: float, operating_point: dict) -> None:
    """Add the recipe, the chosen C, the operating point and the head's description to train_config.json."""
    doc = json.loads(config_path.read_text())
    doc.update(recipe="linear", C_chosen=c, operating_point=operating_point,
               head={"type": "standardise + L2 logistic regression, folded into Dense(1, sigmoid)",
                     "fit_on": ["train", "val"]})
    config_path.write_text(json.dumps(doc, indent=1))
