"""`--weights boxes` (issue 25): the built-in backbone adapted to boxes. The shipped file is the one its build record
names, was built on none of the study sets' seeds, loads as the MobileNetV2 alpha 0.35 trunk, and is the ImageNet
trunk fine-tuned from block 7 on (the blocks before it untouched), as the record says.

What it does to accuracy is a measurement, not a test: docs/RESULTS.md "A backbone adapted to boxes"."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from training.model import BOXES_WEIGHTS, WeightsError, resolve_weights

RECORD = BOXES_WEIGHTS.with_name(BOXES_WEIGHTS.name + ".json")
STUDY_SEEDS = {3, 7, 8, 21, 31, 32, 3003, 3004, 4101, 4102}  # dev and held-out sets of docs/RESULTS.md


def test_the_shipped_backbone_is_the_file_its_record_names() -> None:
    rec = json.loads(RECORD.read_text())
    assert rec["sha256"] == hashlib.sha256(BOXES_WEIGHTS.read_bytes()).hexdigest()
    seeds = {s for kind in rec["data"].values() for s in kind["seeds"]}
    assert seeds and not seeds & STUDY_SEEDS


def test_weights_boxes_resolves_to_the_asset_for_alpha_035_only() -> None:
    assert resolve_weights("boxes", 0.35, 224) == str(BOXES_WEIGHTS)
    assert resolve_weights("BOXES", 0.35, 160) == str(BOXES_WEIGHTS)
    with pytest.raises(WeightsError, match="alpha 0.35"):
        resolve_weights("boxes", 1.0, 224)


def _block(layer_name: str) -> int:
    """MobileNetV2's block of a layer: 0 for the stem (Conv1, expanded_conv), 99 for the head (Conv_1)."""
    name = layer_name.removeprefix("bn_")
    if name.startswith("block_"):
        return int(name.split("_")[1])
    return 0 if name.startswith(("Conv1", "expanded_conv")) else 99


@pytest.mark.slow  # imports Keras (TensorFlow): not in the fast lane
def test_boxes_is_the_imagenet_trunk_fine_tuned_from_block_7(weights_path: Path) -> None:
    from training.model import build_backbone

    boxes = build_backbone(224, 0.35, resolve_weights("boxes", 0.35, 224))
    imagenet = build_backbone(224, 0.35, str(weights_path))
    from_block = json.loads(RECORD.read_text())["from_block"]
    changed = [_block(a.name) for a, b in zip(boxes.layers, imagenet.layers, strict=True)
               if not all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))]
    assert len(changed) > 10 and min(changed) == from_block  # blocks before it (and every BatchNorm) untouched


# ---------------------------------------------------------------- --weights auto (training/backbones.py)


def test_auto_keeps_the_backbone_whose_head_scores_better_out_of_fold() -> None:
    from training import backbones

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    groups = np.arange(80)
    noise = rng.normal(size=(80, 16))
    signal = noise + 1.5 * y[:, None] * (rng.uniform(size=16) > 0.5)  # separates the classes: out-of-fold AUC ~1
    got = backbones.choose(np.stack([noise, signal]), y, groups)
    assert got.weights == "boxes" and got.oof_auc["boxes"] > 0.9 > got.oof_auc["imagenet"]
    assert backbones.choose(np.stack([signal, noise]), y, groups).weights == "imagenet"
    assert backbones.choose(np.stack([signal, signal]), y, groups).weights == "imagenet"  # a tie: imagenet
    assert "backbone boxes" in got.sentence()


def test_auto_is_chosen_by_the_linear_recipe_and_fixed_for_the_others(tmp_path: Path) -> None:
    from training.backbones import for_recipe as weights_for
    from training.cv import CVConfig, run_cv

    assert weights_for("auto", "linear", 0.35) == "auto" and weights_for("auto", "anomaly", 0.35) == "boxes"
    assert weights_for("auto", "finetune", 0.35) == "imagenet" and weights_for("auto", "linear", 1.0) == "imagenet"
    assert weights_for("imagenet", "anomaly", 0.35) == "imagenet" and weights_for("boxes", "linear", 0.35) == "boxes"
    with pytest.raises(ValueError, match="--weights auto is the linear recipe's choice"):
        run_cv(CVConfig(data_dir=tmp_path, out_dir=tmp_path / "o", recipe="anomaly", weights="auto"))
    with pytest.raises(WeightsError, match="needs one backbone"):
        resolve_weights("auto", 0.35, 224)


@pytest.mark.slow  # two feature passes and a Keras model
def test_train_and_cv_with_auto_choose_a_backbone_and_record_it(tmp_path: Path, weights_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    import keras

    from boxinspect.synth import make_dataset
    from training.cv import CVConfig, run_cv
    from training.train import TrainConfig, train

    (tmp_path / "keras" / "models").mkdir(parents=True)  # imagenet offline: the official file in Keras' cache
    shutil.copy(weights_path, tmp_path / "keras" / "models" / weights_path.name)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    data = tmp_path / "data"
    make_dataset(data, n_per_class=24, size=96, seed=5, progress=False)
    run = train(TrainConfig(data_dir=data, out_dir=tmp_path / "run", img_size=96, weights="auto"))
    chosen = json.loads((run / "history.json").read_text())["linear"]["backbone"]
    assert chosen["weights"] in ("imagenet", "boxes") and set(chosen["oof_auc_by_weights"]) == {"imagenet", "boxes"}
    assert chosen["oof_auc_by_weights"][chosen["weights"]] == max(chosen["oof_auc_by_weights"].values())
    # the model carries the chosen backbone: its last convolution is the chosen file's
    from training.model import build_backbone

    want = build_backbone(96, 0.35, resolve_weights(chosen["weights"], 0.35, 96)).get_layer("Conv_1").get_weights()
    model = keras.models.load_model(run / "model.keras", compile=False)
    def layers(m):  # every layer, nested models' too (public API: Model.layers)
        for layer in m.layers:
            yield layer
            yield from layers(layer) if hasattr(layer, "layers") else ()

    conv = next(layer for layer in layers(model) if layer.name == "Conv_1")
    assert all(np.array_equal(a, b) for a, b in zip(conv.get_weights(), want, strict=True))
    s = run_cv(CVConfig(data_dir=data, out_dir=tmp_path / "cv", img_size=96, weights="auto", folds=3, repeats=1))
    assert sum(s["backbones"].values()) == 3 and all("weights" in r for r in s["folds"])
