"""Two-phase MobileNetV2 transfer learning on a folder-per-class data set; writes a run directory.

Run directory (see docs/ARCHITECTURE.md): model.keras (inference model), train_config.json, split.json,
history.json, versions.json. ``training.evaluate`` adds metrics.json and report/.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.judge.localize import CropSpec
from training import data as data_mod
from training import split as split_mod
from training.model import Pooling
from training.rundir import class_weights, prepare_split, write_run

log = logging.getLogger(__name__)

BALANCE_MODES = ("weights", "oversample", "none")
RECIPES = ("linear", "finetune", "anomaly")
DEFAULT_IMG_SIZE = 224  # the linear recipe's size, chosen by CV; `train --recipe finetune` uses 160


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved as train_config.json)."""

    data_dir: Path
    out_dir: Path
    classes: list[str] | None = None  # index order; None = sorted class folders
    positive_class: str | None = None  # None = "defective" or "damaged" if present, else error
    img_size: int = DEFAULT_IMG_SIZE
    crop: CropSpec = field(default_factory=CropSpec)  # find and crop the box (edge/judge/localize.py); default auto
    # a learned box finder .tflite (--finder): its box first, the crop search only where it finds none; recorded
    # in train_config.json as {"path", "sha256"} (edge/judge/crops.py locate_still); None: the search alone
    finder: str | None = None
    alpha: float = 0.35
    weights: str = "imagenet"  # "imagenet" | "none" | path to a MobileNetV2 no-top .h5
    epochs: int = 25  # phase 1 (frozen backbone), with early stopping
    fine_tune_epochs: int = 10  # phase 2 (top blocks unfrozen); 0 = frozen backbone only
    batch_size: int = 32
    learning_rate: float = 1e-4
    fine_tune_learning_rate: float = 1e-5
    unfreeze_blocks: int = 4  # phase 2 trains blocks 13..16 and Conv_1 (BatchNorm stays frozen)
    dropout: float = 0.2
    patience: int = 5  # early stopping on val_loss, best weights restored
    balance: str = "weights"  # weights | oversample | none
    augment: bool = True
    val_frac: float = 0.15
    test_frac: float = 0.2
    dup_threshold: int = split_mod.DEFAULT_DUP_THRESHOLD
    split_manifest: Path | None = None  # reuse this split.json instead of making a new split
    seed: int = 0
    verbose: str | int = "auto"  # Keras progress bars
    overwrite: bool = False
    save_phase1: bool = False  # also write RUN/phase1/ (a complete run dir of the frozen-backbone model)
    label_smoothing: float = 0.0  # finetune recipe: BinaryCrossentropy label smoothing
    # "linear" (the default, chosen by cross-validation in docs/RESULTS.md): frozen features + L2 logistic
    # head; "finetune": the two-phase recipe (epochs, learning rates, blocks, dropout, augment apply to it)
    recipe: str = "linear"
    C: float | None = None  # linear: inverse L2 strength; None = chosen by inner grouped CV
    flip_tta: bool = False  # linear: model averages the features of the image and its mirror
    # linear: the model averages the pooled features at these input sizes (the largest = img_size, the model's
    # one input; the others resized inside the model, same backbone); None = img_size only
    scales: list[int] | None = None
    pooling: Pooling = "gap"  # linear: the feature vector (training.model.POOLINGS)
    target_recall: float | None = None  # linear: operating threshold on out-of-fold scores (default 0.95)
    cost_ratio: float | None = None  # linear: ... or minimising cost_ratio x missed + false rejects
    extra: dict = field(default_factory=dict)  # free-form notes stored with the config
    anomaly_method: str = "patchcore"  # anomaly recipe (training/anomaly.py): patchcore | padim
    target_frr: float = 0.001  # anomaly recipe: false-reject rate of good parts the threshold is set at
    coreset_max: int = 10000  # anomaly (patchcore): largest bank
    anomaly_banks: str = "one"  # anomaly: one bank, or "per-view" (training/anomaly.py banked_views)

    def to_json(self) -> dict:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, Path):
                d[k] = str(v)
        d["crop"] = self.crop.model_dump(mode="json")
        from edge.judge.crops import finder_record

        d["finder"] = finder_record(self.finder)
        return d


def oversample_indices(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices with the minority class repeated (random picks) up to the majority count, shuffled."""
    y = np.asarray(y).astype(int).ravel()
    idx = [np.nonzero(y == c)[0] for c in (0, 1)]
    target = max(len(i) for i in idx)
    parts = []
    for i in idx:
        if len(i) == 0:
            continue
        extra = rng.choice(i, target - len(i), replace=True) if len(i) < target else np.array([], int)
        parts.append(np.concatenate([i, extra]))
    out = np.concatenate(parts)
    rng.shuffle(out)
    return out


def _keras_verbose(verbose: str | int) -> str | int:
    """Keras' "auto" draws a progress bar with terminal control codes; written to a file or a pipe those are
    garbage, and the per-epoch log line says the same. So "auto" is a bar on a terminal and silence elsewhere."""
    if verbose == "auto" and not sys.stdout.isatty():
        return 0
    return verbose


def _arrays(split: split_mod.Split, pixels: dict, name: str, positive: str):
    items = split.select(name)
    x = np.stack([pixels[it["path"]] for it in items]) if items else None
    y = np.array([1.0 if it["label"] == positive else 0.0 for it in items], np.float32)
    return x, y


class _EpochLog:
    """Keras callback factory: one log line per epoch (kept import-light by building lazily)."""

    @staticmethod
    def make(phase: str, epochs: int):
        import keras

        class EpochLog(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self._t = time.monotonic()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                parts = " ".join(f"{k} {v:.4f}" for k, v in logs.items() if isinstance(v, float | int))
                log.info("%s epoch %d/%d: %s (%.1f s)", phase, epoch + 1, epochs, parts,
                         time.monotonic() - self._t)

        return EpochLog()


def _dataset(x: np.ndarray, y: np.ndarray, batch: int, shuffle: bool, seed: int,
             sample_w: np.ndarray | None = None):
    import tensorflow as tf

    tensors = (x, y.reshape(-1, 1)) if sample_w is None else (x, y.reshape(-1, 1), sample_w)
    ds = tf.data.Dataset.from_tensor_slices(tensors)
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)

    def cast(*t):
        return (tf.cast(t[0], tf.float32),) + tuple(t[1:])

    return ds.map(cast, num_parallel_calls=tf.data.AUTOTUNE).batch(batch).prefetch(tf.data.AUTOTUNE)


def train(cfg: TrainConfig) -> Path:
    """Train per ``cfg``; returns the run directory (which then holds model.keras and friends)."""
    t_start = time.monotonic()
    if cfg.recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {cfg.recipe!r}")
    if cfg.recipe != "linear" and cfg.scales and len(cfg.scales) > 1:
        raise ValueError("several --scales are a linear-recipe option (the finetune recipe has one input size)")
    if cfg.pooling != "gap" and cfg.recipe != "linear":
        raise ValueError("--pooling is for the linear recipe")
    if cfg.finder and (cfg.recipe == "anomaly" or cfg.crop.method == "none"):
        raise ValueError("--finder needs the linear or finetune recipe and a crop method (--crop auto: the search "
                         "where the finder finds no box)")
    if cfg.recipe == "linear":
        from training.train_linear import train_linear

        return _report_crops(cfg, train_linear(cfg))
    if cfg.recipe == "anomaly":
        from training.anomaly import train_anomaly

        return _report_crops(cfg, train_anomaly(cfg))
    return _report_crops(cfg, _train_finetune(cfg, t_start))


@dataclass
class _FitData:
    """What both phases of the finetune recipe train on: the split and the (balanced) datasets."""

    split: split_mod.Split
    counts: dict
    class_weights: dict[int, float]
    train: Any  # tf.data.Dataset of (x, y[, sample weight]), shuffled
    val: Any  # tf.data.Dataset of (x, y)


def _train_finetune(cfg: TrainConfig, t_start: float) -> Path:
    """The two-phase recipe: frozen backbone, then the top blocks unfrozen; writes the run into cfg.out_dir."""
    if cfg.balance not in BALANCE_MODES:
        raise ValueError(f"balance must be one of {BALANCE_MODES}, got {cfg.balance!r}")
    out = Path(cfg.out_dir)
    if (out / "model.keras").exists() and not cfg.overwrite:
        raise FileExistsError(f"{out} already holds a model.keras; choose another --out or pass --overwrite")
    images = data_mod.scan(cfg.data_dir, cfg.classes, cfg.positive_class)
    log.info("data: %s, classes %s, positive %r, %d files", images.root, images.classes,
             images.positive_class, len(images.paths))

    # Imports of TensorFlow happen here, not at package import.
    import keras

    from training import model as model_mod

    weights_path = model_mod.resolve_weights(cfg.weights, cfg.alpha, cfg.img_size)
    keras.utils.set_random_seed(cfg.seed)
    import tensorflow as tf

    # Same seed and data -> the same model, run after run (checked: identical histories and thresholds).
    tf.config.experimental.enable_op_determinism()

    data = _fit_data(cfg, images, out)
    model, backbone = model_mod.build_inference_model(cfg.img_size, cfg.alpha, weights_path, cfg.dropout)
    trainer = model_mod.training_model(model, cfg.seed, cfg.augment)
    pretrained = weights_path is not None

    history: dict = {}
    history["phase1"] = _fit_phase(trainer, cfg, data, "phase1", cfg.learning_rate, cfg.epochs,
                                   "backbone frozen" if pretrained else "whole network (random init)")
    if cfg.save_phase1 and cfg.fine_tune_epochs > 0:
        p1_cfg = TrainConfig(**{**asdict(cfg), "fine_tune_epochs": 0, "out_dir": out / "phase1"})
        write_run(out / "phase1", model, p1_cfg, history, time.monotonic() - t_start, images, weights_path,
                  data.class_weights, data.counts, data.split, note=f"snapshot after phase 1 of {out}")
        log.info("phase-1 (frozen backbone) snapshot written to %s", out / "phase1")
    if not pretrained:
        log.info("random initialisation (--weights none): the whole backbone trains in both phases")
    if cfg.fine_tune_epochs > 0:
        if pretrained:
            n = model_mod.unfreeze_top(backbone, cfg.unfreeze_blocks)
            log.info("phase 2: %d backbone layers trainable (top %d blocks), lr %g", n, cfg.unfreeze_blocks,
                     cfg.fine_tune_learning_rate)
        history["phase2"] = _fit_phase(trainer, cfg, data, "phase2", cfg.fine_tune_learning_rate,
                                       cfg.fine_tune_epochs, f"top {cfg.unfreeze_blocks} blocks unfrozen"
                                       if pretrained else "whole network, lower learning rate")
    backbone.trainable = False
    wall = time.monotonic() - t_start
    write_run(out, model, cfg, history, wall, images, weights_path, data.class_weights, data.counts, data.split)
    log.info("trained in %.1f s (%s); run directory %s", wall, _fmt_time(wall), out)
    return out


def _fit_data(cfg: TrainConfig, images: data_mod.ImageSet, out: Path) -> _FitData:
    """Split (saved as out/split.json), train and val arrays, the class-imbalance correction, the datasets."""
    split, pixels = prepare_split(cfg, images)
    counts = split.counts()
    log.info("split counts: %s", counts)
    positive = images.positive_class
    x_tr, y_tr = _arrays(split, pixels, "train", positive)
    x_va, y_va = _arrays(split, pixels, "val", positive)
    if x_tr is None or x_va is None:
        raise data_mod.DataError("train or val split is empty; add images or change the fractions")
    if len(np.unique(y_tr)) < 2:
        raise data_mod.DataError("the training split holds only one class")

    out.mkdir(parents=True, exist_ok=True)
    split.save(out / "split.json")

    rng = np.random.default_rng(cfg.seed)
    cw = class_weights(y_tr)
    sample_w = None
    if cfg.balance == "weights":
        sample_w = np.where(y_tr > 0.5, cw[1], cw[0]).astype(np.float32)
        log.info("class imbalance: class weights %s (negative, positive)", {0: round(cw[0], 3), 1: round(cw[1], 3)})
    elif cfg.balance == "oversample":
        idx = oversample_indices(y_tr, rng)
        log.info("class imbalance: oversampling to %d training images (minority repeated, augmented)", len(idx))
        x_tr, y_tr = x_tr[idx], y_tr[idx]
    else:
        log.info("class imbalance: not corrected (--balance none)")
    ds_tr = _dataset(x_tr, y_tr, cfg.batch_size, True, cfg.seed, sample_w)
    ds_va = _dataset(x_va, y_va, cfg.batch_size, False, cfg.seed)
    return _FitData(split, counts, cw, ds_tr, ds_va)


def _fit_phase(trainer, cfg: TrainConfig, data: _FitData, phase: str, lr: float, epochs: int, note: str) -> dict:
    """Compile ``trainer`` at ``lr`` and fit up to ``epochs`` with early stopping on val_loss (best weights
    restored) and a log line per epoch; returns the phase's history.json entry."""
    import keras

    t = time.monotonic()
    trainer.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.BinaryCrossentropy(label_smoothing=cfg.label_smoothing),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")],
    )
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience, restore_best_weights=True),
        _EpochLog.make(phase, epochs),
    ]
    h = trainer.fit(data.train, validation_data=data.val, epochs=epochs, callbacks=callbacks,
                    verbose=_keras_verbose(cfg.verbose), shuffle=False)
    return _history(h, lr, time.monotonic() - t, note)


def _report_crops(cfg: TrainConfig, out: Path) -> Path:
    """Say how the localiser did on the run's images (out/crops.json, out/crops.png worst first, a log line,
    the >20% fallback warning) and record the summary in train_config.json."""
    if cfg.crop.method == "none":
        return out
    from edge.judge.crops import fallback_warning, report_crops

    split = split_mod.load_split(out / "split.json")
    root = Path(cfg.data_dir).resolve()
    stats = report_crops([root / it["path"] for it in split.items], cfg.crop, out, root=root, finder=cfg.finder)
    doc = json.loads((out / "train_config.json").read_text())
    doc["crops"] = {**stats.to_dict(), "warning": fallback_warning(stats, cfg.crop)}
    (out / "train_config.json").write_text(json.dumps(doc, indent=1))
    return out


def _history(h, lr: float, seconds: float, note: str) -> dict:
    hist = {k: [float(v) for v in vals] for k, vals in h.history.items()}
    val = hist.get("val_loss", [])
    return {
        "note": note,
        "learning_rate": lr,
        "epochs_run": len(hist.get("loss", [])),
        "best_epoch": int(np.argmin(val)) + 1 if val else None,
        "seconds": round(seconds, 1),
        "history": hist,
    }


def _fmt_time(s: float) -> str:
    m, s = divmod(int(round(s)), 60)
    return f"{m} min {s} s" if m else f"{s} s"
