"""Issue 11, model side: the features output of converted packages, head-only packages and ``boxinspect retrain``.

Real packages from our own convert step: the committed tiny int8 fixture (fast lane; its scores mean nothing,
its features and hashes are real) and the session's trained int8/float32 packages (slow lane). The fast tests
here also run in the edge-only venv (scripts/check-edge-install.sh EXTRA_TESTS, no TensorFlow installed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.judge.backbone import backbone_digest
from edge.judge.classifier import Classifier, ModelError
from edge.judge.model_package import load_metadata, sha256_file, sidecar_path
from edge.learn.retrain import RetrainError, retrain
from tests.helpers import edit_sidecar, label_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_candidate(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, few_boxes: Path):
    """A head-only candidate of the committed tiny package, fitted on a few synthetic boxes."""
    tmp = tmp_path_factory.mktemp("retrain")
    labels = label_dir(few_boxes, tmp / "feedback")
    res = retrain(tiny_model, [labels], tmp / "candidates", min_per_class=4)
    return res


# ---------------------------------------------------------------- fast lane (the committed tiny package)


def test_tiny_package_exports_features_in_the_same_invoke(tiny_model: Path, few_boxes: Path):
    import cv2

    clf = Classifier.load(tiny_model, num_threads=1)
    meta = clf.metadata
    assert clf.has_features and meta.features is not None
    assert meta.features.dim == clf.runner.features_dim > 1
    assert clf.backbone_sha256 == backbone_digest(tiny_model, meta.features.output_name)
    img = cv2.imread(str(next(few_boxes.rglob("*.jpg"))))
    s, f = clf.score_features(img)
    assert s == clf.score(img)  # the score is unchanged by asking for the features
    assert f is not None and f.shape == (meta.features.dim,) and f.dtype == np.float32
    assert np.all(np.isfinite(f)) and np.any(f != 0)


def test_head_only_candidate_layout_hash_and_self_test(tiny_candidate, tiny_model: Path):
    res = tiny_candidate
    cand = Classifier.load(res.candidate, num_threads=1)
    parent = load_metadata(tiny_model)
    meta = cand.metadata
    # same backbone file (hardlink or copy), new sidecar with the head
    assert sha256_file(res.candidate) == sha256_file(tiny_model) == meta.sha256
    assert meta.head is not None and len(meta.head.weights) == meta.features.dim
    assert cand.backbone_sha256 == parent.features.backbone_sha256 == res.backbone_sha256
    assert cand.model_id == res.model_id != f"{parent.name}@{parent.package_sha256[:12]}"
    assert meta.head.parent_model_id == res.parent_model_id
    assert meta.threshold == pytest.approx(res.threshold) and meta.cv_metrics == res.cv
    assert cand.self_test() == []
    # the golden samples hold the HEAD's scores, not the .tflite's own output
    parent_clf = Classifier.load(tiny_model, num_threads=1)
    from edge.judge.model_package import decode_golden

    g = meta.golden[0]
    rgb = decode_golden(g.png_b64)
    assert cand.score_rgb(rgb) == pytest.approx(g.expected_score, abs=1e-6)
    s_parent, f = parent_clf.score_features_rgb(rgb)
    assert cand.score_rgb(rgb) == pytest.approx(cand.head_score(f), abs=1e-9)
    assert s_parent == pytest.approx(parent.golden[0].expected_score, abs=parent.golden_tolerance)
    # the report beside it
    rep = json.loads(res.report.read_text())
    assert rep["model_id"] == res.model_id and rep["cv"]["n"] == sum(res.counts.values())
    assert rep["peak_rss_mb"] > 0 and rep["seconds"] > 0


def test_a_changed_head_is_a_new_model_and_a_tampered_one_is_refused(tiny_candidate, tmp_path: Path):
    src = tiny_candidate.candidate
    pkg = tmp_path / src.name
    shutil.copy(src, pkg)
    shutil.copy(sidecar_path(src), sidecar_path(pkg))
    before = load_metadata(pkg)

    def bump(doc: dict) -> None:
        doc["head"]["weights"][0] += 0.5

    # tampered: edited after retrain, hash not resealed -> refused with one line
    edit_sidecar(pkg, bump, reseal=False)
    with pytest.raises(ModelError, match="tampered model package"):
        Classifier.load(pkg)
    # re-made legitimately (resealed): a different package hash, so a different model id ...
    shutil.copy(sidecar_path(src), sidecar_path(pkg))
    edit_sidecar(pkg, bump, reseal=True)
    after = Classifier.load(pkg, num_threads=1)
    assert after.metadata.package_sha256 != before.package_sha256 and after.model_id != before.model_id
    # ... and the golden samples (scored by the old head) catch a head that changes the scores
    shutil.copy(sidecar_path(src), sidecar_path(pkg))

    def flip(doc: dict) -> None:
        doc["head"]["weights"] = [-w for w in doc["head"]["weights"]]
        doc["head"]["bias"] = -doc["head"]["bias"] + 3.0

    edit_sidecar(pkg, flip, reseal=True)
    assert Classifier.load(pkg, num_threads=1).self_test() != []
    # a head whose length does not match the features output is an invalid package
    shutil.copy(sidecar_path(src), sidecar_path(pkg))
    edit_sidecar(pkg, lambda d: d["head"].update(weights=d["head"]["weights"][:-1]), reseal=True)
    with pytest.raises(ModelError, match="head"):
        Classifier.load(pkg)


def test_retrain_refuses_too_few_labels_with_one_sentence(tiny_model: Path, few_boxes: Path, tmp_path: Path):
    labels = label_dir(few_boxes, tmp_path / "feedback")
    with pytest.raises(RetrainError) as e:
        retrain(tiny_model, [labels], tmp_path / "out", min_per_class=5)
    msg = str(e.value)
    assert "\n" not in msg and "need at least 5 per class" in msg and "has 4" in msg
    assert not (tmp_path / "out").exists()
    with pytest.raises(RetrainError, match="does not exist"):
        retrain(tiny_model, [tmp_path / "nope"], tmp_path / "out")


def test_retrain_cli_and_no_tensorflow(tiny_model: Path, few_boxes: Path, tmp_path: Path):
    """The console command end to end, in a fresh interpreter that must not import TensorFlow."""
    labels = label_dir(few_boxes, tmp_path / "feedback")
    out = tmp_path / "cands"
    code = (
        "import sys, runpy\n"
        "sys.argv = ['boxinspect', 'retrain', sys.argv[1], sys.argv[2], '--out', sys.argv[3], "
        "'--min-per-class', '4', '--target-recall', '0.9', '--json', sys.argv[4]]\n"
        "from boxinspect.cli import main\n"
        "rc = main()\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'retrain imported TensorFlow'\n"
        "sys.exit(rc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-c", code, str(tiny_model), str(labels), str(out), str(tmp_path / "r.json")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "candidate:" in p.stdout and "grouped" in p.stdout and "peak memory" in p.stdout
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["cv"]["rule"].startswith("highest threshold with defect recall >= 0.9")
    assert Path(rep["candidate"]).is_file() and Classifier.load(rep["candidate"]).self_test() == []
    # too few labels: exit 2, one line on stderr, no traceback
    p = subprocess.run([sys.executable, "-m", "boxinspect.cli", "retrain", str(tiny_model), str(labels), "--out",
                        str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "need at least 20 per class" in p.stderr


# ---------------------------------------------------------------- slow lane (the trained session packages)


@pytest.fixture(scope="session")
def tensorflow_here() -> None:
    """Listed first by the slow tests: in the edge-only venv (no TensorFlow to train the session model) they
    skip instead of failing in the training fixture; the main suite has TensorFlow and runs them."""
    pytest.importorskip("tensorflow")


def _keras(run: Path):
    import keras

    model = keras.models.load_model(run / "model.keras", compile=False)
    return model, keras.Model(model.inputs, model.get_layer("p_defect").input)


def test_features_output_equals_the_keras_pooled_features(tensorflow_here: None, float_model: Path,
                                                          int8_model: Path, tiny_run: Path, synth_data: Path):
    from training.data import read_bgr

    paths = sorted((synth_data / "defective").glob("*"))[:6] + sorted((synth_data / "ok").glob("*"))[:6]
    f32, i8 = Classifier.load(float_model, num_threads=1), Classifier.load(int8_model, num_threads=1)
    x = np.stack([f32.preprocess(read_bgr(p)) for p in paths])
    model, pooled = _keras(tiny_run)
    want = np.asarray(pooled.predict(x.astype(np.float32), verbose=0))
    got32 = np.stack([f32.score_features_rgb(r)[1] for r in x])
    assert got32.shape == want.shape == (len(paths), f32.metadata.features.dim)
    np.testing.assert_allclose(got32, want, atol=2e-3, rtol=1e-3)  # float32: the same numbers
    # int8: the whole backbone is quantised (measured ~30% mean relative error per value, per-image correlation
    # 0.86-0.98 with the float features on these boxes), so compare the pattern, not the values ...
    s8, got8 = zip(*(i8.score_features_rgb(r) for r in x), strict=True)
    corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(got8, want, strict=True)]
    assert np.median(corr) > 0.9 and min(corr) > 0.8, corr
    # ... and prove the int8 features output IS the input of the int8 model's head: the Keras head's weights
    # applied to it give the int8 score output (within its quantisation step, 1/256, and the int8 Dense)
    k, b = model.get_layer("p_defect").get_weights()
    head = 1.0 / (1.0 + np.exp(-(np.stack(got8) @ k.ravel() + b[0])))
    np.testing.assert_allclose(head, np.array(s8), atol=0.02)
    # the same backbone weights in float32 and int8 compute different features: different backbone hashes
    assert f32.backbone_sha256 != i8.backbone_sha256
    assert i8.backbone_sha256 == backbone_digest(int8_model, i8.metadata.features.output_name)


def test_retrain_on_synthetic_boxes_gives_a_sane_candidate(tensorflow_here: None, int8_model: Path, synth_data: Path, tmp_path: Path):
    """Fit on one half (every other image per class), score the other half with the candidate."""
    from sklearn.metrics import roc_auc_score

    from training.data import read_bgr

    fit, held = [], []
    for cls in ("defective", "ok"):
        files = sorted((synth_data / cls).glob("*"))
        fit += files[0::2]
        held += files[1::2][:60]
    res = retrain(int8_model, [label_dir(synth_data, tmp_path / "labels", fit)], tmp_path / "cand",
                  cost_ratio=2.0)
    assert res.counts == {"defective": 125, "ok": 125}
    assert 0.9 < res.cv.auc <= 1.0 and res.cv.folds == 5 and res.cv.n == 250
    assert res.live_auc is not None and res.cv.C is not None
    cand = Classifier.load(res.candidate, num_threads=1)
    y = np.array([1 if p.parent.name == "defective" else 0 for p in held])
    s = np.array([cand.score(read_bgr(p)) for p in held])
    assert np.all((s >= 0) & (s <= 1))
    assert roc_auc_score(y, s) > 0.9
    pred = s >= cand.threshold
    assert np.mean(pred == (y == 1)) > 0.8  # at the chosen operating point, most held-out boxes are right


def test_a_package_without_features_still_loads(tensorflow_here: None, tiny_run: Path, float_model: Path,
                                                tmp_path: Path):
    """A package converted before issue 11: one output, no ``features`` in its sidecar. It loads, scores as
    before, says it has no features, and retrain refuses it with one sentence."""
    import keras

    from convert.tflite import convert_bytes
    from edge.judge.model_package import ModelMetadata, write_metadata

    model = keras.models.load_model(tiny_run / "model.keras", compile=False)
    old = tmp_path / "old.tflite"
    old.write_bytes(convert_bytes(model, "float32", None))  # the convert step without the features output
    doc = json.loads(sidecar_path(float_model).read_text())
    doc.update(features=None, cells=None, cv_metrics=None, sha256=sha256_file(old), size_bytes=old.stat().st_size)
    del doc["package_sha256"]
    write_metadata(ModelMetadata.model_validate(doc), old)
    clf = Classifier.load(old, num_threads=1)
    assert not clf.has_features and clf.backbone_sha256 is None and clf.runner.features_position is None
    assert clf.self_test() == []  # the float32 golden scores: the same network, so the same scores
    rgb = np.zeros((clf.metadata.input.height, clf.metadata.input.width, 3), np.uint8)
    s, f = clf.score_features_rgb(rgb)
    assert f is None and s == clf.score_rgb(rgb)
    (tmp_path / "labels" / "defective").mkdir(parents=True)
    with pytest.raises(RetrainError, match="no features output"):
        retrain(old, [tmp_path / "labels"], tmp_path / "out")
