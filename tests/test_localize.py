"""Box localisation (edge/judge/localize.py) on rendered line scenes with known boxes, and training/edge crop parity."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from boxinspect.synth import DEFECTS, VIEWS, make_line_dataset, render_line_part
from edge.judge.localize import CropSpec, crop, iou, locate, locate_for_still
from edge.judge.model_package import model_input

N_PARTS = 24  # x 2 views


@pytest.fixture(scope="module")
def scenes() -> list[dict]:
    """Rendered parts (both views) with an empty-belt reference of each view; easy and hard boxes."""
    from boxinspect.synth.line import LineKit

    kit = LineKit.make(21)
    out = []
    for i in range(N_PARTS):
        label = "ok" if i % 2 else "defective"
        out.append(render_line_part(21, i, label, None if label == "ok" else DEFECTS[i % len(DEFECTS)], "mixed",
                                    kit, empty=True))
    return out


def _ious(scenes: list[dict], spec: CropSpec, with_background: bool) -> np.ndarray:
    vals = []
    for r in scenes:
        for view in VIEWS:
            loc = locate(r["views"][view], spec, r["empty"][view] if with_background else None)
            assert not loc.whole, (view, loc)
            vals.append(iou(loc.bbox, r["truth"]["views"][view]["bbox"]) if loc.found else 0.0)  # missed: 0
    return np.array(vals)


def test_salient_finds_the_box_without_a_reference(scenes: list[dict]) -> None:
    v = _ious(scenes, CropSpec(method="salient"), with_background=False)
    assert np.mean(v >= 0.8) >= 0.9, np.round(v, 2)
    assert v.mean() >= 0.85


def test_background_difference_finds_the_box(scenes: list[dict]) -> None:
    v = _ious(scenes, CropSpec(method="background"), with_background=True)
    assert np.mean(v >= 0.8) >= 0.95 and v.mean() >= 0.9, np.round(v, 2)


def test_auto_uses_the_reference_when_given(scenes: list[dict]) -> None:
    r = scenes[0]
    assert locate(r["views"]["top"], CropSpec(), r["empty"]["top"]).method == "background"
    assert locate(r["views"]["top"], CropSpec()).method == "salient"


def test_empty_belt_is_no_box(scenes: list[dict]) -> None:
    for r in scenes[:6]:
        for view in VIEWS:
            empty = r["empty"][view]
            assert not locate(empty, CropSpec(method="background"), empty).found
            assert not locate(empty, CropSpec(method="salient")).found
            assert not locate(empty, CropSpec()).found
    with pytest.raises(ValueError, match="background"):
        locate(scenes[0]["views"]["top"], CropSpec(method="background"))


def test_auto_keeps_a_box_centred_photo_whole(scenes: list[dict]) -> None:
    """A photo that is already the box (tight crop) must not be cropped further by auto."""
    for r in scenes[:6]:
        x0, y0, x1, y1 = r["truth"]["views"]["top"]["bbox"]
        tight = np.ascontiguousarray(r["views"]["top"][y0:y1, x0:x1])
        loc = locate_for_still(tight, CropSpec())
        assert loc.whole, loc
        assert model_input(tight, CropSpec(), 96, 96).shape == (96, 96, 3)
        assert np.array_equal(model_input(tight, CropSpec(), 96, 96), model_input(tight, CropSpec(method="none"), 96, 96))


def test_crop_is_square_with_margin_and_contains_the_box(scenes: list[dict]) -> None:
    r = scenes[3]
    img = r["views"]["top"]
    spec = CropSpec(method="salient", margin=0.1)
    loc = locate(img, spec)
    c = crop(img, loc, spec)
    x0, y0, x1, y1 = loc.bbox
    side = max(x1 - x0, y1 - y0)
    assert c.shape[0] == c.shape[1]
    assert abs(c.shape[0] - round(side * 1.2)) <= 2
    rot = crop(img, loc, spec.model_copy(update={"rotated": True}))
    assert rot.shape[0] == rot.shape[1] and rot.shape[0] <= c.shape[0] + 4


def test_crop_spec_rejects_unknown_keys_and_methods() -> None:
    with pytest.raises(ValueError):
        CropSpec(method="magic")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        CropSpec.model_validate({"method": "auto", "marign": 0.1})


def test_training_and_edge_give_the_same_tensor(int8_model: Path, tmp_path: Path) -> None:
    """The same image gives the same model input in training's data pipeline and in the edge classifier, for
    every crop method, and so the same score."""
    from edge.judge.classifier import Classifier
    from training.data import load_images

    make_line_dataset(tmp_path / "line", n_per_class=2, seed=5, progress=False)
    files = sorted((tmp_path / "line").rglob("*.jpg"))
    parts = json.loads((tmp_path / "line" / "parts.json").read_text())["parts"]
    # an empty-belt reference for the background method: a rendered empty frame of the first file's part
    rel = files[0].relative_to(tmp_path / "line").as_posix()
    first, view = next((p, v) for p in parts for v in VIEWS if p["views"][v]["file"] == rel)
    idx = int(first["part"].split("-")[1])
    ref = render_line_part(5, idx, first["label"], first["defect"], empty=True)["empty"][view]
    bg_file = tmp_path / "empty.png"
    cv2.imwrite(str(bg_file), ref)

    clf = Classifier.load(int8_model)
    size = clf.metadata.input.height
    for spec in (CropSpec(), CropSpec(method="salient", rotated=True), CropSpec(method="none"),
                 CropSpec(method="background", background_file=str(bg_file))):
        chosen = files[:1] if spec.method == "background" else files
        train_px = load_images(chosen, ["x"] * len(chosen), size, spec).pixels
        clf.metadata.crop = spec
        for f, t in zip(chosen, train_px, strict=True):
            edge_px = clf.preprocess(cv2.imread(str(f)))
            assert edge_px.dtype == t.dtype == np.uint8
            assert np.array_equal(edge_px, t), (spec.method, f.name)
            assert clf.score_rgb(t) == clf.score(cv2.imread(str(f)))
    # and the crop really changes the input (a whole wide frame is not the box)
    clf.metadata.crop = CropSpec(method="none")
    whole = clf.preprocess(cv2.imread(str(files[0])))
    clf.metadata.crop = CropSpec()
    assert not np.array_equal(whole, clf.preprocess(cv2.imread(str(files[0]))))


def test_the_texture_search_leaves_the_warning_filters_alone(monkeypatch: pytest.MonkeyPatch):
    """A box covering whole rows of a slatted belt leaves those rows with no belt pixel: the texture search
    interpolates their profile without an all-NaN median, so nothing warns and nothing touches the process's
    warning filters (``catch_warnings`` is process-wide, and the daemon's loop and the API's /predict locate on two
    threads at once)."""
    rng = np.random.default_rng(0)
    frame = np.full((360, 640, 3), 120, np.uint8)
    frame[:, ::24] = 60  # dark gaps between slats: a periodic belt
    frame = np.clip(frame + rng.normal(0, 4, frame.shape), 0, 255).astype(np.uint8)
    frame[120:260, :] = (230, 230, 225)  # a box wider than the view: these rows hold no belt at all
    frame[120:260, 300:340] = (40, 120, 230)  # its band

    def touched(*_a: object, **_k: object) -> None:
        raise AssertionError("locating changed the process's warning filters")

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an all-NaN median would raise here
        monkeypatch.setattr(warnings, "catch_warnings", touched)
        monkeypatch.setattr(warnings, "simplefilter", touched)
        located = [locate(frame, CropSpec(method=m)) for m in ("texture", "auto")]
        monkeypatch.undo()
    assert all(loc.method for loc in located), located
