"""MobileNetV2 classifier: the inference model saved as model.keras, and its training-only wrapper.

Inference model: float32 RGB in [0, 255] -> Rescaling to [-1, 1] (what MobileNetV2 expects) ->
MobileNetV2(include_top=False) -> GlobalAveragePooling -> Dropout -> Dense(1, sigmoid) = P(defect).
Augmentation lives in a wrapper model used only for ``fit``, so it never reaches convert/ or the edge.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal, get_args

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
# `--weights boxes`: MobileNetV2 alpha 0.35, ImageNet weights fine-tuned once on rendered line and belt parts
# (training/assets/README.md: how it was built; docs/RESULTS.md "A backbone adapted to boxes": what it does)
BOXES_WEIGHTS = Path(__file__).resolve().parent / "assets" / "backbone_boxes.weights.h5"
WEIGHTS_ENV = "BOXINSPECT_WEIGHTS"
BACKBONE_NAME = "mobilenetv2"
# Two intermediate MobileNetV2 blocks (stride 8 and 16): the anomaly recipe's patch map, and the "gap+mid" pooling.
PATCH_LAYERS = ("block_6_expand_relu", "block_13_expand_relu")
# The linear recipe's feature vector (--pooling): "gap" the global average of the backbone's last map (1280);
# "gap+mid" that, and the max and the mean over the inner cells of the patch map (+ 2 x 288): a local defect (a
# tear, a dent) moves a few mid-level cells, which the global average dilutes (docs/RESULTS.md "Mid-level pooling").
Pooling = Literal["gap", "gap+mid"]
POOLINGS: tuple[Pooling, ...] = get_args(Pooling)


class WeightsError(RuntimeError):
    """Pretrained weights cannot be obtained (message says what to do)."""


def weight_file_name(alpha: float, rows: int = 224) -> str:
    """The file name Keras downloads for MobileNetV2(include_top=False, weights='imagenet')."""
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"


def offline_weights_path(alpha: float = 0.35) -> Path | None:
    """An offline copy of the ImageNet MobileNetV2 no-top weights, if one is on this machine.

    Looks in ``$BOXINSPECT_WEIGHTS`` (file or folder), the Keras cache (``$KERAS_HOME`` or ``~/.keras``,
    ``models/``), ``<repo>/weights/`` and ``<repo>/../shared/weights/``. The one lookup used by the demo and
    the tests.
    """
    name = weight_file_name(alpha)
    candidates = []
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        p = Path(env)
        candidates.append(p if p.suffix == ".h5" else p / name)
    candidates += [_keras_cache_dir() / name, REPO_ROOT / "weights" / name, REPO_ROOT.parent / "shared" / "weights" / name]
    return next((c for c in candidates if c.is_file()), None)


def _keras_cache_dir() -> Path:
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(base) / "models"


def resolve_weights(weights: str, alpha: float, img_size: int) -> str | None:
    """Turn ``imagenet`` / ``boxes`` / ``none`` / PATH into a weight file path for MobileNetV2 (or None = random).

    ``imagenet`` uses Keras' own cache and download (``keras.utils.get_file``). The trunk without top does
    not depend on the input size, so a cached file for 224 px serves any size. ``boxes``: the built-in backbone
    adapted to boxes on rendered conveyor lines (:data:`BOXES_WEIGHTS`, alpha 0.35 only).
    """
    if weights.lower() == "none":
        return None
    if weights.lower() == "auto":
        raise WeightsError("--weights auto chooses between imagenet and boxes by the linear recipe's inner CV "
                           "(training/backbones.py); this step needs one backbone: pass --weights imagenet or boxes")
    if weights.lower() == "boxes":
        from training.backbones import BOXES_ALPHA

        if alpha != BOXES_ALPHA:
            raise WeightsError(f"--weights boxes is a MobileNetV2 alpha 0.35 backbone; got --alpha {alpha:g}")
        return str(BOXES_WEIGHTS)
    if weights.lower() != "imagenet":
        p = Path(weights).expanduser()
        if not p.is_file():
            raise WeightsError(f"weights file {p} not found (expected a MobileNetV2 no-top .h5)")
        return str(p)
    names = [weight_file_name(alpha, img_size)] if img_size in (96, 128, 160, 192, 224) else []
    names.append(weight_file_name(alpha, 224))
    cache = _keras_cache_dir()
    for n in names:
        if (cache / n).is_file():
            log.info("ImageNet weights from the Keras cache: %s", cache / n)
            return str(cache / n)
    import keras

    url = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/" + names[0]
    try:
        return keras.utils.get_file(names[0], url, cache_subdir="models")
    except Exception as e:  # Keras raises a bare Exception for network errors
        raise WeightsError(
            f"Could not download the ImageNet weights for MobileNetV2 alpha={alpha} ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}). This machine is probably offline. Either copy the "
            f"official file {weight_file_name(alpha, 224)} into {cache}/ (Keras then loads it from its cache "
            f"with no download), or pass --weights PATH to a MobileNetV2 no-top .h5 file, or --weights none "
            f"to train from random initialisation (much worse on small data sets)."
        ) from e


def build_backbone(img_size: int, alpha: float, weights_path: str | None, any_size: bool = False):
    """MobileNetV2 without top; ``any_size`` builds it for any input size (one backbone, shared weights, run at
    several input sizes by a multi-scale model)."""
    import keras

    shape = (None, None, 3) if any_size else (img_size, img_size, 3)
    backbone = keras.applications.MobileNetV2(input_shape=shape, alpha=alpha, include_top=False, weights=None)
    if weights_path is not None:
        backbone.load_weights(weights_path)
    else:
        # Keras' MobileNetV2 uses BatchNorm momentum 0.999: fine for ImageNet, but on a few hundred training
        # steps the moving statistics of a random-init network never catch up and inference collapses to a
        # constant output. 0.9 lets them follow the batches.
        from keras import layers

        for layer in backbone.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = 0.9
    backbone.name = BACKBONE_NAME
    return backbone


def build_inference_model(img_size: int, alpha: float, weights_path: str | None, dropout: float = 0.2):
    """The model saved as model.keras (see the module docstring). Returns (model, backbone).

    Pretrained: the backbone starts frozen and its BatchNorm layers always run in inference mode.
    Random init (``weights_path=None``): the whole backbone trains, BatchNorm included, since frozen
    random features would be a straw man.
    """
    import keras
    from keras import layers

    backbone = build_backbone(img_size, alpha, weights_path)
    pretrained = weights_path is not None
    backbone.trainable = not pretrained
    inputs = keras.Input(shape=(img_size, img_size, 3), dtype="float32", name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="to_minus1_plus1")(inputs)
    # training=False keeps BatchNorm in inference mode, also when the top blocks are unfrozen later.
    x = backbone(x, training=False) if pretrained else backbone(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="p_defect")(x)
    model = keras.Model(inputs, outputs, name="boxinspect_mobilenetv2")
    return model, backbone


def augmentation(seed: int = 0):
    """Training-only augmentation on [0, 255] RGB: flips, small rotation and zoom, brightness, contrast."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            layers.RandomFlip("horizontal_and_vertical", seed=seed),
            layers.RandomRotation(0.05, fill_mode="reflect", seed=seed + 1),
            layers.RandomZoom((-0.1, 0.1), fill_mode="reflect", seed=seed + 2),
            layers.RandomBrightness(0.15, value_range=(0, 255), seed=seed + 3),
            layers.RandomContrast(0.15, seed=seed + 4),
        ],
        name="augment",
    )


def training_model(inference_model, seed: int = 0, augment: bool = True):
    """Wrapper for ``fit``: augmentation (active only when training) in front of the inference model."""
    if not augment:
        return inference_model
    import keras

    shape = inference_model.input_shape[1:]
    inputs = keras.Input(shape=shape, dtype="float32", name="image")
    x = augmentation(seed)(inputs)
    outputs = inference_model(x)
    return keras.Model(inputs, outputs, name="train_wrapper")


def unfreeze_top(backbone, blocks: int) -> int:
    """Make the last ``blocks`` inverted-residual blocks (plus the final 1x1 conv) trainable.

    BatchNorm layers stay frozen. Returns the number of trainable layers.
    """
    from keras import layers

    first = 17 - blocks  # MobileNetV2 has blocks 1..16, then Conv_1
    backbone.trainable = True
    n = 0
    for layer in backbone.layers:
        name = layer.name
        in_top = name.startswith("Conv_1") or name.startswith("out_relu")
        if name.startswith("block_"):
            try:
                in_top = int(name.split("_")[1]) >= first
            except ValueError:
                in_top = False
        trainable = in_top and blocks > 0 and not isinstance(layer, layers.BatchNormalization)
        layer.trainable = trainable
        n += int(trainable)
    return n


def check_scales(scales: list[int] | tuple[int, ...] | None, img_size: int) -> tuple[int, ...]:
    """The input sizes whose pooled features a linear model averages: ``(img_size,)`` for None or one size;
    several sizes must be distinct, positive, and the largest is the model's input size (``img_size``)."""
    if not scales:
        return (int(img_size),)
    sc = tuple(sorted({int(s) for s in scales}))
    if len(sc) != len(scales) or sc[0] < 32:
        raise ValueError(f"scales {list(scales)}: sizes must be distinct and at least 32 px")
    if sc[-1] != img_size:
        raise ValueError(f"scales {list(scales)}: the largest scale is the model's input size, but img_size is "
                         f"{img_size} (leave --img-size out with --scales)")
    return sc


def patch_map(mid: Any, deep: Any) -> Any:
    """The patch map (S/16, S/16, 288) of the two ``PATCH_LAYERS`` outputs: each smoothed 3 x 3, the stride-8 one
    brought to stride 16. One definition for the anomaly recipe's graph and the "gap+mid" pooling."""
    from keras import layers

    mid = layers.AveragePooling2D(3, strides=1, padding="same", name="mid_smooth")(mid)
    mid = layers.AveragePooling2D(2, name="mid_to_stride16")(mid)
    deep = layers.AveragePooling2D(3, strides=1, padding="same", name="deep_smooth")(deep)
    return layers.Concatenate(name="patches")([mid, deep])


def trunk(backbone: Any) -> Any:
    """The backbone with three outputs: the two ``PATCH_LAYERS`` maps and its last map."""
    import keras

    outs = [backbone.get_layer(n).output for n in PATCH_LAYERS] + [backbone.output]
    return keras.Model(backbone.input, outs, name=BACKBONE_NAME)


def check_pooling(pooling: Pooling | str, scales: tuple[int, ...], flip_tta: bool) -> None:
    """ValueError naming --pooling for an unknown pooling or one combined with --scales / --flip-tta."""
    if pooling not in POOLINGS:
        raise ValueError(f"--pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if pooling != "gap" and (len(scales) > 1 or flip_tta):
        raise ValueError(f"--pooling {pooling} takes one input size and no --flip-tta")
    if pooling != "gap" and scales[-1] < 48:
        raise ValueError(f"--pooling {pooling} needs an input of at least 48 px (a 3 x 3 patch map), got {scales[-1]}")


def mid_pooled(x: Any, backbone: Any) -> Any:
    """The "gap+mid" feature vector of the rescaled input ``x``: [GAP(last map), max, mean of the patch map's inner
    cells (its outer ring left out: at the crop's edge the cells see belt)]."""
    from keras import layers

    mid, deep, top = trunk(backbone)(x, training=False)
    inner = layers.Cropping2D(1, name="patches_inner")(patch_map(mid, deep))
    return layers.Concatenate(name="gap_mid")([layers.GlobalAveragePooling2D(name="gap")(top),
                                               layers.GlobalMaxPooling2D(name="mid_max")(inner),
                                               layers.GlobalAveragePooling2D(name="mid_mean")(inner)])


def pooled_features(x: Any, backbone: Any, scales: tuple[int, ...], flip_tta: bool = False,
                    pooling: Pooling = "gap") -> Any:
    """The linear recipe's feature vector of the rescaled input ``x`` (largest scale, square): global-average-
    pooled backbone output, averaged over ``scales`` (each smaller size resized inside the model, bilinear,
    the SAME backbone) and, with ``flip_tta``, over the horizontal mirror. One function for the features
    training fits on (training.features) and for model.keras, so both are one graph."""
    import keras
    from keras import layers

    check_pooling(pooling, scales, flip_tta)
    if pooling == "gap+mid":
        return mid_pooled(x, backbone)
    views = [("", x)]
    if flip_tta:
        views.append(("_mirror", keras.ops.flip(x, axis=2)))
    feats = []
    for s in sorted(scales, reverse=True):
        for tag, v in views:
            if s != scales[-1]:
                v = layers.Resizing(s, s, interpolation="bilinear", name=f"resize_{s}{tag}")(v)
            name = "gap" if s == scales[-1] else f"gap_{s}"
            feats.append(layers.GlobalAveragePooling2D(name=name + tag)(backbone(v, training=False)))
    if len(feats) == 1:
        return feats[0]
    return layers.Average(name="scales" if len(scales) > 1 else "flip_tta")(feats)


def _features_graph(img_size: int, alpha: float, weights_path: str | None, scales: tuple[int, ...] | None,
                    flip_tta: bool, pooling: Pooling = "gap") -> tuple[Any, Any]:
    """(input, pooled features) of the linear recipe's graph: rescaling -> frozen backbone -> ``pooled_features``."""
    import keras
    from keras import layers

    sc = check_scales(scales, img_size)
    backbone = build_backbone(img_size, alpha, weights_path, any_size=len(sc) > 1)
    backbone.trainable = False
    inputs = keras.Input(shape=(img_size, img_size, 3), dtype="float32", name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="to_minus1_plus1")(inputs)
    return inputs, pooled_features(x, backbone, sc, flip_tta, pooling)


def build_feature_model(img_size: int, alpha: float, weights_path: str | None,
                        scales: tuple[int, ...] | None = None, flip_tta: bool = False,
                        pooling: Pooling = "gap") -> Any:
    """RGB in [0, 255] (img_size px) -> pooled features: model.keras of the linear recipe without its head."""
    import keras

    inputs, f = _features_graph(img_size, alpha, weights_path, scales, flip_tta, pooling)
    return keras.Model(inputs, f, name="features")


def build_linear_model(img_size: int, alpha: float, weights_path: str, kernel, bias: float, flip_tta: bool = False,
                       scales: tuple[int, ...] | None = None, pooling: Pooling = "gap"):
    """Inference model of the linear recipe: rescaling -> frozen MobileNetV2 -> GAP -> Dense(1, sigmoid).

    ``kernel`` (D,) and ``bias`` are the standardisation folded into the logistic regression
    (``training.linear.folded_dense``). With ``flip_tta`` the pooled features of the image and of its
    horizontal mirror are averaged before the Dense layer (the mirror is made by the model itself). With
    several ``scales`` (the largest = ``img_size``, the model's one input) the pooled features at every
    scale are averaged: the smaller sizes are resized inside the model and run through the same backbone,
    so the edge's preprocessing (resize the crop to the input size) and the features output stay as they are.
    ``pooling`` "gap+mid" widens the features with the patch map's max and mean (:func:`mid_pooled`).
    """
    import keras
    import numpy as np
    from keras import layers

    inputs, f = _features_graph(img_size, alpha, weights_path, scales, flip_tta, pooling)
    dense = layers.Dense(1, activation="sigmoid", name="p_defect")
    outputs = dense(f)
    dense.set_weights([np.asarray(kernel, np.float32).reshape(-1, 1), np.array([bias], np.float32)])
    return keras.Model(inputs, outputs, name="boxinspect_mobilenetv2_linear")
