"""The crop's shape around a found box (issue 25): ``square`` (bounding box, margin 0.08, padded square) or
``aligned`` (the box's minimum-area rectangle turned upright, cut tight at margin 0.02: the default of ``train``,
``cv`` and ``localize`` since 2026-12-07), for the linear recipe (``--crop-shape``) as for the anomaly recipe. The built-in finder gives the rotated rectangle of its box, so the
aligned crop turns by it; the shape is part of the feature cache key, recorded in the run and the package, and the
run's folded model is checked on pixels cropped the way convert, predict and the daemon crop them.

Measured on dev scenes: docs/RESULTS.md "An upright crop for the linear head"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.judge.boxfinder import decode
from edge.judge.crops import as_located
from edge.judge.localize import CropSpec, Located, crop, shape_of, shaped

CLI = [sys.executable, "-m", "boxinspect.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_a_spec_cut_in_each_shape() -> None:
    from training.anomaly import aligned_crop

    auto = CropSpec(method="auto")
    assert shaped(auto, "square") == auto and shape_of(auto) == "square"
    al = shaped(auto, "aligned")
    assert (al.rotated, al.square, al.margin, shape_of(al)) == (True, False, 0.02, "aligned")
    assert shaped(CropSpec(method="auto", margin=0.1), "aligned").margin == 0.1  # a margin asked for is kept
    assert shaped(CropSpec(method="none"), "aligned").method == "none" and aligned_crop(auto) == al


def test_the_square_crop_keeps_its_feature_cache_key(tmp_path: Path) -> None:
    from training.features import FeatureSpec

    w = tmp_path / "w.h5"
    w.write_bytes(b"x")
    base = FeatureSpec(224, 0.35, str(w), crop="auto")
    assert FeatureSpec(224, 0.35, str(w), crop="auto", shape="square").key() == base.key()
    assert FeatureSpec(224, 0.35, str(w), crop="auto", shape="aligned").key() != base.key()
    assert FeatureSpec(224, 0.35, str(w), shape="aligned").key() == FeatureSpec(224, 0.35, str(w)).key()  # no crop


def _turned_box(frame: tuple[int, int], rect: tuple[tuple[float, float], tuple[float, float], float]) -> np.ndarray:
    img = np.zeros(frame, np.uint8)
    cv2.fillPoly(img, [cv2.boxPoints(rect).astype(np.int32)], 1)
    return img


def test_the_finders_box_carries_its_turned_rectangle() -> None:
    rect = ((300.0, 200.0), (180.0, 90.0), 25.0)
    mask = _turned_box((480, 640), rect).astype(np.float32)
    prob = cv2.resize(mask, (40, 30), interpolation=cv2.INTER_AREA)  # the finder's coarse grid (stride 16)
    got = decode(prob, (480, 640))
    assert got.rotated is not None and got.box is not None
    (cx, cy), (w, h), ang = got.rotated
    if w < h:
        w, h, ang = h, w, ang - 90.0
    assert abs(cx - 300) < 6 and abs(cy - 200) < 6
    assert abs(w - 180) < 0.1 * 180 and abs(h - 90) < 0.15 * 90, (w, h)
    assert abs((ang - 25.0 + 45) % 90 - 45) < 4, ang  # the same turn (a rectangle's angle is modulo 90 degrees)
    loc = as_located(got, (480, 640), CropSpec(method="auto"))
    assert loc is not None and loc.method == "learned" and loc.rotated == got.rotated


def test_the_aligned_crop_turns_the_box_upright() -> None:
    rect = ((320.0, 240.0), (200.0, 80.0), -30.0)
    frame = np.full((480, 640, 3), 40, np.uint8)
    frame[_turned_box((480, 640), rect) > 0] = (200, 200, 200)
    loc = Located(True, "learned", (200, 150, 440, 330), rect, 0.1)
    up = crop(frame, loc, shaped(CropSpec(method="auto"), "aligned"))
    h, w = up.shape[:2]
    assert abs(w / h - 200 / 80) < 0.2, (w, h)  # tight: the box's own aspect, long side horizontal
    assert up[h // 4:3 * h // 4, w // 8:7 * w // 8].mean() > 190  # all box inside, no belt
    sq = crop(frame, loc, CropSpec(method="auto"))
    assert sq.shape[0] == sq.shape[1] and sq.mean() < up.mean()  # the square crop keeps belt in its corners


def test_crop_shape_is_for_the_linear_recipe(tmp_path: Path) -> None:
    r = subprocess.run([*CLI, "cv", str(tmp_path), "--out", str(tmp_path / "o"), "--recipe", "anomaly", "--crop",
                        "auto", "--crop-shape", "aligned"], capture_output=True, text=True, timeout=120, env=ENV)
    assert r.returncode == 2 and "--crop-shape" in r.stderr
    from training.cli import cv_crop_shape

    assert cv_crop_shape(None, "linear") == "aligned"  # the default where it applies
    assert cv_crop_shape(None, "anomaly") == cv_crop_shape(None, "finetune") == "square"  # not asked: no refusal


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from boxinspect.boxfinder import render

    return render(tmp_path_factory.mktemp("shape"), [1109], 6, kinds=("line",))[0]  # 24 photos, 2 views a part


def test_localize_shows_the_crop_train_cuts(scenes: Path, tmp_path: Path) -> None:
    shapes = {}
    for extra in ([], ["--crop-shape", "square"]):
        out = tmp_path / f"crops{len(extra)}.json"
        r = subprocess.run([*CLI, "localize", str(scenes), "--json", str(out), "--sheet", str(tmp_path / "s.png"),
                            *extra], capture_output=True, text=True, timeout=300, env=ENV)
        assert r.returncode == 0, r.stderr[-2000:]
        shapes[len(extra)] = shape_of(CropSpec(**json.loads(out.read_text())["crop"]))
    assert shapes == {0: "aligned", 2: "square"}  # the default is train's default


@pytest.mark.slow
def test_train_and_cv_crop_upright_by_default(scenes: Path, tmp_path: Path, weights_path: Path) -> None:
    env = {**ENV, "BOXINSPECT_FEATURE_CACHE": str(tmp_path / "features")}
    small = ["--img-size", "96", "--weights", str(weights_path), "--C", "1"]  # the default crop shape
    r = subprocess.run([*CLI, "cv", str(scenes), "--out", str(tmp_path / "cv"), "--crop", "auto", "--folds", "2",
                        "--repeats", "1", *small], capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((tmp_path / "cv" / "summary.json").read_text())
    assert s["config"]["crop_shape"] == "aligned" and s["crops"]["methods"] == {"learned": 24}
    assert "crop auto (aligned)" in r.stderr  # the features were cut upright
    # train: the folded model is checked inside train against the fitted head on pixels cropped by the recorded
    # spec (edge.judge.model_package.model_input, as convert, predict and the daemon crop); a crop that differed
    # from the features' would fail the run
    r = subprocess.run([*CLI, "train", str(scenes), "--out", str(tmp_path / "run"), *small],
                       capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    spec = CropSpec(**json.loads((tmp_path / "run" / "train_config.json").read_text())["crop"])
    assert shape_of(spec) == "aligned" and spec.margin == 0.02
    _the_package_crops_upright(tmp_path / "run", scenes, tmp_path)


def _the_package_crops_upright(run: Path, scenes: Path, tmp_path: Path) -> None:
    """convert carries the aligned crop; the edge's model input turns the built-in finder's box upright, as training
    cut it; the golden samples (convert's crops of the test split) pass the self-test."""
    from convert.tflite import convert_run
    from edge.judge.boxfinder import BUILTIN
    from edge.judge.classifier import Classifier
    from edge.judge.crops import locate_still, open_finder
    from edge.judge.images import read_bgr
    from edge.judge.model_package import load_metadata, model_input

    pkg = convert_run(run, "float32", tmp_path / "out" / "line.tflite", gate=False)
    meta = load_metadata(pkg)
    assert shape_of(meta.crop) == "aligned" and meta.finder is not None
    clf = Classifier.load(pkg)
    assert clf.self_test() == []
    m, finder, upright = meta.input, open_finder(BUILTIN), 0
    for p in sorted(scenes.rglob("*.jpg"))[:8]:
        bgr = np.asarray(read_bgr(p))
        loc = locate_still(bgr, meta.crop, finder=finder)
        assert loc.method == "learned" and loc.rotated is not None
        assert np.array_equal(clf.preprocess(bgr), model_input(bgr, meta.crop, m.height, m.width, m.resize, located=loc))
        square = model_input(bgr, meta.crop.model_copy(update={"rotated": False, "square": True, "margin": 0.08}),
                             m.height, m.width, m.resize, located=loc)
        upright += not np.array_equal(clf.preprocess(bgr), square)
    assert upright == 8  # the package's crop is not the square one: the test can fail


def test_cv_folds_do_not_depend_on_the_crop_shape() -> None:
    """cv judges near-duplicates on the square crop of the box whatever the shape, so two runs that differ only in
    --crop-shape share their groups and folds (their paired difference compares like with like)."""
    from training.cv import CVConfig, hash_crop

    def hashed(shape: str) -> tuple[CropSpec | None, str | None]:
        return hash_crop(CVConfig(data_dir=Path("d"), out_dir=Path("o"), crop="auto", crop_shape=shape, finder="f"))

    assert hashed("aligned") == hashed("square") == (CropSpec(method="auto"), "f")
    assert hash_crop(CVConfig(data_dir=Path("d"), out_dir=Path("o"), recipe="anomaly", crop="auto"))[0] == shaped(
        CropSpec(method="auto"), "aligned")  # the anomaly recipe's own crop
    assert hash_crop(CVConfig(data_dir=Path("d"), out_dir=Path("o"))) == (None, None)  # no crop: the whole image
