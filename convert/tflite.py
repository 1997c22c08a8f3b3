"""Keras run directory -> TFLite model package (.tflite + metadata sidecar), with an accuracy gate.

Formats:
  int8     full-integer quantisation, uint8 input (the raw RGB frame, no float math) and uint8 output,
           calibrated on images from the TRAINING split. The edge default: about 2x faster than float32.
           Its threshold is the run's, mapped onto the int8 score scale on the same images (ThresholdRule.MAP).
  fp16     float16 weights (half the size), float32 compute on CPU.
  float32  no optimisation; the reference.
Dynamic-range quantisation is deliberately not offered: measured slower than float32 on x86 and ARM with
XNNPACK, and int8 beats it on size and speed (docs/BENCHMARKS.md).

Every package also exports the backbone's pooled features as a second output of the same .tflite: the
input of the model's final Dense head (``p_defect``), i.e. the global-average-pooled MobileNetV2 features
(mean of the image's and its mirror's with flip TTA). The sidecar's ``features`` names that output and holds
``backbone_sha256`` (edge/judge/backbone.py), so ``boxinspect retrain`` can fit a new head on the device
(edge/learn/retrain.py) and the daemon can score a candidate head in shadow from the live model's features.

The gate evaluates the TFLite model next to the Keras model on the held-out test split with the SAME
preprocessing the edge uses (edge.judge.model_package.model_input: the run's box crop, then resize), so the
difference measured is the conversion alone. Calibration images and golden samples are crops too. If macro F1 or AUC drops more than the margins, GateError is raised and the package is
renamed ``*.rejected.tflite`` so it cannot be deployed by accident.

Rounding rule of the gate (``gate_allows``): a drop is judged at ``GATE_DECIMALS`` (4) decimal places, the
precision the verdict prints, and a drop equal to its limit at that precision PASSES. So "macro F1 drop +0.0300
(max 0.03)" passes, whatever the binary float behind 0.0300 (three changed decisions of 100 are 0.0300 or
0.03004 depending on the classes), and +0.0301 fails. 1e-4 is far finer than one changed decision on any
test split under 10,000 images.

The pieces every recipe shares live in convert/common.py; the anomaly recipe's package is built by
convert/anomaly.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convert.common import (
    FORMATS,
    GATE_DECIMALS,
    ConvertError,
    EvalSet,
    GateError,
    GateOutcome,
    Item,
    RunInfo,
    ThresholdRule,
    build_metadata,
    calibration_images,
    cells_spec_of,
    compare_models,
    convert_bytes,
    copy_finder,
    default_threshold_rule,
    features_spec_of,
    gate_allows,
    gate_rejection,
    golden_samples_of,
    items_by_split,
    load_eval_set,
    load_keras,
    mapped_threshold,
    read_run,
    recalibrated_threshold,
    with_cells,
    with_features,
    write_tmp,
)
from edge.judge.classifier import Runner
from edge.judge.model_package import ModelMetadata, sidecar_path, write_metadata
from training.quiet import native_output_to_log

__all__ = ["FORMATS", "GATE_DECIMALS", "ConvertError", "GateError", "convert_bytes", "convert_run", "gate_allows", "read_run"]

log = logging.getLogger(__name__)


@dataclass
class _Inputs:
    """What a conversion reads from the run: its Keras model and input size, the items by split, the
    calibration images (int8; None otherwise) and the evaluation set of the gate."""

    run: RunInfo
    model: Any
    keras_path: Path
    h: int
    w: int
    by_split: dict[str, list[Item]]
    rep: np.ndarray | None
    ev: EvalSet


def convert_run(
    run_dir: Path,
    fmt: str = "int8",
    out: Path | None = None,
    representative_count: int = 200,
    gate: bool = True,
    max_f1_drop: float = 0.01,
    max_auc_drop: float = 0.01,
    threshold_rule: ThresholdRule | None = None,
) -> Path:
    """Convert ``run_dir/model.keras`` to ``out`` (default ``run_dir/model_<fmt>.tflite``) + sidecar.

    Returns the .tflite path. Raises ConvertError for unusable input and GateError when the converted
    model loses more than ``max_f1_drop`` macro F1 or ``max_auc_drop`` AUC against Keras on the test split
    (judged at 4 decimals, a drop equal to the limit passes: ``gate_allows``). With ``gate=False`` the
    verdict is still recorded in the sidecar (``metrics.gate_passed``) but not enforced.

    ``threshold_rule`` (ThresholdRule; default MAP for int8, KEEP otherwise): MAP carries the run's threshold onto
    the int8 model's score scale without labels (quantisation can shift a linear head's scores systematically);
    RECALIBRATE applies the rule evaluate used to choose it (highest threshold with recall >= target on the
    validation split) to the TFLite model's own validation scores, keeping the operating point (the recall
    target) rather than the number; KEEP copies it. The gate compares each model at its own threshold.

    Steps: load Keras model -> calibration images (int8) -> eval images -> convert to a temp file ->
    (map or recalibrate the threshold) -> compare Keras vs TFLite (gate) -> golden samples -> rename + sidecar ->
    reject if the gate failed.
    """
    if fmt not in FORMATS:
        raise ConvertError(f"unknown format {fmt!r} (choose {', '.join(FORMATS)})")
    run = read_run(Path(run_dir))
    if run.config.get("recipe") == "anomaly":  # patch map + bank of good parts (convert/anomaly.py)
        from convert.anomaly import convert_anomaly

        return convert_anomaly(run, fmt, out, representative_count, gate, max_f1_drop, max_auc_drop)
    rule = threshold_rule or default_threshold_rule(fmt)
    inp = _inputs(run, fmt, representative_count, gate, rule)
    out = Path(out) if out else run.run_dir / f"model_{fmt}.tflite"
    log.info("converting %s to %s", inp.keras_path, fmt)
    meta, outcome = _package(inp, fmt, out, rule, gate, max_f1_drop, max_auc_drop)
    if gate and not outcome.passed:
        raise gate_rejection(out, fmt, outcome, max_f1_drop, max_auc_drop)
    log.info("wrote %s (%d bytes, sha256 %s) and %s", out, meta.size_bytes, meta.sha256[:12], sidecar_path(out).name)
    return out


def _inputs(run: RunInfo, fmt: str, representative_count: int, gate: bool, rule: ThresholdRule) -> _Inputs:
    """Load the Keras model, the calibration images (int8) and the evaluation set; ConvertError when the
    threshold ``rule`` cannot apply to this run."""
    if rule is ThresholdRule.MAP and fmt != "int8":
        raise ConvertError(f"the threshold is mapped onto int8 scores only; {fmt} scores like Keras (keep it)")
    model, keras_path, h, w = load_keras(run)
    by_split = items_by_split(run)
    rep = calibration_images(run, by_split, fmt, h, w, representative_count)
    if rule is ThresholdRule.RECALIBRATE and ((run.target_recall is None and run.cost_ratio is None) or not by_split.get("val")):
        raise ConvertError(
            "--recalibrate-threshold needs metrics.json with a validation threshold_selection (from "
            "`boxinspect evaluate`) and validation items in split.json; a run of the linear recipe chose its "
            "threshold on out-of-fold scores (its head was fitted on val), so it cannot be re-chosen on val: "
            "int8 maps it onto its own scores by default; use --format fp16 if int8 is still rejected"
        )
    ev = load_eval_set(by_split, h, w, gate, run.crop, run.finder)
    return _Inputs(run, model, keras_path, h, w, by_split, rep, ev)


def _package(inp: _Inputs, fmt: str, out: Path, rule: ThresholdRule, gate: bool, max_f1_drop: float,
             max_auc_drop: float) -> tuple[ModelMetadata, GateOutcome]:
    """Convert to a temp file, load it, (map or recalibrate the threshold,) compare it with Keras, take the golden
    samples, then rename it to ``out`` and write its sidecar (also when the gate failed: the caller rejects)."""
    run = inp.run
    export, head_layer = with_features(inp.model)
    export, has_cells = with_cells(export, inp.model, head_layer) if head_layer else (export, False)
    tmp = write_tmp(out, convert_bytes(export, fmt, inp.rep))
    try:
        with native_output_to_log("LiteRT"):  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
            runner = Runner(tmp, num_threads=2)
        threshold, threshold_source = run.threshold, run.threshold_source
        if rule is ThresholdRule.RECALIBRATE:
            threshold, threshold_source = recalibrated_threshold(run, runner, inp.by_split, fmt, inp.h, inp.w)
        elif rule is ThresholdRule.MAP and inp.rep is not None:
            threshold, threshold_source = mapped_threshold(run, inp.model, runner, inp.rep, fmt)
        outcome = compare_models(run, inp.model, runner, inp.ev, fmt, threshold, gate, max_f1_drop, max_auc_drop)
        golden = golden_samples_of(run, runner, inp.ev)
        features = features_spec_of(runner, tmp, head_layer) if head_layer else None
        cells = cells_spec_of(runner, inp.model, head_layer) if has_cells and features else None
        tmp.replace(out)
        meta = build_metadata(run, fmt, out, inp.keras_path, runner, inp.h, inp.w, threshold, threshold_source,
                              outcome.metrics, 0 if inp.rep is None else len(inp.rep), golden, features,
                              copy_finder(run, out, [it.path for it in inp.ev.items]), cells)
        write_metadata(meta, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return meta, outcome
