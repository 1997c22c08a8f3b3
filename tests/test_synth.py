"""Synthetic data: dataset layout, determinism, video ground truth, and what a background subtractor sees."""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from boxinspect import synth


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.jpg"))}


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ds")
    summary = synth.make_dataset(out, n_per_class=12, size=64, seed=3, progress=False)
    return out, summary


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("video") / "belt.mp4"
    gt = synth.make_video(path, n_boxes=4, defect_rate=0.5, seed=5)
    return path, gt


def _read_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"cv2 cannot open {path}"
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def test_dataset_layout_and_manifest(small_dataset: tuple[Path, dict]) -> None:
    out, summary = small_dataset
    ok = sorted((out / "ok").glob("*.jpg"))
    bad = sorted((out / "defective").glob("*.jpg"))
    assert len(ok) == 12 and len(bad) == 12
    assert summary["counts"] == {"defective": 12, "ok": 12}
    assert summary["n_images"] == 24
    man = json.loads((out / "manifest.json").read_text())
    assert len(man["images"]) == 24
    files = {it["file"] for it in man["images"]}
    assert files == {f"ok/{p.name}" for p in ok} | {f"defective/{p.name}" for p in bad}
    for it in man["images"]:
        img = cv2.imread(str(out / it["file"]))
        assert img is not None and img.shape == (64, 64, 3)
        if it["label"] == "ok":
            assert it["defect"] is None and it["box"]["defect"] is None  # OK boxes never carry a defect
        else:
            assert it["defect"] in synth.DEFECTS and it["box"]["defect"] == it["defect"]
    # every defect type is represented, equally
    assert summary["defects"] == {d: 2 for d in synth.DEFECTS}


def test_dataset_is_deterministic(small_dataset: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = small_dataset
    again = tmp_path / "again"
    synth.make_dataset(again, n_per_class=12, size=64, seed=3, progress=False)
    assert _digest(again) == _digest(out)
    assert json.loads((again / "manifest.json").read_text()) == json.loads((out / "manifest.json").read_text())
    other = tmp_path / "other"
    synth.make_dataset(other, n_per_class=12, size=64, seed=4, progress=False)
    assert _digest(other) != _digest(out)


def test_rerun_into_same_folder_replaces_earlier_images(tmp_path: Path) -> None:
    synth.make_dataset(tmp_path, n_per_class=8, size=32, seed=1, progress=False)
    (tmp_path / "ok" / "mine.jpg").write_bytes(b"not ours")
    synth.make_dataset(tmp_path, n_per_class=3, size=32, seed=1, progress=False)
    assert len(list((tmp_path / "defective").glob("*.jpg"))) == 3
    assert sorted(p.name for p in (tmp_path / "ok").glob("*.jpg")) == ["mine.jpg", "ok_00000.jpg", "ok_00001.jpg",
                                                                      "ok_00002.jpg"]


def test_sample_render_is_deterministic() -> None:
    a, info_a = synth.render_sample(synth.child_rng(11, 1, 2), "tear")
    b, info_b = synth.render_sample(synth.child_rng(11, 1, 2), "tear")
    assert np.array_equal(a, b) and info_a == info_b
    c, _ = synth.render_sample(synth.child_rng(11, 1, 3), "tear")
    assert not np.array_equal(a, c)


def test_defects_change_the_box() -> None:
    """Easy defects are large: the same box drawn with a defect differs clearly from the OK one."""
    layout = synth.layout_for(synth.DATASET_FRAME)
    for defect in synth.DEFECTS:
        diffs = []
        for i in range(3):
            ok = synth.draw_box(synth.child_rng(21, i), "easy", None, layout.scale)
            bad = synth.draw_box(synth.child_rng(21, i), "easy", defect, layout.scale)
            # same box geometry (same random draws up to the defect); compare the top of the box
            h = min(ok.img.shape[0], bad.img.shape[0])
            w = min(ok.img.shape[1], bad.img.shape[1])
            oy, ox = (ok.img.shape[0] - h) // 2, (ok.img.shape[1] - w) // 2
            by, bx = (bad.img.shape[0] - h) // 2, (bad.img.shape[1] - w) // 2
            d = np.abs(ok.img[oy : oy + h, ox : ox + w] - bad.img[by : by + h, bx : bx + w]).mean(axis=2)
            diffs.append(float((d > 30).mean()))
        assert min(diffs) > 0.02, f"{defect}: changed fraction {diffs}"


def test_video_ground_truth_is_consistent(video: tuple[Path, dict]) -> None:
    path, gt = video
    assert gt["video"] == path.name
    assert json.loads(path.with_suffix(".json").read_text()) == gt
    n = gt["frame_count"]
    roi = gt["roi"]
    w, h = gt["frame_size"]
    assert roi["x"] >= 0 and roi["y"] >= 0 and roi["x"] + roi["width"] <= w and roi["y"] + roi["height"] <= h
    assert roi["width"] == roi["height"]
    boxes = gt["boxes"]
    assert [b["id"] for b in boxes] == list(range(4))
    assert sum(b["defective"] for b in boxes) == 2
    for b in boxes:
        assert 0 <= b["enter_frame"] <= b["full_start"] <= b["centre_frame"] <= b["full_end"] <= b["exit_frame"] < n
        assert b["full_end"] - b["full_start"] + 1 >= 12  # entirely inside the ROI for >= 12 frames at 15 fps
        assert (b["defect"] is None) == (not b["defective"])
        assert b["defect"] is None or b["defect"] in synth.DEFECTS
    # one box at a time, with at least one box-free frame between consecutive boxes
    for a, b in zip(boxes, boxes[1:], strict=False):
        assert a["exit_frame"] + 1 < b["enter_frame"]
    assert boxes[0]["enter_frame"] >= 30  # empty belt to learn the background first
    assert synth.plan_video(n_boxes=4, defect_rate=0.5, seed=5).gt == {k: v for k, v in gt.items() if k != "video"}


def test_video_frames_are_deterministic() -> None:
    def frames(seed: int) -> list[np.ndarray]:
        plan = synth.plan_video(n_boxes=2, seed=seed)
        centre = plan.gt["boxes"][0]["centre_frame"]
        return [f for t, f in enumerate(itertools.islice(synth.video_frames(plan), centre + 1)) if t in (0, centre)]

    a, b, c = frames(4), frames(4), frames(5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])


def test_video_reads_back(video: tuple[Path, dict]) -> None:
    path, gt = video
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened()
    assert int(cap.get(cv2.CAP_PROP_FPS)) == gt["fps"]
    cap.release()
    frames = _read_frames(path)
    assert len(frames) == gt["frame_count"]
    assert frames[0].shape == (gt["frame_size"][1], gt["frame_size"][0], 3)


def test_avi_is_mjpg_and_reads_back(tmp_path: Path) -> None:
    gt = synth.make_video(tmp_path / "belt.avi", n_boxes=1, defect_rate=1.0, seed=2, fps=10, frame_size=(320, 180))
    assert gt["boxes"][0]["defective"] and gt["frame_size"] == [320, 180]
    frames = _read_frames(tmp_path / "belt.avi")
    assert len(frames) == gt["frame_count"] and frames[0].shape == (180, 320, 3)


def _roi(frame: np.ndarray, roi: dict) -> np.ndarray:
    return frame[roi["y"] : roi["y"] + roi["height"], roi["x"] : roi["x"] + roi["width"]]


@pytest.mark.parametrize("difficulty", ["easy", "hard"])
def test_background_subtractor_sees_boxes_not_belt(tmp_path: Path, difficulty: str) -> None:
    """MOG2 (varThreshold 40, shadows off) on the ROI: < 3 % foreground on empty (moving) belt after
    30 frames of learning, a clear blob while a box is centred, and box-free frames between boxes."""
    path = tmp_path / "fg.mp4"
    gt = synth.make_video(path, n_boxes=2, defect_rate=0.5, seed=8, difficulty=difficulty)
    frames = _read_frames(path)
    roi = gt["roi"]
    busy = np.zeros(len(frames), bool)
    for b in gt["boxes"]:
        busy[b["enter_frame"] : b["exit_frame"] + 1] = True
    # the background model learns for 30 frames, then only on frames with no box (as the daemon does)
    mog = cv2.createBackgroundSubtractorMOG2(history=300, varThreshold=40, detectShadows=False)
    frozen = cv2.createBackgroundSubtractorMOG2(history=300, varThreshold=40, detectShadows=False)
    fg, fg_frozen = [], []
    for t, frame in enumerate(frames):
        r = _roi(frame, roi)
        learn = t < 30 or not busy[t]
        fg.append(float((mog.apply(r, learningRate=-1 if learn else 0) > 0).mean()))
        fg_frozen.append(float((frozen.apply(r, learningRate=-1 if t < 30 else 0) > 0).mean()))
    fg_a, fz = np.array(fg), np.array(fg_frozen)
    empty = ~busy
    empty[:30] = False
    assert empty.sum() > 10
    assert fg_a[empty].max() < 0.03, f"empty belt foreground up to {fg_a[empty].max():.3f}"
    assert fz[empty].max() < 0.03, f"empty belt (frozen model) foreground up to {fz[empty].max():.3f}"
    for b in gt["boxes"]:
        assert fg_a[b["centre_frame"]] > 0.15, f"box {b['id']}: only {fg_a[b['centre_frame']]:.3f} foreground"
        # a single blob: the largest connected component holds most of the foreground
        mask = (mog.apply(_roi(frames[b["centre_frame"]], roi), learningRate=0) > 0).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        assert n > 1 and stats[1:, cv2.CC_STAT_AREA].max() > 0.8 * mask.sum()
    for a, b in zip(gt["boxes"], gt["boxes"][1:], strict=False):
        between = range(a["exit_frame"] + 1, b["enter_frame"])
        assert len(between) >= 1
        assert all(fg_a[t] < 0.03 for t in between), "no box-free frame between two boxes"


def test_cli_writes_everything(tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys) -> None:
    parser = argparse.ArgumentParser(prog="boxinspect")
    sub = parser.add_subparsers(dest="command")
    synth.register(sub)
    out = tmp_path / "synth"
    args = parser.parse_args(["synth", "--out", str(out), "--n-per-class", "6", "--size", "48", "--seed", "2",
                              "--video", "--video-boxes", "2", "--contact-sheet"])
    with caplog.at_level("INFO", logger="boxinspect.synth"):
        assert args.func(args) == 0
    assert len(list((out / "ok").glob("*.jpg"))) == 6
    assert len(list((out / "defective").glob("*.jpg"))) == 6
    assert (out / "manifest.json").exists()
    assert cv2.imread(str(out / "contact_sheet.png")) is not None
    assert cv2.imread(str(out / "conveyor_frames.png")) is not None
    gt = json.loads((out / "conveyor.json").read_text())
    assert len(gt["boxes"]) == 2 and gt["video"] == "conveyor.mp4"
    assert len(_read_frames(out / "conveyor.mp4")) == gt["frame_count"]
    assert any("wrote" in r.getMessage() for r in caplog.records)
    printed = capsys.readouterr().out
    assert "conveyor.mp4" in printed and "manifest.json" in printed


def test_cli_help_explains_output() -> None:
    parser = argparse.ArgumentParser(prog="boxinspect")
    sub = parser.add_subparsers(dest="command")
    synth.register(sub)
    text = sub.choices["synth"].format_help()
    for word in ("ok/", "defective/", "manifest.json", "conveyor.mp4", "--difficulty", "--seed", "open_flap"):
        assert word in text


def test_contact_sheet(tmp_path: Path) -> None:
    imgs = [np.full((40, 50, 3), i * 20, np.uint8) for i in range(5)]
    synth.contact_sheet(imgs, tmp_path / "s.png", cols=2, labels=[f"im{i}" for i in range(5)])
    sheet = cv2.imread(str(tmp_path / "s.png"))
    assert sheet is not None and sheet.shape[1] > 2 * 50 and sheet.shape[0] > 3 * 40
    with pytest.raises(ValueError):
        synth.contact_sheet([], tmp_path / "e.png")


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="difficulty"):
        synth.make_dataset(tmp_path / "x", n_per_class=1, difficulty="medium")
    with pytest.raises(ValueError, match="defect_rate"):
        synth.make_video(tmp_path / "v.mp4", n_boxes=2, defect_rate=1.5)
    with pytest.raises(ValueError):
        synth.render_box(synth.child_rng(0), defect="scratch")
    assert not (tmp_path / "v.mp4").exists()


def test_other_frame_sizes_keep_the_rules(tmp_path: Path) -> None:
    gt = synth.plan_video(n_boxes=3, seed=1, frame_size=(480, 270), fps=10).gt
    roi = gt["roi"]
    assert roi["x"] + roi["width"] <= 480 and roi["y"] + roi["height"] <= 270
    for a, b in zip(gt["boxes"], gt["boxes"][1:], strict=False):
        assert a["exit_frame"] + 1 < b["enter_frame"]
    for b in gt["boxes"]:
        assert b["full_end"] - b["full_start"] + 1 >= 8  # 12 frames at 15 fps = 0.8 s


# ------------------------------------------------------------------------------------------- line scenes
@pytest.fixture(scope="module")
def line_scenes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("line")
    summary = synth.make_line_dataset(out, n_per_class=6, seed=2, progress=False)
    return out, summary


def test_line_scenes_layout_and_ground_truth(line_scenes: tuple[Path, dict]) -> None:
    out, summary = line_scenes
    man = json.loads((out / "parts.json").read_text())
    assert summary["n_parts"] == 12 and summary["n_images"] == 24 and summary["counts"] == {"defective": 6, "ok": 6}
    files = {str(p.relative_to(out)) for p in out.rglob("*.jpg")}
    assert len(files) == 24
    w, h = synth.LINE_FRAME
    for part in man["parts"]:
        assert set(part["views"]) == set(synth.VIEWS)
        assert (part["defect"] is None) == (part["label"] == "ok")
        for view, v in part["views"].items():
            assert v["file"] == f"{part['label']}/{part['part']}_{view}.jpg" and v["file"] in files
            img = cv2.imread(str(out / v["file"]))
            assert img.shape == (h, w, 3)
            x0, y0, x1, y1 = v["bbox"]
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            # the box covers 5-25% of the frame (the oblique view adds the side faces it shows)
            lo, hi = synth.AREA_RANGE
            assert lo * 0.8 <= v["area_frac"] <= (hi if view == "top" else hi * 1.6), (part["part"], view, v)
    names = {(p["part"], p["label"]) for p in man["parts"]}
    assert len(names) == 12 and all("_" not in p for p, _ in names)


def test_line_scene_box_is_where_the_truth_says(tmp_path: Path) -> None:
    """The ground-truth box is where the frame differs from the same frame without the box."""
    r = synth.render_line_part(4, 3, "defective", "tear", empty=True)
    for view in synth.VIEWS:
        diff = cv2.absdiff(r["views"][view], r["empty"][view]).max(axis=2) > 25
        x0, y0, x1, y1 = r["truth"]["views"][view]["bbox"]
        inside = diff[y0:y1, x0:x1].sum()
        assert inside > 0.5 * (x1 - x0) * (y1 - y0)  # the box body differs from the belt
        outside = diff.sum() - inside
        assert outside < 0.25 * inside  # only the shadow and blur differ outside the box


def test_line_scenes_are_deterministic(line_scenes: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = line_scenes
    again = tmp_path / "again"
    synth.make_line_dataset(again, n_per_class=6, seed=2, progress=False)
    assert _digest(again) == _digest(out)
    assert json.loads((again / "parts.json").read_text()) == json.loads((out / "parts.json").read_text())
    other = synth.render_line_part(3, 0, "ok", None)["views"]["top"]
    assert not np.array_equal(other, cv2.imread(str(out / "ok" / "ok-00000_top.jpg")))


def test_synth_cli_line_scenes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from boxinspect.cli import main

    assert main(["synth", "--out", str(tmp_path), "--scenes", "line", "--n-per-class", "2", "--contact-sheet"]) == 0
    assert len(list(tmp_path.rglob("*_top.jpg"))) == 4 and len(list(tmp_path.rglob("*_oblique.jpg"))) == 4
    assert (tmp_path / "contact_sheet.png").exists() and (tmp_path / "parts.json").exists()
    assert "line scenes: 4 parts x 2 views" in capsys.readouterr().out
    assert main(["synth", "--out", str(tmp_path), "--difficulty", "mixed"]) == 2  # mixed is for line scenes only
