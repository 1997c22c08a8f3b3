"""What converting a run to a model package needs, whatever the recipe: reading the run directory, the
calibration and evaluation images, the TFLite conversion, the gate (compare, table, rejection), golden samples
and the sidecar metadata. ``convert.tflite`` (the supervised recipes) and ``convert.anomaly`` both build on it,
so neither imports the other at module level. The conversion rules are in convert/tflite.py's docstring.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from edge.judge.backbone import backbone_digest
from edge.judge.boxfinder import BoxFinder, golden_region
from edge.judge.classifier import Runner
from edge.judge.crops import locate_still, open_finder, recorded_finder
from edge.judge.localize import NO_CROP, CropSpec, crop_from_config
from edge.judge.model_package import (
    PREPROCESSING_TEXT,
    CellsSpec,
    CVMetrics,
    FeaturesSpec,
    FinderGolden,
    FinderSpec,
    GoldenSample,
    InputSpec,
    ModelMetadata,
    OutputSpec,
    PackageMetrics,
    QuantParams,
    SplitMetrics,
    TrainingDataSummary,
    encode_golden,
    model_input,
    sha256_file,
    sidecar_path,
    utc_now,
)
from edge.runtime.versions import installed_versions
from training.data import read_bgr
from training.quiet import native_output_to_log

log = logging.getLogger(__name__)

FORMATS = ("int8", "fp16", "float32")
RESIZE = "area"
GOLDEN_PER_CLASS = 3
MAP_UNSATURATED = (0.01, 0.99)  # line_threshold fits on the images both models score inside this range
MAP_MIN_PAIRS = 20  # and needs this many of them
GATE_DECIMALS = 4  # a drop is judged at this many decimals, as the verdict prints it (module docstring)


class ThresholdRule(str, Enum):
    """Which threshold a converted model ships with (the sidecar's ``threshold_source`` says which was used).

    KEEP: the run's own threshold, copied (fp16 and float32 score like Keras).
    MAP: the run's threshold carried onto the int8 model's score scale, without labels: a line from the Keras logit
    to the int8 logit is fitted on the calibration images (``line_threshold``) and the Keras threshold is mapped
    through it, if that reproduces Keras' decisions on those images more often than the copied threshold (else
    the threshold is kept). Quantisation can move every score of a linear head the same way, so a copied threshold
    changes decisions the Keras model would not; the default for int8. (An isotonic fit and quantile matching were tried
    too: docs/RESULTS.md "int8 threshold".)
    RECALIBRATE: evaluate's rule (recall target or cost ratio) re-applied to the converted model's validation scores,
    with labels; needs metrics.json from ``boxinspect evaluate``."""

    KEEP = "keep"
    MAP = "map"
    RECALIBRATE = "recalibrate"


def default_threshold_rule(fmt: str) -> ThresholdRule:
    return ThresholdRule.MAP if fmt == "int8" else ThresholdRule.KEEP


def gate_allows(drop: float, limit: float) -> bool:
    """The gate's rule for one metric: ``drop`` (Keras minus TFLite) rounded to GATE_DECIMALS is at most
    ``limit`` rounded the same way. A drop equal to the limit at that precision passes."""
    return round(drop, GATE_DECIMALS) <= round(limit, GATE_DECIMALS)


class ConvertError(RuntimeError):
    """The run directory cannot be converted (missing files, no images...)."""


class GateError(ConvertError):
    """The converted model lost more accuracy than allowed. ``rejected`` is where it was kept."""

    def __init__(self, message: str, rejected: Path):
        super().__init__(message)
        self.rejected = rejected


@dataclass
class Item:
    path: Path
    label: str
    split: str


@dataclass
class RunInfo:
    run_dir: Path
    config: dict
    classes: list[str]
    positive_class: str
    img_size: tuple[int, int]
    items: list[Item]
    threshold: float
    threshold_source: str
    data_dir: str | None
    target_recall: float | None = None  # the evaluate rule that chose the threshold on val, if recorded:
    cost_ratio: float | None = None  # a target recall or a cost ratio (training.operating.choose)
    crop: CropSpec = field(default_factory=lambda: NO_CROP)  # the run's box crop (train_config.json), applied before every model input
    finder: Path | None = None  # the learned box finder the run cropped with (train --finder), checked; the package carries it


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConvertError(f"{path} not found (is {path.parent} a training run directory?)") from e
    except (OSError, json.JSONDecodeError) as e:
        raise ConvertError(f"{path}: cannot read ({e})") from e


def _resolve(p: str, run_dir: Path, data_dir: str | None) -> Path:
    path = Path(p)
    if path.is_absolute():
        return path
    for base in (run_dir, Path(data_dir) if data_dir else None, Path.cwd()):
        if base is not None and (base / path).exists():
            return base / path
    return (Path(data_dir) / path) if data_dir else (run_dir / path)


def _img_size(cfg: dict) -> tuple[int, int] | None:
    size = cfg.get("img_size")
    if size is None:
        return None
    if isinstance(size, int):
        return size, size
    return int(size[0]), int(size[1])


def read_run(run_dir: Path) -> RunInfo:
    run_dir = Path(run_dir)
    if run_dir.is_file() and run_dir.suffix == ".keras":
        run_dir = run_dir.parent
    cfg = _read_json(run_dir / "train_config.json")
    split = _read_json(run_dir / "split.json")
    classes = list(cfg.get("classes") or [])
    if len(classes) != 2:
        raise ConvertError(f"{run_dir}/train_config.json: expected 2 classes, got {classes}")
    positive = cfg.get("positive_class") or classes[-1]
    if positive not in classes:
        raise ConvertError(f"{run_dir}/train_config.json: positive_class {positive!r} not in {classes}")
    data_dir = cfg.get("data_dir") or split.get("data_dir")
    items = [
        Item(_resolve(it["path"], run_dir, data_dir), str(it["label"]), str(it["split"]))
        for it in split.get("items", [])
    ]
    if not items:
        raise ConvertError(f"{run_dir}/split.json has no items")
    metrics_path = run_dir / "metrics.json"
    target_recall = cost_ratio = None
    if metrics_path.is_file() and "threshold" in (m := _read_json(metrics_path)):
        threshold, source = float(m["threshold"]), "metrics.json"
        sel = m.get("threshold_selection") or {}
        if sel.get("split", "val") == "val":
            if sel.get("target_recall") is not None:
                target_recall = float(sel["target_recall"])
            elif sel.get("cost_ratio") is not None:
                cost_ratio = float(sel["cost_ratio"])
    else:
        threshold, source = _oof_threshold(run_dir, cfg, metrics_path)
    return RunInfo(
        run_dir=run_dir, config=cfg, classes=classes, positive_class=positive,
        img_size=_img_size(cfg) or (0, 0), items=items, threshold=threshold, threshold_source=source,
        data_dir=str(data_dir) if data_dir else None, target_recall=target_recall, cost_ratio=cost_ratio, crop=_crop(cfg, run_dir),
        finder=_finder(cfg, run_dir),
    )


def _crop(cfg: dict, run_dir: Path) -> CropSpec:
    try:
        return crop_from_config(cfg)
    except ValidationError as e:
        raise ConvertError(f"{run_dir}/train_config.json: invalid crop: {e.errors()[0]['msg']}") from e


def _finder(cfg: dict, run_dir: Path) -> Path | None:
    """The learned box finder the run cropped with (train --finder), checked against its recorded sha256: the
    package carries it (:func:`copy_finder`), so the edge crops as training did."""
    try:
        found = recorded_finder(cfg.get("finder"))
    except ValueError as e:
        raise ConvertError(f"{run_dir}: {e}: restore the file the run was trained with") from e
    return Path(found) if found else None


FINDER_GOLDEN_N = 2  # finder golden samples per package (each a <= 256 px PNG region, ~100-150 kB in base64)


def copy_finder(run: RunInfo, out: Path, photos: list[Path] | None = None) -> FinderSpec | None:
    """Put the run's learned box finder beside the package ``out`` (``<stem>.finder``) and describe it for the
    sidecar, with golden samples from ``photos`` (the evaluation photos; :func:`finder_golden`); None for a run
    without one."""
    if run.finder is None:
        return None
    dest = out.with_name(out.stem + ".finder")
    shutil.copyfile(run.finder, dest)
    box_finder = open_finder(run.finder)
    golden = finder_golden(box_finder, photos or [])
    log.info("the package carries the learned box finder %s (from %s; %d golden sample(s))", dest.name, run.finder,
             len(golden))
    return FinderSpec(file=dest.name, sha256=sha256_file(dest), size_bytes=dest.stat().st_size,
                      threshold=box_finder.threshold, min_area=box_finder.min_area, source=str(run.finder),
                      golden=golden)


def finder_golden(box_finder: BoxFinder, photos: list[Path], n: int = FINDER_GOLDEN_N) -> list[FinderGolden]:
    """The finder's golden samples: for the first ``n`` photos (in order) where it finds a box, the region around
    that box (``boxfinder.golden_region``) and the box it finds on exactly that region."""
    golden: list[FinderGolden] = []
    for p in photos:
        bgr = read_bgr(p)
        found = None if bgr is None else box_finder.find(bgr).box
        if bgr is None or found is None:
            continue
        region = golden_region(bgr, found)
        golden.append(FinderGolden(name=p.name, png_b64=encode_golden(region[:, :, ::-1]),
                                   box=box_finder.find(region).box))
        if len(golden) == n:
            break
    return golden


def load_items(items: list[Item], h: int, w: int, crop: CropSpec,
               finder: Path | None = None) -> tuple[list[Item], np.ndarray]:
    """Read, crop and preprocess items exactly like the edge does (the same ``model_input``; with the run's
    learned box ``finder``, its box first: ``locate_still``); unreadable files are skipped with a warning."""
    box_finder = open_finder(finder) if finder is not None and crop.method != "none" else None
    kept, arrays = [], []
    for it in items:
        bgr = read_bgr(it.path)
        if bgr is None:
            log.warning("skipping unreadable image %s", it.path)
            continue
        kept.append(it)
        located = locate_still(bgr, crop, finder=box_finder) if box_finder is not None else None
        arrays.append(model_input(bgr, crop, h, w, RESIZE, located=located))
    return kept, (np.stack(arrays) if arrays else np.zeros((0, h, w, 3), np.uint8))


def _oof_threshold(run_dir: Path, cfg: dict, metrics_path: Path) -> tuple[float, str]:
    """The threshold when evaluate was not run: the operating point ``train`` chose on out-of-fold scores
    (operating_point.json, or train_config.json's copy); 0.5 only when the run has none, with a warning."""
    op_path = run_dir / "operating_point.json"
    op = _read_json(op_path) if op_path.is_file() else (cfg.get("operating_point") or {})
    if isinstance(op, dict) and op.get("threshold") is not None:
        threshold = float(op["threshold"])
        where = op_path.name if op_path.is_file() else "train_config.json operating_point"
        rule = op.get("sentence") or op.get("rule") or ""
        source = f"out-of-fold operating point from train ({where}; {op.get('chosen_on', 'out-of-fold scores')})"
        log.info("no metrics.json in %s (evaluate was not run): threshold %.4f from %s%s", run_dir, threshold,
                 where, f": {rule}" if rule else "")
        return threshold, source
    log.warning("%s has no threshold and the run has no out-of-fold operating point (run `boxinspect evaluate "
                "%s`, or train with the linear recipe); using 0.5, which is rarely right", metrics_path, run_dir)
    return 0.5, "default 0.5 (no metrics.json, no operating_point.json)"


def split_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> SplitMetrics:
    from sklearn.metrics import accuracy_score, f1_score, recall_score, roc_auc_score

    pred = (scores >= threshold).astype(int)
    has_pos, has_neg = bool(np.any(y_true == 1)), bool(np.any(y_true == 0))
    auc = float(roc_auc_score(y_true, scores)) if len(np.unique(y_true)) == 2 else None
    return SplitMetrics(
        n=int(len(y_true)),
        accuracy=float(accuracy_score(y_true, pred)),
        macro_f1=float(f1_score(y_true, pred, average="macro", labels=[0, 1], zero_division=0)),
        auc=auc,
        recall=float(recall_score(y_true, pred, pos_label=1, zero_division=0)) if has_pos else None,
        specificity=float(recall_score(y_true, pred, pos_label=0, zero_division=0)) if has_neg else None,
    )


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def convert_bytes(model, fmt: str, representative: np.ndarray | None) -> bytes:
    tf = _tf()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if fmt == "int8":
        assert representative is not None and len(representative)

        def gen():
            for x in representative:
                yield [x[None].astype(np.float32)]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = gen
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.uint8
    elif fmt == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif fmt != "float32":
        raise ConvertError(f"unknown format {fmt!r} (choose {', '.join(FORMATS)})")
    # The converter prints every captured resource of the exported function (Python stdout), its C++ parts
    # print settings and "E0000" lines (file descriptors 1 and 2), and it warns about input statistics that
    # the representative dataset makes unnecessary: all of it goes to the debug log, not the terminal.
    with native_output_to_log("converter"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        data = conv.convert()
    return data


HEAD_LAYER = "p_defect"


def with_features(model: Any) -> tuple[Any, str]:
    """The Keras model with a second output: the input of its final Dense head (the pooled backbone
    features). Returns (model, head layer name); (model, "") when no such head is found (then the package has
    no features output and cannot be retrained on the device)."""
    import keras

    head = None
    try:
        head = model.get_layer(HEAD_LAYER)
    except ValueError:
        dense = [lyr for lyr in model.layers if isinstance(lyr, keras.layers.Dense)]
        head = dense[-1] if dense and dense[-1] is model.layers[-1] else None
    if head is None:
        log.warning("no final Dense layer %r found: the package gets no features output", HEAD_LAYER)
        return model, ""
    feats = head.input
    if len(feats.shape) != 2 or not feats.shape[-1] or int(feats.shape[-1]) < 2:
        log.warning("the head's input has shape %s, not (None, D): no features output", feats.shape)
        return model, ""
    return keras.Model(model.inputs, [model.outputs[0], feats], name=f"{model.name}with_features"), head.name


GAP_LAYER = "gap"  # training/model.py: the global average pooling of the backbone's last map, first in the features


def with_cells(export: Any, model: Any, head_layer: str) -> tuple[Any, bool]:
    """``export`` (:func:`with_features`) with one more output: the map the features' global average pools (the
    input of ``model``'s "gap" layer), for the head's map of every decision (edge/judge/head_map.py). Only where the
    features start with that average: the features are the "gap" output itself, or the "gap_mid" concatenation
    whose first part it is (--pooling gap+mid). Otherwise (flip TTA, several scales) (export, False). No
    ``head_layer``: an anomaly model, whose features are the "gap" output."""
    import keras

    try:
        gap = model.get_layer(GAP_LAYER)
        feats = model.get_layer(head_layer).input if head_layer else gap.output
    except ValueError:
        feats = None
    if feats is None or len(gap.input.shape) != 4:
        log.info("no cells output: the features are not the global average of one feature map")
        return export, False
    for lyr in model.layers:  # a Dropout before the head is the identity at inference (the finetune recipe's)
        if isinstance(lyr, keras.layers.Dropout) and lyr.output is feats:
            feats = lyr.input
    starts = feats is gap.output
    if not starts:
        try:
            first = model.get_layer("gap_mid").input[0]
            starts = first is gap.output and feats is model.get_layer("gap_mid").output
        except (ValueError, IndexError, TypeError):
            starts = False
    if not starts:
        log.info("no cells output: the features do not start with the global average (%s)", feats.shape)
        return export, False
    return keras.Model(export.inputs, [*export.outputs, gap.input], name=f"{export.name}_cells"), True


def cells_spec_of(runner: Runner, model: Any, head_layer: str) -> CellsSpec | None:
    """The sidecar's ``cells`` for the converted map output (the coarsest map: an anomaly package's patch map is
    finer), with the Keras head's weights (none for an anomaly package: a head-only package on it brings its own);
    None: no map output."""
    if not runner.map_positions:
        return None
    position = runner.map_positions[0]
    detail = runner.map_detail(position)
    assert detail is not None
    name, (rows, cols, channels), dtype, q = detail
    weights: list[float] = []
    bias = 0.0
    if head_layer:
        kernel, b = model.get_layer(head_layer).get_weights()
        weights, bias = [float(v) for v in np.asarray(kernel, np.float64).reshape(-1)], float(np.asarray(b).reshape(-1)[0])
    return CellsSpec(output_name=name, output_position=position, rows=rows, cols=cols, channels=channels,
                     dtype=str(dtype), quantization=QuantParams(scale=q[0], zero_point=q[1]) if q else None,
                     weights=weights, bias=bias)


def features_spec_of(runner: Runner, path: Path, layer: str) -> FeaturesSpec | None:
    if runner.features_position is None or runner.features_name is None:
        return None
    q = runner.features_quant
    return FeaturesSpec(
        output_name=runner.features_name, output_position=runner.features_position, dim=runner.features_dim,
        dtype=str(runner.features_dtype), quantization=QuantParams(scale=q[0], zero_point=q[1]) if q else None,
        layer=f"input of {layer}", backbone_sha256=backbone_digest(path, runner.features_name),
    )


def _cv_metrics(run: RunInfo) -> CVMetrics | None:
    """The linear recipe's out-of-fold operating point (train_config.json), as the package's CV metrics."""
    op = run.config.get("operating_point") or {}
    if "oof_roc_auc" not in op:
        return None
    rec, spec = op.get("recall"), op.get("specificity")
    f1 = None
    if rec is not None and spec is not None and op.get("n_defect") is not None and op.get("n_good") is not None:
        tp, fn = rec * op["n_defect"], (1 - rec) * op["n_defect"]
        tn, fp = spec * op["n_good"], (1 - spec) * op["n_good"]
        f1p = 2 * tp / max(1e-12, 2 * tp + fp + fn)
        f1n = 2 * tn / max(1e-12, 2 * tn + fn + fp)
        f1 = (f1p + f1n) / 2
    return CVMetrics(
        n=int(op.get("n", 0)), auc=float(op["oof_roc_auc"]), macro_f1=f1, recall=rec, specificity=spec,
        threshold=op.get("threshold"), rule=str(op.get("rule", "")), C=run.config.get("C_chosen"),
        folds=5, note=str(op.get("chosen_on", "out-of-fold scores of train+val (grouped CV)")),
    )


def _versions() -> dict[str, str]:
    return installed_versions("boxinspect", "tensorflow-cpu", "tensorflow", "keras", "numpy", "opencv-python-headless")


def _golden_tolerance(fmt: str, out_quant: tuple[float, int] | None) -> float:
    if fmt == "int8":
        return max(0.02, 3 * (out_quant[0] if out_quant else 0.0))
    return 0.01 if fmt == "fp16" else 0.005


def gate_table(keras: SplitMetrics, tfl: SplitMetrics, agreement: float, fmt: str) -> str:
    def f(x: float | None) -> str:
        return "   n/a" if x is None else f"{x:6.4f}"

    rows = [
        f"{'':14s} {'accuracy':>8s} {'macroF1':>8s} {'AUC':>8s} {'recall':>8s} {'specif.':>8s}",
        f"{'keras':14s} {f(keras.accuracy):>8s} {f(keras.macro_f1):>8s} {f(keras.auc):>8s} {f(keras.recall):>8s} "
        f"{f(keras.specificity):>8s}",
        f"{'tflite/' + fmt:14s} {f(tfl.accuracy):>8s} {f(tfl.macro_f1):>8s} {f(tfl.auc):>8s} {f(tfl.recall):>8s} "
        f"{f(tfl.specificity):>8s}",
        f"agreement (same side of threshold): {agreement:.4f} on n={tfl.n}",
    ]
    return "\n".join(rows)


@dataclass
class EvalSet:
    """The held-out images the gate compares Keras and TFLite on (test split, else val)."""

    split: str
    items: list[Item]
    x: np.ndarray


@dataclass
class GateOutcome:
    metrics: PackageMetrics | None
    passed: bool
    f1_drop: float
    auc_drop: float


def load_keras(run: RunInfo) -> tuple[Any, Path, int, int]:
    """Step 1: load ``model.keras`` and read its input size (H, W)."""
    keras_path = run.run_dir / "model.keras"
    if not keras_path.is_file():
        raise ConvertError(f"{keras_path} not found")
    _tf()
    import keras

    model = keras.models.load_model(keras_path, compile=False)
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[3] != 3:
        raise ConvertError(f"{keras_path}: expected input (None, H, W, 3), got {shape}")
    h, w = int(shape[1]), int(shape[2])
    if run.img_size != (0, 0) and run.img_size != (h, w):
        log.warning("train_config img_size %s differs from the model input %s; using the model's", run.img_size, (h, w))
    return model, keras_path, h, w


def items_by_split(run: RunInfo) -> dict[str, list[Item]]:
    by_split: dict[str, list[Item]] = {}
    for it in run.items:
        by_split.setdefault(it.split, []).append(it)
    return by_split


def calibration_images(
    run: RunInfo, by_split: dict[str, list[Item]], fmt: str, h: int, w: int, count: int
) -> np.ndarray | None:
    """Step 2: int8 only, up to ``count`` training images (seeded sample) to calibrate the quantisation."""
    if fmt != "int8":
        return None
    train_items = by_split.get("train", [])
    if not train_items:
        raise ConvertError(f"{run.run_dir}/split.json has no 'train' items to calibrate int8")
    rng = random.Random(0)
    chosen = rng.sample(train_items, min(count, len(train_items)))
    _, rep = load_items(chosen, h, w, run.crop, run.finder)
    if len(rep) == 0:
        raise ConvertError("no readable training images for int8 calibration")
    log.info("calibrating int8 on %d training images", len(rep))
    return rep


def load_eval_set(by_split: dict[str, list[Item]], h: int, w: int, gate: bool, crop: CropSpec,
                  finder: Path | None = None) -> EvalSet:
    """Step 3: the images the gate evaluates on (test split, else val)."""
    eval_split = "test" if by_split.get("test") else "val"
    eval_items, eval_x = load_items(by_split.get(eval_split, []), h, w, crop, finder)
    if eval_split != "test":
        log.warning("split.json has no test items; evaluating on %r instead", eval_split)
    if len(eval_items) == 0 and gate:
        raise ConvertError("no readable test/val images: cannot run the accuracy gate (use --no-gate to skip)")
    return EvalSet(eval_split, eval_items, eval_x)


def write_tmp(out: Path, data: bytes) -> Path:
    """Step 4b: write the converted bytes beside ``out`` under a temporary name (renamed only when complete)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".tflite.tmp", delete=False) as tmpf:
        tmpf.write(data)
    tmp = Path(tmpf.name)
    tmp.chmod(0o644)
    return tmp


def labels01(run: RunInfo, items: list[Item]) -> np.ndarray:
    return np.array([1 if it.label == run.positive_class else 0 for it in items], dtype=int)


def recalibrated_threshold(
    run: RunInfo, runner: Runner, by_split: dict[str, list[Item]], fmt: str, h: int, w: int
) -> tuple[float, str]:
    """Step 5 (optional): re-apply evaluate's threshold rule to the TFLite model's own validation scores."""
    from training import operating

    assert run.target_recall is not None or run.cost_ratio is not None
    val_items, val_x = load_items(by_split["val"], h, w, run.crop, run.finder)
    sel = operating.choose(labels01(run, val_items), np.array([runner.run(x) for x in val_x]),
                           run.target_recall, run.cost_ratio)
    threshold = float(sel["threshold"])
    source = (
        f"recalibrated for this {fmt} model: {sel['rule']} on "
        f"the validation split (val recall {sel['recall']:.3f}); Keras threshold was {run.threshold:.4f}"
    )
    log.info("threshold recalibrated on %d validation images: %.4f (Keras %.4f)", len(val_items),
             threshold, run.threshold)
    return threshold, source


def scores_of(model: Any, runner: Runner, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Keras model's and the converted model's scores of the same preprocessed images."""
    with native_output_to_log("Keras predict"):  # TensorFlow's C++ "E0000 ... NodeDef mentions attribute" lines
        keras_scores = np.asarray(model.predict(x.astype(np.float32), batch_size=32, verbose=0)).reshape(-1)
    return keras_scores, np.array([runner.run(img) for img in x], dtype=np.float64)


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1.0 - p))


def line_threshold(reference: np.ndarray, converted: np.ndarray, threshold: float) -> float | None:
    """``threshold`` on the reference scores carried onto the converted scores: a straight line fitted (least
    squares) from the reference logit to the converted logit, over the images neither model saturates (scores
    within ``MAP_UNSATURATED``); None with fewer than ``MAP_MIN_PAIRS`` such images or a line that does not rise."""
    lo, hi = MAP_UNSATURATED
    keep = (reference > lo) & (reference < hi) & (converted > lo) & (converted < hi)
    if keep.sum() < MAP_MIN_PAIRS:
        return None
    slope, intercept = np.polyfit(_logit(reference[keep]), _logit(converted[keep]), 1)
    if slope <= 0:
        return None
    return float(1.0 / (1.0 + np.exp(-(slope * _logit(np.float64(threshold)) + intercept))))


def mapped_threshold(run: RunInfo, model: Any, runner: Runner, rep: np.ndarray, fmt: str) -> tuple[float, str]:
    """Step 5 (default for int8): the run's threshold carried onto the converted model's score scale (ThresholdRule.MAP),
    fitted on the calibration images without their labels. Keeps the run's threshold, and says why, when the fit
    cannot place it or when the mapped threshold does not reproduce Keras' decisions on those images more often
    than the copied one."""
    keras_scores, conv_scores = scores_of(model, runner, rep)
    mapped = line_threshold(keras_scores, conv_scores, run.threshold)
    if mapped is None:
        log.warning("the %s scores of %d calibration images do not place the threshold %.4f; keeping it", fmt,
                    len(rep), run.threshold)
        return run.threshold, run.threshold_source
    keras_says = keras_scores >= run.threshold
    same_mapped = int(np.sum(keras_says == (conv_scores >= mapped)))
    same_copied = int(np.sum(keras_says == (conv_scores >= run.threshold)))
    log.info("threshold %.4f mapped onto the %s model's scores: %.4f; the same decision as Keras on %d of %d "
             "calibration images, %d with the threshold copied", run.threshold, fmt, mapped, same_mapped, len(rep),
             same_copied)
    if same_mapped <= same_copied:
        log.info("keeping the threshold %.4f: mapping it does not reproduce more of Keras' decisions", run.threshold)
        return run.threshold, (f"{run.threshold_source}, kept for this {fmt} model (mapped onto its scores it would "
                               f"be {mapped:.4f}, Keras' decision on {same_mapped} of {len(rep)} calibration images, "
                               f"{same_copied} copied)")
    source = (f"{run.threshold_source}, mapped onto this {fmt} model's scores ({run.threshold:.4f} -> {mapped:.4f}: "
              f"a line from the Keras logit to the {fmt} logit fitted on {len(rep)} calibration images, no labels; "
              f"Keras' decision on {same_mapped} of them, {same_copied} copied)")
    return mapped, source


def compare_models(
    run: RunInfo, model: Any, runner: Runner, ev: EvalSet, fmt: str, threshold: float, gate: bool,
    max_f1_drop: float, max_auc_drop: float,
) -> GateOutcome:
    """Step 6: score the eval images with Keras and TFLite, each at its own threshold, and apply the gate."""
    if not len(ev.items):
        log.warning("no evaluation images: package has no metrics and no gate was run")
        return GateOutcome(None, True, 0.0, 0.0)
    y = labels01(run, ev.items)
    keras_scores, tfl_scores = scores_of(model, runner, ev.x)
    if not np.all(np.isfinite(tfl_scores)):
        raise ConvertError(f"converted {fmt} model produced non-finite outputs; refusing it")
    km = split_metrics(y, keras_scores, run.threshold)
    tm = split_metrics(y, tfl_scores, threshold)
    agreement = float(np.mean((keras_scores >= run.threshold) == (tfl_scores >= threshold)))
    max_diff = float(np.max(np.abs(keras_scores - tfl_scores)))
    f1_drop = km.macro_f1 - tm.macro_f1
    auc_drop = (km.auc - tm.auc) if (km.auc is not None and tm.auc is not None) else 0.0
    passed = gate_allows(f1_drop, max_f1_drop) and gate_allows(auc_drop, max_auc_drop)
    if gate and len(y) < 100:
        log.warning("the %s split has only %d images: one changed decision moves macro F1 by about %.3f, "
                    "so the gate is coarse", ev.split, len(y), 2.0 / len(y))
    log.info("accuracy on %s split (threshold Keras %.3f, TFLite %.3f):\n%s", ev.split, run.threshold, threshold,
             gate_table(km, tm, agreement, fmt))
    metrics = PackageMetrics(
        split=ev.split, keras=km, tflite=tm, agreement=agreement, max_abs_score_diff=max_diff,
        gate_passed=passed, max_f1_drop=max_f1_drop, max_auc_drop=max_auc_drop,
        keras_threshold=run.threshold,
    )
    return GateOutcome(metrics, passed, f1_drop, auc_drop)


def golden_samples_of(run: RunInfo, runner: Runner, ev: EvalSet) -> list[GoldenSample]:
    """Step 7: a few eval images per class with the TFLite score, so the edge can self-check the model."""
    golden = []
    for cls in (run.positive_class, next(c for c in run.classes if c != run.positive_class)):
        idx = [i for i, it in enumerate(ev.items) if it.label == cls][:GOLDEN_PER_CLASS]
        for i in idx:
            golden.append(GoldenSample(name=ev.items[i].path.name, label=cls, png_b64=encode_golden(ev.x[i]),
                                       expected_score=float(runner.run(ev.x[i]))))
    return golden


def _split_counts(run: RunInfo) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for it in run.items:
        counts.setdefault(it.split, {}).setdefault(it.label, 0)
        counts[it.split][it.label] += 1
    return counts


def build_metadata(
    run: RunInfo, fmt: str, out: Path, keras_path: Path, runner: Runner, h: int, w: int, threshold: float,
    threshold_source: str, metrics: PackageMetrics | None, rep_n: int, golden: list[GoldenSample],
    features: FeaturesSpec | None = None, finder: FinderSpec | None = None, cells: CellsSpec | None = None,
) -> ModelMetadata:
    """Step 8: the sidecar for the (already renamed) ``out``."""
    return ModelMetadata(
        name=f"{run.run_dir.name}_{fmt}",
        format=fmt,
        labels=run.classes,
        positive_class=run.positive_class,
        input=InputSpec(
            height=h, width=w, dtype=str(runner.input_dtype), resize=RESIZE,
            quantization=QuantParams(scale=runner.input_quant[0], zero_point=runner.input_quant[1])
            if runner.input_quant else None,
        ),
        output=OutputSpec(
            dtype=str(runner.output_dtype),
            quantization=QuantParams(scale=runner.output_quant[0], zero_point=runner.output_quant[1])
            if runner.output_quant else None,
        ),
        preprocessing=PREPROCESSING_TEXT.format(w=w, h=h),
        crop=run.crop,
        threshold=threshold,
        threshold_source=threshold_source,
        metrics=metrics,
        training_data=TrainingDataSummary(data_dir=run.data_dir, counts=_split_counts(run), representative_count=rep_n),
        source={"run_dir": str(run.run_dir.resolve()), "keras_model": str(keras_path.resolve())},
        sha256=sha256_file(out),
        size_bytes=out.stat().st_size,
        created_at=utc_now(),
        tool_version=_versions().get("boxinspect", "unknown"),
        versions=_versions(),
        golden=golden,
        golden_tolerance=_golden_tolerance(fmt, runner.output_quant),
        features=features,
        cv_metrics=_cv_metrics(run),
        finder=finder,
        cells=cells,
    )


def gate_rejection(out: Path, fmt: str, outcome: GateOutcome, max_f1_drop: float, max_auc_drop: float) -> GateError:
    """Step 9: the gate failed; rename the package ``*.rejected.tflite`` so it cannot be deployed by accident."""
    rejected = out.with_name(out.stem + ".rejected.tflite")
    out.replace(rejected)
    sidecar_path(out).replace(sidecar_path(rejected))
    return GateError(
        f"accuracy gate failed for {fmt}: macro F1 drop {outcome.f1_drop:+.4f} (max {max_f1_drop:g}), "
        f"AUC drop {outcome.auc_drop:+.4f} (max {max_auc_drop:g}); model kept as {rejected} for inspection",
        rejected,
    )
