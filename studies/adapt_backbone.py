"""Adapt the backbone to boxes on synthetic lines (issue 25; a study: does a backbone fine-tuned on many synth parts
of OTHER seeds give the per-line linear head better features?).

The linear default fits a head per line on frozen ImageNet MobileNetV2 (alpha 0.35) features of the box crop. Per
line there are a few hundred parts, too few to fine-tune on (docs/RESULTS.md "Fine-tuning the backbone on the belt
crops": no clear gain). ``synth`` can render thousands of labelled parts of other lines, as the built-in box finder
is trained. This fine-tunes the backbone once on such parts (the product's crop: built-in finder, upright and tight,
224 px; the head reads the gap+mid vector, as the linear default does) and saves the backbone's weights, which
``boxinspect cv / train --weights FILE`` then use in place of the ImageNet ones.

    W=weights.h5 python studies/adapt_backbone.py OUT.weights.h5 DATA [--epochs N] [--from-block B]

DATA: ok/ and defective/ of synth parts whose seeds are NOT the dev or held-out ones. Groups (a part's views) stay on
one side of the 10 % validation split.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger("adapt_backbone")


def crops(paths: list[Path]) -> np.ndarray:
    """The product's 224 px crop of every photo (``boxinspect cv --crop auto``'s pixels), uint8 RGB."""
    from edge.judge.crops import finder_choice
    from training import model as model_mod
    from training.features import FeatureExtractor, FeatureSpec

    wp = model_mod.resolve_weights(os.environ.get("W", "imagenet"), 0.35, 224)
    fx = FeatureExtractor(FeatureSpec(224, 0.35, wp, crop="auto", finder=finder_choice(None, "auto"), shape="aligned"))
    return np.stack([fx.prepare(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)) for p in paths]).astype(np.uint8)


def build(from_block: int):
    """(model to train, backbone): gap+mid -> dropout -> one sigmoid; the backbone's blocks from ``from_block`` on
    trainable (BatchNorm in inference mode, as the product's fine-tune recipe)."""
    import keras
    from keras import layers

    from training import model as model_mod

    wp = model_mod.resolve_weights(os.environ.get("W", "imagenet"), 0.35, 224)
    bb = model_mod.build_backbone(224, 0.35, wp)
    on = False
    for layer in bb.layers:
        on = on or layer.name.startswith(f"block_{from_block}_")
        layer.trainable = on and not isinstance(layer, layers.BatchNormalization)
    inp = keras.Input((224, 224, 3), dtype="float32")
    x = layers.RandomFlip("horizontal_and_vertical")(inp)
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(x)
    f = model_mod.mid_pooled(x, bb)
    out = layers.Dense(1, activation="sigmoid")(layers.Dropout(0.3)(f))
    return keras.Model(inp, out), bb


def main() -> None:
    import keras
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupShuffleSplit

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("data", type=Path)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--from-block", type=int, default=7)
    ap.add_argument("--lr", type=float, default=1e-4)
    a = ap.parse_args()
    paths = sorted(p for c in ("ok", "defective") for p in (a.data / c).glob("*.jpg"))
    y = np.array([int(p.parent.name == "defective") for p in paths], np.float32)
    groups = np.unique([p.stem.rsplit("_", 1)[0] for p in paths], return_inverse=True)[1]
    t0 = time.time()
    x = crops(paths)
    log.info("%d crops in %.0f s", len(x), time.time() - t0)
    tr, va = next(GroupShuffleSplit(1, test_size=0.1, random_state=0).split(x, y, groups))
    keras.utils.set_random_seed(0)
    model, bb = build(a.from_block)
    model.compile(keras.optimizers.Adam(a.lr), "binary_crossentropy")
    for ep in range(a.epochs):
        t0 = time.time()
        model.fit(x[tr].astype(np.float32), y[tr], batch_size=32, epochs=1, verbose=0, shuffle=True)
        auc = roc_auc_score(y[va], model.predict(x[va].astype(np.float32), batch_size=64, verbose=0).ravel())
        log.info("epoch %d: val AUC %.3f (%.0f s)", ep + 1, auc, time.time() - t0)
    bb.save_weights(a.out)
    log.info("backbone weights: %s", a.out)


if __name__ == "__main__":
    main()
