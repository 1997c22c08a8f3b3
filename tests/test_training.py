"""Training: class weights, oversampling, weight resolution, CLI registration, a tiny end-to-end run."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from training.train import class_weights, oversample_indices


def test_class_weights_balance_the_loss():
    y = np.array([0] * 30 + [1] * 10)
    w = class_weights(y)
    assert w[0] == pytest.approx(40 / (2 * 30)) and w[1] == pytest.approx(40 / (2 * 10))
    # each class then carries the same total weight
    assert 30 * w[0] == pytest.approx(10 * w[1])
    assert class_weights(np.array([0, 1, 0, 1])) == {0: 1.0, 1: 1.0}


def test_oversampling_balances_and_keeps_every_image():
    y = np.array([0] * 25 + [1] * 5)
    idx = oversample_indices(y, np.random.default_rng(0))
    assert np.bincount(y[idx]).tolist() == [25, 25]
    assert set(idx.tolist()) == set(range(30))


def test_weights_none_and_missing_path():
    from training.model import WeightsError, resolve_weights

    assert resolve_weights("none", 0.35, 96) is None
    with pytest.raises(WeightsError, match="not found"):
        resolve_weights("/nonexistent/w.h5", 0.35, 96)


@pytest.mark.slow  # imports Keras (TensorFlow): not in the fast lane
def test_imagenet_weights_come_from_the_keras_cache_offline(tmp_path, monkeypatch, weights_path):
    """The documented offline route: the official file in $KERAS_HOME/models/ serves any input size."""
    import keras

    from training.model import WeightsError, resolve_weights

    def no_network(*a, **k):
        raise Exception("URL fetch failure: network unreachable")

    monkeypatch.setattr(keras.utils, "get_file", no_network)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(WeightsError) as e:
        resolve_weights("imagenet", 0.35, 128)
    msg = str(e.value)
    assert "offline" in msg and str(tmp_path / "models") in msg and "--weights PATH" in msg
    (tmp_path / "models").mkdir()
    shutil.copy(weights_path, tmp_path / "models" / weights_path.name)
    assert resolve_weights("imagenet", 0.35, 128) == str(tmp_path / "models" / weights_path.name)


def test_registration_and_package_import_do_not_import_tensorflow():
    code = (
        "import argparse, sys, training, training.cli\n"
        "p = argparse.ArgumentParser(); training.cli.register(p.add_subparsers())\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_help_teaches_the_defaults():
    out = subprocess.run([sys.executable, "-m", "boxinspect.cli", "train", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for text in ("--img-size", "default 224 for linear", "--recipe", "1e-4", "--balance", "--split-manifest",
                 "~/.keras/models/"):
        assert text in out, text


def test_scales_option_sets_the_input_size_and_refuses_bad_values(tmp_path):
    """``--scales 224,288``: the model input is the largest scale; a conflicting --img-size or a bad list is one
    clear error (exit 2, no traceback), before any data or TensorFlow is touched."""
    from training.cli import img_size_and_scales, scales_arg

    assert scales_arg("288,224") == [224, 288]
    assert img_size_and_scales(None, [224, 288], 224) == (288, [224, 288])
    assert img_size_and_scales(None, None, 224) == (224, None) and img_size_and_scales(160, [160], 224) == (160, None)
    for bad in ("224,224", "224,x", "16,224", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            scales_arg(bad)
    p = subprocess.run([sys.executable, "-m", "boxinspect.cli", "train", str(tmp_path), "--out", str(tmp_path / "r"),
                        "--img-size", "224", "--scales", "224,288"], capture_output=True, text=True)
    assert p.returncode == 2 and "largest scale (288)" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-m", "boxinspect.cli", "cv", str(tmp_path), "--out", str(tmp_path / "c"),
                        "--scales", "224,two"], capture_output=True, text=True)
    assert p.returncode == 2 and "--scales" in p.stderr and "Traceback" not in p.stderr


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    from boxinspect.synth import make_dataset

    out = tmp_path_factory.mktemp("data")
    make_dataset(out, n_per_class=24, size=96, seed=3, progress=False)
    (out / "ok" / "corrupt.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return out


@pytest.mark.slow
def test_tiny_end_to_end_training(tmp_path, small_data, weights_path):
    import keras

    from training.evaluate import evaluate
    from training.split import leaks, load_split
    from training.train import TrainConfig, train

    run = train(TrainConfig(
        data_dir=small_data, out_dir=tmp_path / "run", img_size=96, weights=str(weights_path),
        epochs=1, fine_tune_epochs=1, batch_size=16, balance="oversample", seed=0, verbose=0, save_phase1=True,
        recipe="finetune",
    ))
    for name in ("model.keras", "train_config.json", "split.json", "history.json", "versions.json"):
        assert (run / name).is_file(), name
    cfg = json.loads((run / "train_config.json").read_text())
    assert cfg["classes"] == ["defective", "ok"] and cfg["positive_class"] == "defective"
    assert cfg["img_size"] == 96 and cfg["balance"] == "oversample" and cfg["unreadable"] == ["ok/corrupt.jpg"]
    hist = json.loads((run / "history.json").read_text())
    assert set(hist) >= {"phase1", "phase2"} and hist["phase2"]["learning_rate"] == 1e-5
    assert "tensorflow" in json.loads((run / "versions.json").read_text())
    split = load_split(run / "split.json")
    assert leaks(split) == [] and len(split.items) == 48
    p1 = json.loads((run / "phase1" / "train_config.json").read_text())
    assert p1["fine_tune_epochs"] == 0 and (run / "phase1" / "model.keras").is_file()
    assert set(json.loads((run / "phase1" / "history.json").read_text())) == {"phase1", "wall_time_s"}

    # the inference-model contract: [0,255] float RGB in, rescaling inside, no augmentation, (1,) sigmoid out
    model = keras.models.load_model(run / "model.keras", compile=False)
    assert tuple(model.input_shape) == (None, 96, 96, 3) and tuple(model.output_shape) == (None, 1)

    def all_layers(m):
        for layer in m.layers:
            yield layer
            if hasattr(layer, "layers"):
                yield from all_layers(layer)

    kinds = {type(layer).__name__ for layer in all_layers(model)}
    assert "Rescaling" in kinds
    assert not any(k.startswith("Random") for k in kinds), kinds
    x = np.random.default_rng(0).uniform(0, 255, (4, 96, 96, 3)).astype(np.float32)
    p = model.predict(x, verbose=0)
    assert p.shape == (4, 1) and np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(p, model.predict(x, verbose=0), atol=1e-6)  # no randomness at inference

    m = evaluate(run)
    assert 0 < m["threshold"] < 1 and (run / "metrics.json").is_file() and (run / "report" / "report.html").is_file()

    # reuse the split with a second, random-init run
    run2 = train(TrainConfig(
        data_dir=small_data, out_dir=tmp_path / "run2", img_size=96, weights="none", epochs=1,
        fine_tune_epochs=0, batch_size=16, split_manifest=run / "split.json", verbose=0, recipe="finetune",
    ))
    assert load_split(run2 / "split.json").items == split.items
    with pytest.raises(FileExistsError):
        train(TrainConfig(data_dir=small_data, out_dir=run2, weights="none", epochs=1, recipe="finetune"))
