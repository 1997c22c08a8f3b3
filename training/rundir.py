"""What both training recipes share (``training.train``'s finetune and ``training.train_linear``'s linear): the
leakage-safe split they train on, the class weights, and the files of a run directory beside model.keras
(history.json, train_config.json, versions.json, split.json). Its own module so neither recipe imports the
other (no import cycle).
"""

from __future__ import annotations

import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge.runtime.versions import installed_versions
from training import data as data_mod
from training import split as split_mod

if TYPE_CHECKING:
    from training.train import TrainConfig

log = logging.getLogger(__name__)


def class_weights(y: np.ndarray) -> dict[int, float]:
    """Balanced class weights n / (2 * n_c) for binary labels (sklearn's 'balanced' rule)."""
    from sklearn.utils.class_weight import compute_class_weight

    y = np.asarray(y).astype(int).ravel()
    present = np.unique(y)
    w = compute_class_weight("balanced", classes=present, y=y)
    out = {int(c): float(v) for c, v in zip(present, w, strict=True)}
    for c in (0, 1):
        out.setdefault(c, 1.0)
    return out


def package_versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    out = {"python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
           "tensorflow": tf.__version__, "keras": keras.__version__}
    out.update(installed_versions("numpy", "opencv-python-headless", "scikit-learn", "matplotlib", "boxinspect"))
    return out


def prepare_split(cfg: TrainConfig, images: data_mod.ImageSet):
    """Load pixels and make (or reuse) the split. Returns (split, pixels by relative path)."""
    if cfg.split_manifest is not None:
        split = split_mod.load_split(cfg.split_manifest)
        if split.positive_class != images.positive_class:
            raise data_mod.DataError(
                f"split manifest positive class {split.positive_class!r} != {images.positive_class!r}"
            )
        paths = [images.root / it["path"] for it in split.items]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            log.warning("%d file(s) of the split manifest are missing, e.g. %s", len(missing), missing[0])
        listed = {it["path"] for it in split.items}
        unlisted = [p for p in images.paths if images.rel(p) not in listed]
        if unlisted:
            log.warning("%d image(s) in %s are not in the manifest and are not used", len(unlisted), images.root)
        loaded = data_mod.load_images(paths, [it["label"] for it in split.items], cfg.img_size, cfg.crop,
                                      cfg.finder)
        keep = {images.rel(p) for p in loaded.paths}
        split.items = [it for it in split.items if it["path"] in keep]
        split.info["reused_from"] = str(cfg.split_manifest)
        split.info["unreadable"] = [images.rel(p) for p in loaded.unreadable]
    else:
        loaded = data_mod.load_images(images.paths, images.labels, cfg.img_size, cfg.crop, cfg.finder)
        if len(loaded.paths) == 0:
            raise data_mod.DataError(f"no readable images in {images.root}")
        t = time.monotonic()
        hashes = np.stack([split_mod.image_hashes(p) for p in loaded.pixels])
        rel = [images.rel(p) for p in loaded.paths]
        split = split_mod.make_split(
            rel, loaded.labels, hashes, images.classes, images.positive_class,
            cfg.val_frac, cfg.test_frac, cfg.seed, cfg.dup_threshold,
        )
        split.info["unreadable"] = [images.rel(p) for p in loaded.unreadable]
        log.info("split made in %.1f s", time.monotonic() - t)
    pixels = {images.rel(p): px for p, px in zip(loaded.paths, loaded.pixels, strict=True)}
    return split, pixels


def write_run(out: Path, model, cfg: TrainConfig, history: dict, wall: float, images: data_mod.ImageSet,
               weights_path: str | None, cw: dict, counts: dict, split: split_mod.Split, note: str = "") -> None:
    """Write model.keras, history.json, train_config.json, versions.json (and split.json) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    if not (out / "split.json").exists():
        split.save(out / "split.json")
    history = {**history, "wall_time_s": round(wall, 1)}
    (out / "history.json").write_text(json.dumps(history, indent=1))
    doc = cfg.to_json()
    doc.update(
        classes=images.classes,
        positive_class=images.positive_class,
        data_dir=str(images.root),
        weights_file=weights_path,
        class_weights={"0": cw[0], "1": cw[1]} if cfg.balance == "weights" else None,
        counts=counts,
        unreadable=split.info.get("unreadable", []),
        input={"dtype": "float32", "range": [0, 255], "colour": "RGB", "shape": [cfg.img_size, cfg.img_size, 3],
               "resize": "stretch, cv2.INTER_AREA"},
        output="sigmoid P(positive_class), shape (1,)",
        wall_time_s=round(wall, 1),
    )
    if note:
        doc["note"] = note
    (out / "train_config.json").write_text(json.dumps(doc, indent=1))
    (out / "versions.json").write_text(json.dumps(package_versions(), indent=1))
