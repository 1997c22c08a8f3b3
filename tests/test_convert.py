"""convert/: the model package written from a real (tiny) training run, the accuracy gate and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.judge.classifier import Classifier
from edge.judge.model_package import load_metadata, sha256_file, sidecar_path


def _parcel_photos(parcel_dir: Path, per_class: int = 10) -> list[Path]:
    out = []
    for cls in ("damaged", "intact"):
        files = sorted((parcel_dir / cls).glob("*.jpg"))
        out += files[:: max(1, len(files) // per_class)][:per_class]
    return out


def test_sidecar_describes_the_package(int8_model: Path, tiny_run: Path):
    meta = load_metadata(int8_model)
    cfg = json.loads((tiny_run / "train_config.json").read_text())
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    split = json.loads((tiny_run / "split.json").read_text())

    assert meta.format == "int8"
    assert meta.labels == cfg["classes"] and meta.positive_class == cfg["positive_class"]
    # int8 ships the run's threshold mapped onto its own scores (ThresholdRule.MAP), and says so
    assert meta.metrics is not None and meta.metrics.keras_threshold == pytest.approx(metrics["threshold"])
    assert meta.threshold_source.startswith("metrics.json, mapped onto this int8 model's scores")
    assert f"{metrics['threshold']:.4f} -> {meta.threshold:.4f}" in meta.threshold_source
    assert meta.sha256 == sha256_file(int8_model) and meta.size_bytes == int8_model.stat().st_size
    assert (meta.input.height, meta.input.width) == (cfg["img_size"], cfg["img_size"])
    assert meta.input.dtype == "uint8" and meta.output.dtype == "uint8" and meta.input.colour_order == "RGB"
    assert meta.input.quantization is not None and meta.output.quantization is not None
    assert "INTER_AREA" in meta.preprocessing

    n_test = sum(1 for it in split["items"] if it["split"] == "test")
    assert meta.metrics is not None and meta.metrics.split == "test"
    assert meta.metrics.keras.n == meta.metrics.tflite.n == n_test
    assert meta.metrics.agreement >= 0.9
    # the Keras numbers in the package are the evaluate step's numbers: same images, same preprocessing
    assert meta.metrics.keras.accuracy == pytest.approx(metrics["accuracy"], abs=1e-6)
    assert meta.metrics.keras.auc == pytest.approx(metrics["roc_auc"], abs=1e-6)

    counts: dict = {}
    for it in split["items"]:
        counts.setdefault(it["split"], {}).setdefault(it["label"], 0)
        counts[it["split"]][it["label"]] += 1
    assert meta.training_data.counts == counts
    assert 0 < meta.training_data.representative_count <= sum(counts["train"].values())

    assert len(meta.golden) == 6 and {g.label for g in meta.golden} == set(meta.labels)


def test_float32_package_is_unquantised(float_model: Path):
    meta = load_metadata(float_model)
    assert meta.input.dtype == "float32" and meta.input.quantization is None
    assert meta.metrics is not None and meta.metrics.agreement == 1.0
    assert meta.metrics.max_abs_score_diff < 1e-4


def test_converted_outputs_match_keras_on_real_photos(tiny_run, int8_model, float_model, parcel_dir):
    """Real parcel photos (any size, JPEG) through the edge path vs the Keras model on the same pixels."""
    import keras

    model = keras.models.load_model(tiny_run / "model.keras", compile=False)
    f32, q8 = Classifier.load(float_model), Classifier.load(int8_model)
    photos = _parcel_photos(parcel_dir)
    imgs = [cv2.imread(str(p)) for p in photos]
    assert all(i is not None for i in imgs) and len(imgs) == 20
    x = np.stack([f32.preprocess(i) for i in imgs]).astype(np.float32)
    k = model.predict(x, verbose=0).reshape(-1)
    s_f32 = np.array([f32.score(i) for i in imgs])
    s_q8 = np.array([q8.score(i) for i in imgs])
    np.testing.assert_allclose(s_f32, k, atol=1e-4)
    # int8 on photos unlike its calibration set (the fixture model is trained on synthetic boxes): a
    # single mid-range score can move by ~0.25, so check the typical and the average error. A swapped
    # colour order, a wrong input quantisation or a broken conversion moves these by far more.
    err = np.abs(s_q8 - k)
    assert np.median(err) < 0.02 and err.mean() < 0.06, np.round(np.c_[k, s_q8], 3)


def test_gate_rejects_a_model_that_loses_accuracy(tiny_run: Path, tmp_path: Path, repo_root: Path):
    """A margin no model can meet: convert exits 1, names the drop, and leaves no deployable package."""
    out = tmp_path / "m.tflite"
    r = subprocess.run(
        [sys.executable, "-m", "boxinspect.cli", "convert", str(tiny_run), "--format", "int8", "--out", str(out),
         "--representative", "20", "--max-f1-drop", "-1", "--max-auc-drop", "-1"],
        cwd=repo_root, capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "REJECTED: accuracy gate failed for int8: macro F1 drop" in r.stdout
    assert not out.exists() and not sidecar_path(out).exists()
    rejected = tmp_path / "m.rejected.tflite"
    assert rejected.exists()
    meta = load_metadata(rejected)
    assert meta.metrics is not None and meta.metrics.gate_passed is False
    assert meta.training_data.representative_count == 20


def test_convert_explains_a_bad_run_dir(tmp_path: Path, repo_root: Path):
    from convert.tflite import ConvertError, convert_run

    with pytest.raises(ConvertError, match="train_config.json not found"):
        convert_run(tmp_path)
    r = subprocess.run([sys.executable, "-m", "boxinspect.cli", "convert", str(tmp_path)],
                       cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "train_config.json not found" in r.stdout


def test_missing_threshold_falls_back_to_half(tiny_run: Path, tmp_path: Path, caplog):
    from convert.tflite import read_run

    run = tmp_path / "run"
    run.mkdir()
    for name in ("train_config.json", "split.json"):
        (run / name).write_text((tiny_run / name).read_text())
    with caplog.at_level("WARNING"):
        info = read_run(run)
    assert info.threshold == 0.5 and "default" in info.threshold_source
    assert "no threshold" in caplog.text
    # split paths are relative to the data dir recorded in train_config.json
    assert all(it.path.is_file() for it in info.items[:5])


def test_cli_registration_does_not_import_tensorflow(repo_root: Path):
    code = (
        "import sys\n"
        "from boxinspect.cli import build_parser\n"
        "p = build_parser()\n"
        "a = p.parse_args(['convert', 'runs/x', '--format', 'fp16', '--no-gate'])\n"
        "assert a.format == 'fp16' and a.no_gate and a.representative == 200\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported at registration'\n"
        "print('OK')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr


def test_recalibrated_threshold_reproduces_evaluate_on_identical_scores(tiny_run: Path, tmp_path: Path):
    """float32 scores equal Keras, so evaluate's rule re-applied to them must give evaluate's threshold."""
    from convert.common import ThresholdRule
    from convert.tflite import convert_run

    metrics = json.loads((tiny_run / "metrics.json").read_text())
    out = convert_run(tiny_run, "float32", out=tmp_path / "f.tflite", threshold_rule=ThresholdRule.RECALIBRATE)
    meta = load_metadata(out)
    assert meta.threshold_source.startswith("recalibrated for this float32 model")
    assert meta.metrics is not None and meta.metrics.keras_threshold == pytest.approx(metrics["threshold"])
    assert meta.threshold == pytest.approx(metrics["threshold"], abs=1e-4)
    assert meta.metrics.tflite.recall == pytest.approx(meta.metrics.keras.recall)


# ---------------------------------------------------------------- the gate's rounding rule (issue 22)


@pytest.mark.parametrize(("drop", "limit", "passes"), [
    (0.0299, 0.03, True),
    (0.03, 0.03, True),  # exactly at the limit: passes
    (0.98 - 0.9499549594635172, 0.03, True),  # three changed decisions of 100 (0.030045...), printed "+0.0300"
    (0.0301, 0.03, False),  # one step of the printed precision over: fails
    (0.03006, 0.03, False),
    (0.97 - 0.96, 0.01, True),  # 0.010000000000000009 in floating point: equal at 4 decimals
    (0.0101, 0.01, False),
    (-0.02, 0.0, True),  # the converted model is better
    (0.0, -1.0, False),  # a limit no model can meet (test_gate_rejects_a_model_that_loses_accuracy)
])
def test_gate_rule_at_and_around_the_limit(drop: float, limit: float, passes: bool) -> None:
    from convert.tflite import GATE_DECIMALS, gate_allows

    assert GATE_DECIMALS == 4
    assert gate_allows(drop, limit) is passes
    # what the verdict prints is what was judged: a drop that prints as the limit passes
    assert (f"{drop:.4f}" == f"{limit:.4f}") <= passes


def test_gate_passes_a_drop_equal_to_its_limit(tiny_run: Path, int8_model: Path, tmp_path: Path) -> None:
    """The real gate on the real int8 conversion of the session model, with the limit set to its own measured macro F1
    drop (at 4 decimals): it passes, where one step (0.0001) lower is refused (the rule, as the gate applies it).
    Conversion is repeatable (seeded calibration sample), so the run converts to the fixture's drop again; the
    refusing side on a real conversion is test_gate_rejects_a_model_that_loses_accuracy."""
    from convert.tflite import convert_run, gate_allows

    meta = load_metadata(int8_model)
    assert meta.metrics is not None
    measured = meta.metrics.keras.macro_f1 - meta.metrics.tflite.macro_f1
    limit = round(measured, 4)
    ok = convert_run(tiny_run, "int8", out=tmp_path / "at.tflite", max_f1_drop=limit, max_auc_drop=1.0)
    again = load_metadata(ok).metrics
    assert again is not None and again.gate_passed and again.tflite.macro_f1 == meta.metrics.tflite.macro_f1
    assert not gate_allows(measured, limit - 0.0001)


def test_line_threshold_follows_a_shift_of_every_score() -> None:
    """int8 can move every score of a head the same way (a linear head on line scenes: docs/RESULTS.md). The
    threshold mapped onto the moved scores, without labels, keeps Keras' decisions where the copied one does not;
    too few images, or scores that do not rise with Keras', map nothing."""
    from convert.common import line_threshold

    keras = np.random.default_rng(0).uniform(0.01, 0.99, 400)

    def moved(p: np.ndarray | float) -> np.ndarray:  # every logit 0.7 lower, on uint8's output steps
        return np.round(256 / (1 + np.exp(0.7 - np.log(np.divide(p, 1 - np.asarray(p)))))) / 256

    converted = moved(keras)
    t = 0.46
    mapped = line_threshold(keras, converted, t)
    assert mapped is not None and mapped == pytest.approx(float(moved(t)), abs=2 / 256)
    copied_agreement = np.mean((keras >= t) == (converted >= t))
    assert np.mean((keras >= t) == (converted >= mapped)) >= 0.99 > 0.9 > copied_agreement
    assert line_threshold(keras[:19], converted[:19], t) is None  # too few images to fit a line
    assert line_threshold(keras, 1 - converted, t) is None  # scores that fall as Keras' rise: no mapping


class _Scores:
    """Stands in for the Keras model and the LiteRT runner in mapped_threshold: the rule is what is tested. The
    "images" are row numbers into fixed scores."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores

    def predict(self, x: np.ndarray, **_: object) -> np.ndarray:
        return self.scores[x[:, 0].astype(int)]

    def run(self, x: np.ndarray) -> float:
        return float(self.scores[int(x[0])])


def test_mapped_threshold_is_used_only_where_it_reproduces_more_decisions() -> None:
    from types import SimpleNamespace

    from convert.common import mapped_threshold

    keras = np.random.default_rng(1).uniform(0.01, 0.99, 300)
    shifted = 1 / (1 + np.exp(0.7 - np.log(keras / (1 - keras))))
    run = SimpleNamespace(threshold=0.46, threshold_source="operating_point.json")
    rows = np.arange(len(keras), dtype=np.float32)[:, None]
    t, source = mapped_threshold(run, _Scores(keras), _Scores(shifted), rows, "int8")  # type: ignore[arg-type]
    assert t < 0.4 and source.startswith("operating_point.json, mapped onto this int8 model's scores (0.4600 -> ")
    # scores the conversion did not move: mapping changes no decision, so the run's threshold ships as it is
    t, source = mapped_threshold(run, _Scores(keras), _Scores(keras.copy()), rows, "int8")  # type: ignore[arg-type]
    assert t == 0.46 and source.startswith("operating_point.json, kept for this int8 model")  # the sidecar says so


def test_int8_keeps_the_threshold_when_asked(tiny_run: Path, int8_model: Path, tmp_path: Path) -> None:
    """--keep-threshold ships the run's threshold as it is; the default int8 package's is mapped (and differs)."""
    from convert.common import ThresholdRule
    from convert.tflite import convert_run

    kept = load_metadata(convert_run(tiny_run, "int8", out=tmp_path / "k.tflite", gate=False,
                                     threshold_rule=ThresholdRule.KEEP))
    mapped = load_metadata(int8_model)
    assert kept.threshold == pytest.approx(json.loads((tiny_run / "metrics.json").read_text())["threshold"])
    assert kept.threshold_source == "metrics.json" and kept.sha256 == mapped.sha256  # the same model bytes
    assert abs(mapped.threshold - kept.threshold) > 0.01
    assert kept.metrics is not None and mapped.metrics is not None
    assert mapped.metrics.agreement >= kept.metrics.agreement


def test_int8_fixture_keeps_its_margin(int8_model: Path) -> None:
    """The session's int8 package is converted with the gate recorded, not enforced (tests/tiny_build.py); its
    drop must stay clear of the bound it records, so no test that uses it passes or fails by a hair."""
    from tests.tiny_build import TINY_INT8_MAX_F1_DROP, int8_summary

    s = int8_summary(int8_model)
    assert s["max_f1_drop"] == TINY_INT8_MAX_F1_DROP and load_metadata(int8_model).metrics.max_f1_drop == 0.10
    assert s["margin"] >= 0.03, s  # at least three more changed decisions of 100 before the bound
    assert s["gate_passed"] and s["agreement"] >= 0.9


@pytest.mark.slow
def test_run_without_evaluate_ships_the_oof_threshold(tiny_run: Path, tmp_path: Path, caplog):
    """Issue 25: convert without a prior evaluate takes the operating point train chose on out-of-fold scores
    (operating_point.json, written by the linear recipe), and the sidecar says where it came from."""
    import shutil

    from convert.tflite import convert_run

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("*.tflite", "*.tflite.json", "report",
                                                                  "metrics.json"))
    op = {"rule": "cost_ratio", "threshold": 0.3125, "sentence": "threshold 0.3125 (out-of-fold)",
          "chosen_on": "out-of-fold scores of train+val (grouped CV)"}
    (run / "operating_point.json").write_text(json.dumps(op))
    out = run / "model_float32.tflite"
    with caplog.at_level("INFO"):
        convert_run(run, "float32", out=out, gate=False)
    meta = load_metadata(out)
    assert meta.threshold == pytest.approx(0.3125)
    assert "out-of-fold" in meta.threshold_source and "operating_point.json" in meta.threshold_source
    assert "threshold 0.3125 from operating_point.json" in caplog.text
    assert "using 0.5" not in caplog.text
