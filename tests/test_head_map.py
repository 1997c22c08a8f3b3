"""Issue 29: a supervised package's comparable map (edge/judge/head_map.py), on real packages from our own convert.

The package's .tflite exports the last feature map (``cells``) beside the score and the pooled features; the head
applied to each cell is the cell's logit, and the mean of the cell logits is the crop's logit (the global average
is linear). So, on a float32 package, ``sigmoid(mean of the cell logits)`` IS the package's score, for the .tflite's
own head and for a head-only candidate's head alike. The map must also point at the defect: in a crop made of a
defective half and a good half, the defective half's cells score higher. The daemon's events carry it and the stored
model input re-makes it: tests/test_decision_evidence.py (``check_what_decided``).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.judge.classifier import Classifier
from edge.judge.heatmap import heat_of
from edge.judge.model_package import MapKind
from edge.learn.retrain import retrain
from tests.helpers import label_dir, sample_images
from tests.test_anomaly import anomaly_package  # noqa: F401  (registers the module-scoped fixture here)


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def test_the_committed_package_carries_a_map_that_averages_to_its_score(tiny_model: Path, few_boxes: Path):
    clf = Classifier.load(tiny_model)
    spec = clf.metadata.cells
    assert spec is not None and clf.map_kind is MapKind.HEAD
    assert spec.channels == 1280 and len(spec.weights) == clf.metadata.features.dim  # type: ignore[union-attr]
    for img in sample_images(few_boxes / "defective", 3) + sample_images(few_boxes / "ok", 3):
        bgr = cv2.imread(str(img))
        got = clf.score_all(bgr)
        assert got.kind is MapKind.HEAD and got.cells is not None and got.cells.shape == (spec.rows, spec.cols)
        assert got.score == clf.score(bgr)  # the same invoke, the same score
        assert got.cells.std() > 0  # cells differ: the map shows where


def _head_on_each_cell(clf: Classifier, rgb: np.ndarray, weights: np.ndarray, bias: float) -> np.ndarray:
    """The head applied to each cell in place of the pooled average, computed from the outputs directly."""
    assert clf.metadata.cells is not None
    _, feat, fmap = clf.runner.run_outputs(rgb, clf.metadata.cells.output_position)
    assert feat is not None and fmap is not None
    c = fmap.shape[-1]
    return fmap.astype(np.float64) @ weights[:c] + float(feat[c:].astype(np.float64) @ weights[c:]) + bias


def _check_float_map(clf: Classifier, images: list[Path], weights: np.ndarray, bias: float) -> None:
    """On a float32 package the map the edge computes (anchored on the score) is the head on every cell, and the
    cells' mean logit is the package's score: both hold only if the features start with the cells' average."""
    for img in images:
        got = clf.score_all(cv2.imread(str(img)))
        assert got.cells is not None and got.kind is MapKind.HEAD
        direct = _head_on_each_cell(clf, got.rgb, weights, bias)
        # the same map up to its anchor (the float32 sigmoid's rounding moves a saturated score's logit a little)
        np.testing.assert_allclose(got.cells - got.cells.mean(), direct - direct.mean(), atol=1e-3)
        assert _sigmoid(float(direct.mean())) == pytest.approx(got.score, abs=1e-4)


@pytest.mark.slow
def test_a_float_package_map_is_its_head_on_every_cell(float_model: Path, synth_data: Path):
    clf = Classifier.load(float_model)
    spec = clf.metadata.cells
    assert spec is not None and clf.map_kind is MapKind.HEAD
    _check_float_map(clf, sample_images(synth_data / "defective", 6) + sample_images(synth_data / "ok", 6),
                     np.asarray(spec.weights), spec.bias)


@pytest.mark.slow
def test_a_head_only_candidate_maps_with_its_own_head(float_model: Path, synth_data: Path, tmp_path: Path):
    labels = label_dir(synth_data, tmp_path / "feedback",
                       sample_images(synth_data / "defective", 24) + sample_images(synth_data / "ok", 24))
    res = retrain(float_model, [labels], tmp_path / "cand", min_per_class=20)
    cand = Classifier.load(res.candidate)
    assert cand.metadata.head is not None and cand.map_kind is MapKind.HEAD
    w, b = cand.metadata.head.folded()
    _check_float_map(cand, sample_images(synth_data / "defective", 4) + sample_images(synth_data / "ok", 4), w, b)


def _halves(defect: np.ndarray, good: np.ndarray, defect_left: bool) -> np.ndarray:
    """One crop: the left half of one image beside the right half of the other (both at the same size)."""
    h, w = good.shape[:2]
    defect = cv2.resize(defect, (w, h))
    left, right = (defect, good) if defect_left else (good, defect)
    return np.concatenate([left[:, : w // 2], right[:, w // 2:]], axis=1)


@pytest.mark.slow
def test_the_map_points_at_the_defective_half(float_model: Path, synth_data: Path):
    """Half a defective box beside half a good one, on either side: over many pairs the defective side's cells
    score higher far more often than not (a map that shows nothing would be right half the time)."""
    clf = Classifier.load(float_model)
    bad = [cv2.imread(str(p)) for p in sample_images(synth_data / "defective", 40)]
    good = [cv2.imread(str(p)) for p in sample_images(synth_data / "ok", 40)]
    right = 0
    for i, (b, g) in enumerate(zip(bad, good, strict=True)):
        left = i % 2 == 0
        _, _, heat = heat_of(clf, _halves(b, g, left), None)
        assert heat is not None and heat.kind is MapKind.HEAD
        cols = heat.ratio.shape[1]
        side_l, side_r = np.log(heat.ratio[:, : cols // 2]).mean(), np.log(heat.ratio[:, cols - cols // 2:]).mean()
        right += int((side_l > side_r) == left)
    # 38 of 40 on this machine; chance gives 20 (30 or more by chance: p < 0.001)
    assert right >= 30, f"the defective half scored higher in {right} of 40 crops"


@pytest.mark.slow
def test_a_head_retrained_on_an_anomaly_package_maps_with_its_head(anomaly_package: Path, synth_data: Path,  # noqa: F811
                                                                   tmp_path: Path):
    """The switch (edge/learn/recipes.py): a supervised head on an anomaly package's backbone. The anomaly package
    exports the last feature map too (without a head of its own: its map is the patch distances), so the head maps."""
    live = Classifier.load(anomaly_package)
    assert live.map_kind is MapKind.ANOMALY and live.metadata.cells is not None and not live.metadata.cells.weights
    labels = label_dir(synth_data, tmp_path / "feedback",
                       sample_images(synth_data / "defective", 24) + sample_images(synth_data / "ok", 24))
    cand = Classifier.load(retrain(anomaly_package, [labels], tmp_path / "cand", min_per_class=20).candidate)
    assert cand.anomaly is None and cand.metadata.head is not None and cand.map_kind is MapKind.HEAD
    w, b = cand.metadata.head.folded()
    _check_float_map(cand, sample_images(synth_data / "defective", 4) + sample_images(synth_data / "ok", 4), w, b)
