"""The learned box finder's TensorFlow side (issue 25): the graph, the per-cell labels and the head's training.

ONE Keras graph (:func:`finder_model`): RGB in [-1, 1] (any size, multiples of 32) -> the frozen MobileNetV2
alpha 0.35 (ImageNet weights) -> ``block_3_expand_relu`` (stride 4, 2x2 average pooled), ``block_6_expand_relu``
(stride 8) and ``block_13_expand_relu`` (stride 16, bilinear x2, ``tf.image.resize``) on one stride-8 grid (336 channels) -> plus
their 5x5-cell mean (an AveragePooling2D, stride 1, "same": 672 channels) -> the head: Normalization, a 1x1
convolution of :data:`HIDDEN` ReLU units, a 1x1 convolution with a sigmoid -> (1, H/8, W/8, 1) P(box).
It is the study ``studies/learned_box.py``'s "MLP 64 + 5x5 mean" head without the cell's mean Lab (3 of 339
features; an RGB->Lab conversion inside the graph is not worth it for them), trained with Keras instead of sklearn.

Training: the feature part of the graph (:func:`feature_model`) runs on every training photo; per photo up to
``cells`` positive cells and as many negatives (half from a ring around the box, half from the rest:
:func:`sample_cells`) are kept; the head is fitted on those cells as (N, 1, 1, C) images, so its 1x1 convolutions
are trained as they run. The edge side (edge/judge/boxfinder.py) resizes and decodes; it imports nothing from here.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.judge.boxfinder import input_size, model_input
from edge.judge.crops import known_views

log = logging.getLogger(__name__)

LAYERS = ("block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu")
HIDDEN = 64  # ReLU units of the head (the study's MLP)
CONTEXT = 5  # cells: the side of the mean-context window
L2 = 1e-3  # weight decay of the head's hidden layer (the study's sklearn alpha)


def cell_labels(t: dict[str, Any], frame: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """(gh, gw) bool: cell centre inside the box's rotated rectangle (clipped to its bounding box)."""
    fh, fw = frame
    gh, gw = grid
    r = t["rotated"]
    pts = cv2.boxPoints(((r["cx"], r["cy"]), (r["w"], r["h"]), r["angle"]))
    mask = np.zeros((fh, fw), np.uint8)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    x0, y0, x1, y1 = t["bbox"]
    clip = np.zeros_like(mask)
    clip[y0:y1, x0:x1] = 1
    mask &= clip
    ys = ((np.arange(gh) + 0.5) * fh / gh).astype(int)
    xs = ((np.arange(gw) + 0.5) * fw / gw).astype(int)
    return np.asarray(mask[np.ix_(ys, xs)].astype(bool))


def sample_cells(f: np.ndarray, y: np.ndarray, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to n positive cells, n negatives: half from a ring around the box (its edges, rails, shadow), half
    anywhere else."""
    flat, lab = f.reshape(-1, f.shape[-1]), y.reshape(-1)
    ring = cv2.dilate(y.astype(np.uint8), np.ones((7, 7), np.uint8)).reshape(-1).astype(bool) & ~lab
    far = ~lab & ~ring
    pick = []
    for pool, k in ((lab, n), (ring, n // 2), (far, n - min(n // 2, int(ring.sum())))):
        idx = np.flatnonzero(pool)
        pick.append(rng.choice(idx, size=min(k, idx.size), replace=False))
    sel = np.concatenate(pick)
    return flat[sel].astype(np.float32), lab[sel]


def _upsample2() -> Any:
    """A layer: bilinear x2 (``tf.image.resize``, as the study). Keras' UpSampling2D(bilinear) does not convert to
    LiteRT with a dynamic input (TypeError inside the converter, TF 2.21 / Keras 3.15); this does."""
    import keras
    import tensorflow as tf

    class Up2(keras.layers.Layer):
        def call(self, x: Any) -> Any:
            return tf.image.resize(x, tf.shape(x)[1:3] * 2, method="bilinear")

        def compute_output_shape(self, s: Any) -> Any:
            return (s[0], None if s[1] is None else 2 * s[1], None if s[2] is None else 2 * s[2], s[3])

    return Up2(name="bf_up_b13")


def feature_model(weights: Path) -> Any:
    """Keras model: RGB in [-1, 1] (1, H, W, 3) -> the per-cell features (1, H/8, W/8, 672) (module docstring)."""
    import keras

    base = keras.applications.MobileNetV2(input_shape=(None, None, 3), alpha=0.35, include_top=False, weights=None)
    base.load_weights(str(weights))
    base.trainable = False
    b3, b6, b13 = (base.get_layer(n).output for n in LAYERS)
    b3 = keras.layers.AveragePooling2D(2, name="bf_pool_b3")(b3)
    b13 = _upsample2()(b13)
    cells = keras.layers.Concatenate(name="bf_cells")([b3, b6, b13])
    ctx = keras.layers.AveragePooling2D(CONTEXT, strides=1, padding="same", name="bf_context")(cells)
    out = keras.layers.Concatenate(name="bf_features")([cells, ctx])
    return keras.Model(base.input, out, name="boxfinder_features")


def head_model(channels: int) -> Any:
    """The head as 1x1 convolutions: (N, h, w, channels) -> (N, h, w, 1) P(box)."""
    import keras

    return keras.Sequential([
        keras.Input((None, None, channels)),
        keras.layers.Normalization(axis=-1, name="bf_norm"),
        keras.layers.Conv2D(HIDDEN, 1, activation="relu", kernel_regularizer=keras.regularizers.l2(L2),
                            name="bf_hidden"),
        keras.layers.Conv2D(1, 1, activation="sigmoid", name="bf_prob"),
    ], name="boxfinder_head")


def finder_model(features: Any, head: Any) -> Any:
    """The whole finder as ONE Keras graph: frame -> features -> head."""
    import keras

    return keras.Model(features.input, head(features.output), name="boxfinder")


def photo_features(fmodel: Any, bgr: np.ndarray) -> np.ndarray:
    """(gh, gw, C) float32 features of one BGR frame, resized as the edge resizes it."""
    x = model_input(bgr, input_size(*bgr.shape[:2]))
    return np.asarray(fmodel(x, training=False))[0]


def training_cells(fmodel: Any, sets: list[Path], cells: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sampled (features, label) cells of every photo of the synth data sets ``sets`` (float16 features)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    t0, n = time.monotonic(), 0
    for data in sets:
        for t in known_views(data):
            bgr = cv2.imread(str(data / t["file"]), cv2.IMREAD_COLOR)
            f = photo_features(fmodel, bgr)
            x, y = sample_cells(f, cell_labels(t, bgr.shape[:2], f.shape[:2]), rng, cells)
            xs.append(x.astype(np.float16))
            ys.append(y)
            n += 1
        log.info("features of %s done (%d photos so far, %.0f ms per photo)", data.name, n,
                 1000 * (time.monotonic() - t0) / max(1, n))
    return np.concatenate(xs), np.concatenate(ys)


def fit_head(x: np.ndarray, y: np.ndarray, epochs: int = 20, seed: int = 0) -> Any:
    """Fit the head on cells (N, C): Adam, binary cross-entropy, 10% of the cells for early stopping."""
    import keras

    keras.utils.set_random_seed(seed)
    head = head_model(x.shape[1])
    head.get_layer("bf_norm").adapt(x[:, None, None, :].astype(np.float32))
    head.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy", metrics=["accuracy"])
    order = np.random.default_rng(seed).permutation(len(y))
    xi = x[order][:, None, None, :].astype(np.float32)
    yi = y[order].astype(np.float32)[:, None, None, None]
    stop = keras.callbacks.EarlyStopping(patience=3, restore_best_weights=True)
    t0 = time.monotonic()
    hist = head.fit(xi, yi, batch_size=256, epochs=epochs, validation_split=0.1, callbacks=[stop], verbose=0)
    log.info("fitted the head on %d cells (%.1f%% positive) in %.0f s, %d epochs, val loss %.4f, val acc %.4f",
             len(y), 100 * y.mean(), time.monotonic() - t0, len(hist.history["loss"]),
             min(hist.history["val_loss"]), max(hist.history["val_accuracy"]))
    return head
