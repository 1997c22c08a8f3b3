"""Issue 25: the localiser on patterned belts (synth belt scenes with known boxes), no regression on the old line
scenes, what it says when it cannot (edge/judge/crops.py, ``boxinspect localize``), and the daemon's counters.

Bounded: a few parts rendered in memory (deterministic seeds); the full figures are in docs/RESULTS.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from boxinspect.synth.belt import make_belt_dataset, render_belt_part
from boxinspect.synth.line import render_line_part
from edge.judge import crops
from edge.judge.localize import CropSpec, iou, locate, locate_for_still

AUTO = CropSpec()


def _ious(parts: list[dict]) -> tuple[np.ndarray, int]:
    ious, whole = [], 0
    for r in parts:
        for view, img in r["views"].items():
            loc = locate_for_still(img, AUTO)
            whole += int(loc.whole)
            ious.append(0.0 if loc.whole or loc.bbox is None else iou(loc.bbox, r["truth"]["views"][view]["bbox"]))
    return np.array(ious), whole


def test_patterned_belt_scenes_are_localised():
    parts = [render_belt_part(5, i, lab, None if lab == "ok" else "dent", line=i % 4)
             for i in range(8) for lab in ("ok", "defective")]
    ious, whole = _ious(parts)
    assert len(ious) == 32
    # measured: 4 of 32 whole, IoU >= 0.5 on 27, >= 0.8 on 15 (issue 25's IoU >= 0.8 target is NOT met yet)
    assert whole <= 10, f"{whole} of 32 images fell back to the whole frame"
    assert np.mean(ious >= 0.5) >= 0.55, np.round(ious, 2)


def test_old_line_scenes_do_not_regress():
    from boxinspect.synth.line import LineKit

    kit = LineKit.make(3)  # one belt kit for all parts, as make_line_dataset does
    parts = [render_line_part(3, i, lab, None if lab == "ok" else "tear", "mixed", kit)
             for i in range(8) for lab in ("ok", "defective")]
    ious, whole = _ious(parts)
    assert whole <= 1
    assert np.mean(ious >= 0.8) >= 0.9, np.round(ious, 2)


def test_localize_command_lists_every_image_and_draws_the_sheet(tmp_path: Path):
    repo_root = Path(__file__).resolve().parents[1]
    data = tmp_path / "belt"
    make_belt_dataset(data, n_per_class=3, seed=2, progress=False, empty_frames=0)
    out_json, sheet = tmp_path / "crops.json", tmp_path / "crops.png"
    r = subprocess.run([sys.executable, "-m", "boxinspect.cli", "localize", str(data), "--sheet", str(sheet),
                        "--json", str(out_json)], cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out_json.read_text())
    assert len(doc["images"]) == 12
    for im in doc["images"]:
        assert set(im) >= {"path", "found", "method", "box", "reason", "iou"}
        assert (im["box"] is not None) == im["found"] and (im["reason"] == "") == im["found"]
    assert doc["summary"]["n"] == 12 and "box cropped in" in r.stdout
    assert cv2.imread(str(sheet)) is not None


def test_many_fallbacks_get_a_warning_that_says_what_to_do():
    recs = [crops.CropRecord(f"{i}.jpg", i < 5, "texture" if i < 5 else "whole", [0, 0, 5, 5] if i < 5 else None,
                             "" if i < 5 else "1.0% of the frame stands out besides the box (2.0%): cluttered scene")
            for i in range(10)]
    st = crops.summarise(recs)
    assert st.cropped == 5 and st.fallback == 5 and st.reasons == {"cluttered": 5}
    warn = crops.fallback_warning(st, AUTO)
    assert warn is not None and "--background" in warn and "fixed camera" in warn and "ROI" in warn
    assert crops.fallback_warning(crops.summarise(recs[:5]), AUTO) is None
    # a box-centred photo (the box fills the frame) is not a failure
    fills = crops.CropRecord("f.jpg", False, "whole", None, "region spans 90% of the frame / touches 4 edges: "
                             "the box fills the frame")
    assert crops.summarise([fills]).fallback == 0


def test_daemon_counts_localiser_outcomes_per_reason():
    from edge.runtime.metrics import Metrics

    m = Metrics()
    belt = np.full((240, 320, 3), 90, np.uint8)
    crops.count_located(m, locate(belt, AUTO))  # an empty belt: no box
    r = render_belt_part(5, 0, "ok", None, line=0)
    crops.count_located(m, locate(r["views"]["top"], AUTO))
    counts = crops.localizer_counts(m)
    assert counts.get("no_box/nothing") == 1 or sum(v for k, v in counts.items() if k.startswith("no_box/")) == 1
    assert sum(counts.values()) == 2


def test_daemon_crops_like_training_on_a_moving_patterned_belt():
    """The daemon differences against its MOG2 background; on a moving slat belt that differs everywhere, so
    auto then searches without the reference, as training does on the same frame: the same box."""
    from edge.config import PresenceConfig
    from edge.judge.decision import ForegroundDetector

    agree, boxes = 0, 0
    for view in ("top", "oblique"):
        fg = ForegroundDetector(PresenceConfig())
        parts = [render_belt_part(9, i, "ok", None, line=1, empty=True) for i in range(1, 4 * 9, 4)]
        for r in parts[:6]:  # the daemon learns the empty belt (moving: a new slat phase each frame)
            for _ in range(3):
                fg.measure(r["empty"][view])
        background = fg.mog.getBackgroundImage()
        for r in parts[6:]:
            img = r["views"][view]
            daemon, training = locate(img, AUTO, background), locate_for_still(img, AUTO)
            if training.whole:
                continue
            boxes += 1
            assert daemon.found and not daemon.whole, daemon.reason
            agree += int(iou(daemon.bbox, training.bbox) >= 0.9)  # type: ignore[arg-type]
    assert boxes >= 4 and agree == boxes


def test_empty_patterned_belt_is_mostly_no_box():
    """The daemon's second guard (after presence): an empty belt is "no box". Measured: 2 of these 16 frames
    get a (false) texture box (a bolt row or rail piece; docs/RESULTS.md), so the bound is loose but not slack."""
    false = 0
    for i in range(8):
        r = render_belt_part(13, i, "ok", None, line=i % 4, empty=True)
        for img in r["empty"].values():
            loc = locate(img, AUTO)
            false += int(loc.found and not loc.whole)
    assert false <= 4
