"""edge/judge/classifier.py on real .tflite packages made by our own convert code (tests/conftest.py fixtures)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.judge.classifier import Classifier, ModelError
from edge.judge.model_package import decode_golden, load_metadata, package_digest, sidecar_path
from tests.helpers import edit_sidecar, package_copies, sample_images


def _assert_one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


def test_load_reports_runtime_delegate_and_threshold(int8_model: Path, tiny_run: Path):
    clf = Classifier.load(int8_model, num_threads=1)
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert clf.threshold == pytest.approx(clf.metadata.threshold)  # int8: the run's, mapped onto its scores
    assert clf.metadata.metrics is not None and clf.metadata.metrics.keras_threshold == pytest.approx(metrics["threshold"])
    assert clf.runtime_name == "litert"
    assert clf.delegate == "XNNPACK"
    assert clf.model_id == f"{clf.metadata.name}@{clf.metadata.package_sha256[:12]}"
    assert clf.metadata.input.dtype == "uint8"


def test_corrupt_tflite_is_a_clear_model_error(tiny_model: Path, tmp_path: Path):
    (model,) = package_copies(tiny_model, tmp_path)
    data = bytearray(model.read_bytes())
    model.write_bytes(bytes(data[: len(data) // 3]))  # truncated, e.g. an interrupted copy
    with pytest.raises(ModelError) as e:
        Classifier.load(model, verify_hash=False)
    msg = _assert_one_line(e)
    assert "corrupt or unsupported .tflite" in msg and str(model) in msg

    model.write_bytes(b"this is not a flatbuffer at all" * 10)
    with pytest.raises(ModelError, match="corrupt or unsupported"):
        Classifier.load(model, verify_hash=False)


def test_hash_mismatch_is_refused(tiny_model: Path, tmp_path: Path):
    (model,) = package_copies(tiny_model, tmp_path)
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights: still loads, silently wrong
    model.write_bytes(bytes(data))
    with pytest.raises(ModelError) as e:
        Classifier.load(model)
    msg = _assert_one_line(e)
    assert "sha256 mismatch" in msg and str(model) in msg
    # verify_hash=False is the explicit escape hatch: the same file then loads
    Classifier.load(model, verify_hash=False)


def test_missing_or_invalid_sidecar(tiny_model: Path, tmp_path: Path):
    (model,) = package_copies(tiny_model, tmp_path)
    side = sidecar_path(model)
    doc = json.loads(side.read_text())
    side.unlink()
    with pytest.raises(ModelError) as e:
        Classifier.load(model)
    assert "missing metadata sidecar" in _assert_one_line(e)

    doc["threshold"] = 7
    doc["package_sha256"] = package_digest(doc)
    side.write_text(json.dumps(doc))
    with pytest.raises(ModelError) as e:
        Classifier.load(model)
    msg = _assert_one_line(e)
    assert "invalid metadata sidecar" in msg and "threshold" in msg

    side.write_text("{not json")
    with pytest.raises(ModelError, match="unreadable metadata sidecar"):
        Classifier.load(model)

    with pytest.raises(ModelError, match="model file not found"):
        Classifier.load(tmp_path / "nope.tflite")


def test_unavailable_runtime_is_named(tiny_model: Path):
    pytest.importorskip("ai_edge_litert")
    try:
        import tflite_runtime  # noqa: F401

        pytest.skip("tflite_runtime is installed here")
    except ImportError:
        pass
    with pytest.raises(ModelError) as e:
        Classifier.load(tiny_model, runtime="tflite_runtime")
    msg = _assert_one_line(e)
    assert "no TFLite runtime available" in msg and "tflite_runtime" in msg
    with pytest.raises(ModelError, match="unknown runtime"):
        Classifier.load(tiny_model, runtime="onnx")


def test_self_test_passes_and_catches_tampered_expectations(tiny_model: Path, tmp_path: Path):
    clf = Classifier.load(tiny_model)
    meta = clf.metadata
    assert len(meta.golden) >= 4
    assert {g.label for g in meta.golden} == set(meta.labels)
    assert clf.self_test() == []

    (model,) = package_copies(tiny_model, tmp_path)

    def flip(doc: dict) -> None:
        g = doc["golden"][1]
        g["expected_score"] = 1.0 - g["expected_score"] if abs(g["expected_score"] - 0.5) > 0.1 else 0.0

    edit_sidecar(model, flip)
    failures = Classifier.load(model).self_test()
    assert len(failures) == 1
    assert failures[0].startswith("golden[1] ") and "expected" in failures[0]


def test_golden_samples_are_at_input_size(float_model: Path):
    meta = load_metadata(float_model)
    for g in meta.golden:
        assert decode_golden(g.png_b64).shape == (meta.input.height, meta.input.width, 3)
    assert Classifier.load(float_model).self_test() == []


def test_score_accepts_any_size_grey_and_bgra(tiny_model: Path, few_boxes: Path):
    clf = Classifier.load(tiny_model)
    img = cv2.imread(str(sample_images(few_boxes, 1)[0]))
    base = clf.score(img)
    assert 0.0 <= base <= 1.0
    big = cv2.resize(img, (640, 480), interpolation=cv2.INTER_LINEAR)
    assert 0.0 <= clf.score(big) <= 1.0
    assert 0.0 <= clf.score(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)) <= 1.0
    assert clf.score(cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)) == pytest.approx(base)
    with pytest.raises(ValueError, match="uint8"):
        clf.score(img.astype(np.float32))


def test_predict_label_follows_threshold(tiny_model: Path, few_boxes: Path):
    clf = Classifier.load(tiny_model)
    img = cv2.imread(str(sample_images(few_boxes, 1)[0]))
    p = clf.predict(img)
    assert p.is_defect == (p.score >= clf.threshold)
    assert p.label == (clf.metadata.positive_class if p.is_defect else clf.metadata.negative_class)
    assert p.latency_ms > 0
    assert clf.predict(img, threshold=0.0).is_defect is True
    assert clf.predict(img, threshold=1.01).label == clf.metadata.negative_class


def test_int8_agrees_with_float(int8_model: Path, float_model: Path, synth_data: Path):
    q, f = Classifier.load(int8_model), Classifier.load(float_model)
    files = sample_images(synth_data, 120)
    assert len(files) >= 100
    same = 0
    for path in files:
        img = cv2.imread(str(path))
        same += q.predict(img).is_defect == f.predict(img, threshold=q.threshold).is_defect
    # Measured 117/120 (issue 22's repeatable build; 0.97 on the 100 test images, the sidecar's agreement): int8
    # scores move by up to ~0.4 near the threshold, so a few boxes there flip. The bound keeps a margin of nine
    # images to that, and still fails a broken conversion (colour order or input quantisation: ~50%).
    assert same / len(files) >= 0.90, f"int8 agrees with float32 on only {same}/{len(files)} images"


def test_one_classifier_is_safe_across_threads(tiny_model: Path, few_boxes: Path):
    clf = Classifier.load(tiny_model, num_threads=2)
    imgs = [cv2.imread(str(p)) for p in sample_images(few_boxes, 8)]
    expected = [clf.score(i) for i in imgs]
    results: dict[int, list[float]] = {}

    def work(k: int) -> None:
        results[k] = [clf.score(imgs[(k + j) % len(imgs)]) for j in range(40)]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, vals in results.items():
        assert vals == [expected[(k + j) % len(imgs)] for j in range(40)]


def test_edge_runs_without_tensorflow(tiny_model: Path, repo_root: Path):
    """The edge install has no TensorFlow: block it and run load + score + self-test in a fresh process."""
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras", "sklearn"):
            raise ImportError("blocked for this test: " + name)
sys.meta_path.insert(0, Block())
import numpy as np
from edge.judge.classifier import Classifier
clf = Classifier.load({str(tiny_model)!r})
assert clf.self_test() == [], clf.self_test()
s = clf.score(np.zeros((300, 400, 3), np.uint8))
assert 0.0 <= s <= 1.0
assert not any(m.split(".")[0] in ("tensorflow", "keras") for m in sys.modules)
print("OK", clf.runtime_name)
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "OK litert" in r.stdout


@pytest.mark.slow  # imports TensorFlow (~20 s): the fast lane stays on the edge runtime
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_tensorflow_fallback_runtime_gives_the_same_scores(tiny_model: Path, few_boxes: Path):
    pytest.importorskip("tensorflow")
    lite, tf = Classifier.load(tiny_model), Classifier.load(tiny_model, runtime="tensorflow")
    assert tf.runtime_name == "tensorflow" and tf.self_test() == []
    for path in sample_images(few_boxes, 4):
        img = cv2.imread(str(path))
        assert tf.score(img) == pytest.approx(lite.score(img), abs=1 / 128)
