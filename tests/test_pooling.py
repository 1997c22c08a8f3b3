"""The linear recipe's feature vector (``--pooling``, issue 25): ``gap`` (the backbone's last map averaged, 1280) or
``gap+mid`` (that, and the largest and the mean response of the anomaly recipe's mid-level patch map over the crop's
inner cells, + 2 x 288). One graph (training.model.mid_pooled) makes the features the head is fitted on and
model.keras, so convert, predict and the daemon compute the same vector; the choice is part of the feature cache
key and recorded in the run.

Measured: docs/RESULTS.md "Mid-level pooling beside the linear head's vector"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

CLI = [sys.executable, "-m", "boxinspect.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_gap_keeps_its_feature_cache_key_and_gap_mid_has_its_own(weights_path: Path) -> None:
    from training.features import FeatureSpec

    base = FeatureSpec(224, 0.35, str(weights_path), crop="auto", shape="aligned")
    assert FeatureSpec(224, 0.35, str(weights_path), crop="auto", shape="aligned", pooling="gap").key() == base.key()
    assert FeatureSpec(224, 0.35, str(weights_path), crop="auto", shape="aligned", pooling="gap+mid").key() != base.key()


def test_pooling_is_checked_and_is_for_the_linear_recipe(tmp_path: Path) -> None:
    from training.model import check_pooling
    from training.train import TrainConfig, train

    check_pooling("gap+mid", (224,), False)
    with pytest.raises(ValueError, match="--pooling must be one of gap, gap\\+mid"):
        check_pooling("max", (224,), False)
    for scales, flip in (((160, 224), False), ((224,), True)):
        with pytest.raises(ValueError, match="--pooling gap\\+mid takes one input size and no --flip-tta"):
            check_pooling("gap+mid", scales, flip)
    with pytest.raises(ValueError, match="--pooling is for the linear recipe"):
        train(TrainConfig(data_dir=tmp_path, out_dir=tmp_path / "o", recipe="finetune", pooling="gap+mid"))
    r = subprocess.run([*CLI, "cv", str(tmp_path), "--out", str(tmp_path / "o"), "--recipe", "anomaly",
                        "--pooling", "gap+mid"], capture_output=True, text=True, timeout=120, env=ENV)
    assert r.returncode == 2 and "--pooling is for the linear recipe" in r.stderr


@pytest.mark.slow  # two MobileNetV2 graphs
def test_gap_mid_is_the_patch_maps_inner_max_and_mean_beside_the_average(weights_path: Path) -> None:
    from training import anomaly
    from training import model as model_mod

    x = np.random.default_rng(0).uniform(0, 255, (3, 96, 96, 3)).astype(np.float32)
    f = model_mod.build_feature_model(96, 0.35, str(weights_path), pooling="gap+mid").predict(x, verbose=0)
    pooled, patches = anomaly.build_patch_model(96, 0.35, str(weights_path)).predict(x, verbose=0)
    inner = patches[:, 1:-1, 1:-1]  # 6 x 6 cells at 96 px, the outer ring left out
    assert f.shape == (3, 1280 + 2 * 288)
    np.testing.assert_allclose(f, np.c_[pooled, inner.max(axis=(1, 2)), inner.mean(axis=(1, 2))], atol=1e-4)
    assert not np.allclose(inner.max(axis=(1, 2)), patches.max(axis=(1, 2)))  # the ring is left out: can fail


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from boxinspect.boxfinder import render

    return render(tmp_path_factory.mktemp("pool"), [1117], 6, kinds=("line",))[0]  # 24 photos, 2 views a part


@pytest.mark.slow
def test_a_gap_mid_run_packages_and_scores_as_it_trained(scenes: Path, tmp_path: Path, weights_path: Path) -> None:
    """train --pooling gap+mid, then convert: the package's features output is the wide vector, its score of a
    photo is the Keras model's on the same model input, and its golden samples pass the self-test."""
    import keras

    from convert.tflite import convert_run
    from edge.judge.classifier import Classifier
    from edge.judge.images import read_bgr
    from edge.judge.model_package import MapKind

    env = {**ENV, "BOXINSPECT_FEATURE_CACHE": str(tmp_path / "features")}
    run = tmp_path / "run"
    r = subprocess.run([*CLI, "train", str(scenes), "--out", str(run), "--img-size", "96", "--weights",
                        str(weights_path), "--C", "1", "--pooling", "gap+mid"],
                       capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((run / "train_config.json").read_text())["pooling"] == "gap+mid"
    model = keras.models.load_model(run / "model.keras", compile=False)
    assert model.get_layer("p_defect").input.shape[-1] == 1856
    clf = Classifier.load(convert_run(run, "float32", tmp_path / "out" / "line.tflite", gate=False))
    assert clf.self_test() == [] and clf.runner.features_dim == 1856
    for p in sorted(scenes.rglob("*.jpg"))[:4]:
        bgr = np.asarray(read_bgr(p))
        want = float(model.predict(clf.preprocess(bgr)[None].astype(np.float32), verbose=0).ravel()[0])
        assert clf.score(bgr) == pytest.approx(want, abs=1e-4)
        # issue 29: its map (the head on every cell of the last map, the mid-level part shared) averages to the score
        got = clf.score_all(bgr)
        assert got.kind is MapKind.HEAD and got.cells is not None and got.cells.shape == (3, 3)
        assert clf.metadata.cells is not None
        _, feat, fmap = clf.runner.run_outputs(got.rgb, clf.metadata.cells.output_position)
        assert feat is not None and fmap is not None
        w = np.asarray(clf.metadata.cells.weights)
        direct = fmap @ w[:1280] + feat[1280:] @ w[1280:] + clf.metadata.cells.bias  # the head on each cell
        np.testing.assert_allclose(got.cells - got.cells.mean(), direct - direct.mean(), atol=1e-3)
        assert 1 / (1 + np.exp(-direct.mean())) == pytest.approx(got.score, abs=1e-4)


def test_the_linear_recipe_pools_mid_level_cells_by_default() -> None:
    from training.cli import pooling_for

    assert pooling_for(None, "linear", 224, None, False) == "gap+mid"
    assert pooling_for("gap", "linear", 224, None, False) == "gap"  # asked for: kept
    # where the default cannot apply it falls back to the average; asked for there, train / cv refuse it (above)
    assert pooling_for(None, "linear", 224, [160, 224], False) == pooling_for(None, "linear", 224, None, True) == "gap"
    assert pooling_for(None, "linear", 32, None, False) == "gap"  # too small for a 3 x 3 patch map
    assert pooling_for(None, "anomaly", 224, None, False) == pooling_for(None, "finetune", 160, None, False) == "gap"
