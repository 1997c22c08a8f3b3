"""Cross-validation, the operating point and the default (linear) training recipe, on real images and a real
MobileNetV2 (the offline ImageNet weights): small data and 96 px so they stay quick."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest


@pytest.fixture(scope="module")
def views_data(tmp_path_factory) -> Path:
    """Synthetic boxes as two-view parts: ``<class>/p-NNN_top.jpg`` and a second, different camera view
    ``<class>/p-NNN_side.jpg`` (mirrored, darker, blurred) of the same box."""
    from boxinspect.synth import make_dataset

    src = tmp_path_factory.mktemp("src")
    make_dataset(src, n_per_class=20, size=96, seed=5, progress=False)
    out = tmp_path_factory.mktemp("views")
    for cls in ("ok", "defective"):
        (out / cls).mkdir()
        for i, f in enumerate(sorted((src / cls).glob("*.jpg"))):
            img = cv2.imread(str(f))
            cv2.imwrite(str(out / cls / f"{cls}-{i:03d}_top.jpg"), img)
            side = cv2.GaussianBlur(cv2.convertScaleAbs(img[:, ::-1], alpha=0.8, beta=10), (3, 3), 0)
            cv2.imwrite(str(out / cls / f"{cls}-{i:03d}_side.jpg"), side)
    return out


@pytest.fixture(autouse=True)
def _feature_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("BOXINSPECT_FEATURE_CACHE", str(tmp_path_factory.getbasetemp() / "features"))


def test_threshold_by_cost_ratio_trades_misses_for_false_rejects():
    from training.operating import threshold_for_cost, tradeoff_row

    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(400, int), np.ones(100, int)]
    s = np.r_[rng.normal(0.35, 0.15, 400), rng.normal(0.65, 0.15, 100)].clip(0, 1)
    rows = [threshold_for_cost(y, s, c) for c in (0.5, 1, 3, 10, 50)]
    thr = [r["threshold"] for r in rows]
    rec = [r["recall"] for r in rows]
    assert thr == sorted(thr, reverse=True) and thr[0] > thr[-1]  # a dearer miss lowers the threshold
    assert rec == sorted(rec) and rec[-1] > rec[0]
    for c, r in zip((0.5, 1, 3, 10, 50), rows, strict=True):  # the chosen threshold is the cheapest one
        costs = [c * np.sum((s < t) & (y == 1)) + np.sum((s >= t) & (y == 0)) for t in np.unique(s)]
        here = c * np.sum((s < r["threshold"]) & (y == 1)) + np.sum((s >= r["threshold"]) & (y == 0))
        assert here <= min(costs) + 1e-9
        assert r["expected_cost_per_box"] == pytest.approx(here / len(s))
    # perfectly separated scores: cost ratio 1 puts the threshold between the classes
    sep = threshold_for_cost(np.array([0, 0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.7, 0.9]), 1.0)
    assert 0.3 < sep["threshold"] <= 0.7 and sep["recall"] == 1.0 and sep["specificity"] == 1.0

    row = tradeoff_row(y, s, 0.5)
    fp, fn = int(np.sum((s >= 0.5) & (y == 0))), int(np.sum((s < 0.5) & (y == 1)))
    assert row["false_rejects"] == fp and row["missed"] == fn
    assert row["rejected_per_1000_good"] == pytest.approx(1000 * fp / 400)
    lo, hi = row["rejected_per_1000_good_ci95"]
    assert lo < row["rejected_per_1000_good"] < hi
    with pytest.raises(ValueError):
        threshold_for_cost(y, s, 0)


@pytest.mark.slow
def test_cv_writes_oof_scores_and_mean_sd_and_keeps_views_together(views_data, tmp_path, weights_path):
    from training.cv import CVConfig, part_ids, run_cv

    assert part_ids(["ok/ok-001_top.jpg", "ok/ok_00012.jpg"]) == ["ok-001", "ok/ok_00012.jpg"]
    out = tmp_path / "cv"
    s = run_cv(CVConfig(data_dir=views_data, out_dir=out, folds=3, repeats=2, img_size=96,
                        weights=str(weights_path), cost_ratio=5.0))
    n = 80
    with open(out / "oof_scores.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * n
    for r in (0, 1):
        mine = [row for row in rows if row["repeat"] == str(r)]
        assert len({row["path"] for row in mine}) == n  # every image scored once per repeat
        assert all(0.0 <= float(row["score"]) <= 1.0 for row in mine)
        folds_of_part: dict[str, set[str]] = {}
        for row in mine:
            folds_of_part.setdefault(row["part"], set()).add(row["fold"])
        assert len(folds_of_part) == n // 2 and all(len(f) == 1 for f in folds_of_part.values())

    doc = json.loads((out / "summary.json").read_text())
    assert doc == json.loads(json.dumps(s))
    auc = doc["per_view"]["roc_auc"]
    assert auc["n_folds"] == 6 and auc["sd"] is not None and 0.5 < auc["mean"] <= 1.0
    for k in ("macro_f1", "recall", "specificity"):
        assert doc["per_view"][k]["mean"] is not None
    assert doc["data"]["multiview"] and set(doc["per_part"]) == {"max", "mean", "noisy_or"}
    op = doc["operating_point"]
    assert op["cost_ratio"] == 5.0 and "of 1,000 good boxes are rejected" in op["sentence"]
    assert (out / "cv.png").stat().st_size > 10_000
    # the features were cached on disk (keyed by content hash, size, weights, flip, crop)
    assert list(Path(os.environ["BOXINSPECT_FEATURE_CACHE"]).glob("*.npz"))


@pytest.mark.slow
def test_cv_runs_selected_folds_then_resumes_the_rest_to_the_same_result(views_data, tmp_path, weights_path):
    from training.cv import CVConfig, run_cv

    base = dict(data_dir=views_data, folds=3, repeats=2, img_size=96, weights=str(weights_path), C=0.01)
    full = run_cv(CVConfig(out_dir=tmp_path / "full", **base))
    out = tmp_path / "parts"
    part = run_cv(CVConfig(out_dir=out, only_folds=[2, 5], **base))
    assert part["partial"] and [(f["repeat"], f["fold"]) for f in part["folds"]] == [(0, 1), (1, 1)]
    assert "operating_point" not in part and not (out / "oof_scores.csv").exists()
    # resume keeps the two finished folds (it does not run them again) and runs the other four
    kept = {(f["repeat"], f["fold"]): f for f in part["folds"]}
    done = run_cv(CVConfig(out_dir=out, resume=True, **base))
    assert not done.get("partial") and len(done["folds"]) == 6
    for f in done["folds"]:
        if (f["repeat"], f["fold"]) in kept:
            assert f == kept[(f["repeat"], f["fold"])]
    # same folds, same scores as one uninterrupted run
    assert [f["roc_auc"] for f in done["folds"]] == pytest.approx([f["roc_auc"] for f in full["folds"]])
    assert done["pooled_oof_auc"] == pytest.approx(full["pooled_oof_auc"])
    assert len((out / "folds.jsonl").read_text().splitlines()) == 6
    # a resume against other folds is refused, not mixed in
    with pytest.raises(ValueError, match="other test images"):
        run_cv(CVConfig(out_dir=out, resume=True, **{**base, "folds": 4}))


@pytest.fixture(scope="module")
def linear_run(views_data, tmp_path_factory, weights_path) -> Path:
    """One linear run with both in-model feature averages: flip TTA and two scales (input 96 px, 64 px resized
    inside the model), so the tests below share one training (CI time)."""
    from training.train import TrainConfig, train

    return train(TrainConfig(data_dir=views_data, out_dir=tmp_path_factory.mktemp("linear") / "run", img_size=96,
                             weights=str(weights_path), flip_tta=True, scales=[64, 96]))


@pytest.mark.slow
def test_default_recipe_is_linear_and_evaluate_and_convert_accept_it(views_data, tmp_path, linear_run):
    import keras

    from convert.tflite import convert_run
    from training.evaluate import evaluate

    run = linear_run
    cfg = json.loads((run / "train_config.json").read_text())
    assert cfg["recipe"] == "linear" and cfg["C_chosen"] > 0 and cfg["operating_point"]["chosen_on"].startswith("out")
    assert (run / "oof_scores.csv").is_file()
    model = keras.models.load_model(run / "model.keras", compile=False)
    x = cv2.cvtColor(cv2.imread(str(next((views_data / "defective").glob("*.jpg")))), cv2.COLOR_BGR2RGB)
    x = x[None].astype(np.float32)
    # flip-TTA inside the model: the image and its mirror get the same score
    np.testing.assert_allclose(model.predict(x, verbose=0), model.predict(x[:, :, ::-1], verbose=0), atol=1e-5)

    m = evaluate(run)
    assert m["threshold_selection"]["split"] == "oof" and m["oof_roc_auc"] is not None
    assert "test" in m["operating_point"] and "oof" in m["operating_point"]
    assert "of 1,000 good boxes" in (run / "report" / "report.html").read_text()
    # issue 25: train and evaluate say how the localiser did (the default crop is auto)
    crops = json.loads((run / "crops.json").read_text())
    assert cfg["crops"]["n"] == len(crops["images"]) > 0 and (run / "crops.png").is_file()
    assert m["crops"]["n"] == m["n"] and "Crops (test split)" in (run / "report" / "report.html").read_text()
    pkg = convert_run(run, "float32", out=tmp_path / "m.tflite")
    side = json.loads(Path(str(pkg) + ".json").read_text())
    assert side["threshold"] == pytest.approx(m["threshold"]) and side["metrics"]["gate_passed"]


@pytest.mark.slow
def test_two_scale_linear_model_trains_converts_and_runs_on_the_edge(views_data, tmp_path, weights_path, linear_run):
    """``scales=[64, 96]`` end to end: one Keras model (input 96 px, resized to 64 inside, one shared backbone)
    whose pooled features are the ones training fitted on; its int8 package scores, exports those features
    and retrains on the edge, in an interpreter without TensorFlow."""
    import subprocess
    import sys

    import keras

    from convert.tflite import convert_run
    from edge.judge.classifier import Classifier
    from training.data import read_bgr
    from training.features import FeatureSpec

    run = linear_run
    assert json.loads((run / "train_config.json").read_text())["scales"] == [64, 96]
    model = keras.models.load_model(run / "model.keras", compile=False)
    assert model.input_shape == (None, 96, 96, 3)
    names = [la.name for la in model.layers]
    assert [n for n in names if n.startswith("mobilenetv2")] == ["mobilenetv2"]  # one backbone, shared weights
    assert {"resize_64", "gap_64", "gap", "scales"} <= set(names)  # the 64 px pass is averaged in
    pooled = keras.Model(model.inputs, model.get_layer("p_defect").input)
    # train itself checks that model.keras reproduces the head fitted on the cached features (training.features
    # builds them with model.keras' own graph); the cache keeps two-scale features apart
    assert FeatureSpec(96, 0.35, str(weights_path), scales=(64, 96)).key() != FeatureSpec(96, 0.35, str(weights_path)).key()
    paths = sorted((views_data / "defective").glob("*.jpg"))[:4] + sorted((views_data / "ok").glob("*.jpg"))[:4]

    pkg = convert_run(run, "int8", out=tmp_path / "pkg" / "model.tflite", representative_count=16, gate=False)
    i8 = Classifier.load(pkg, num_threads=1)
    assert i8.has_features and (i8.metadata.input.height, i8.metadata.input.width) == (96, 96)
    x = np.stack([i8.preprocess(read_bgr(p)) for p in paths]).astype(np.float32)  # the edge's input (crop, resize)
    want = np.asarray(pooled.predict(x, verbose=0))
    s8, f8 = zip(*(i8.score_features_rgb(r.astype(np.uint8)) for r in x), strict=True)
    corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(f8, want, strict=True)]
    assert np.median(corr) > 0.9 and min(corr) > 0.8, corr  # int8 tolerance, as for the one-scale package
    k, b = model.get_layer("p_defect").get_weights()
    np.testing.assert_allclose(1.0 / (1.0 + np.exp(-(np.stack(f8) @ k.ravel() + b[0]))), s8, atol=0.02)

    # the edge: load, score, features and an on-device retrain, with no TensorFlow in the interpreter
    code = (
        "import sys, json\n"
        "from pathlib import Path\n"
        "import cv2\n"
        "from edge.judge.classifier import Classifier\n"
        "from edge.learn.retrain import retrain\n"
        "clf = Classifier.load(sys.argv[1], num_threads=1)\n"
        "img = cv2.imread(sys.argv[3])\n"
        "s, f = clf.score_features(img)\n"
        "assert s == clf.score(img) and f.shape == (1280,) and clf.self_test() == []\n"
        "res = retrain(Path(sys.argv[1]), [Path(sys.argv[2])], Path(sys.argv[4]), min_per_class=20, C=0.01)\n"
        "cand = Classifier.load(res.candidate, num_threads=1)\n"
        "assert cand.backbone_sha256 == clf.backbone_sha256 and cand.self_test() == []\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'the edge imported TensorFlow'\n"
        "print(json.dumps({'score': s, 'candidate_score': cand.score(img)}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    p = subprocess.run([sys.executable, "-c", code, str(pkg), str(views_data), str(paths[0]), str(tmp_path / "cand")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert 0.0 <= out["score"] <= 1.0 and 0.0 <= out["candidate_score"] <= 1.0
