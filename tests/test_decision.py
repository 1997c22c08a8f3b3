"""Decisions: presence segmentation over the generated conveyor video (one passage per ground-truth box),
score hysteresis, debounce, flush, triggered mode, and the event format.

Scores here come from the ground truth (0.9 for a defective box, 0.1 otherwise) so segmentation and
aggregation are tested independently of any model; the end-to-end test covers the real model.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from edge.capture.frames import Capture
from edge.capture.roi import crop
from edge.config import DecisionConfig, PresenceConfig, RoiConfig, SourceConfig
from edge.judge.decision import ContinuousDecider, Decision, TriggeredDecider
from edge.judge.records import FrameRecord
from edge.runtime.timeutil import iso_utc
from edge.state import verdict
from tests.helpers import cached_video

REPO = Path(__file__).resolve().parents[1]
LABELS = ("ok", "defective")
EVENT_KEYS = {
    "schema_version", "event_id", "line", "camera", "part_id", "label", "is_defect", "score", "max_score",
    "mean_score", "frame_count", "first_frame", "last_frame", "threshold", "model_id", "captured_at",
    "decided_at", "mode", "evidence", "kind", "action", "reason", "deadline_at", "slack_ms", "late", "decided_on",
}


def box_at(gt: dict, frame: int) -> dict | None:
    for b in gt["boxes"]:
        if b["enter_frame"] <= frame <= b["exit_frame"]:
            return b
    return None


@pytest.fixture(scope="module")
def hard_video(model_cache: Path) -> tuple[Path, dict]:
    """A second generated video: other seed, 'hard' scenes (more noise, blur, belt texture), smaller frames."""
    return cached_video(model_cache / "video-hard" / "conveyor.avi", n_boxes=8, defect_rate=0.5, seed=3,
                        difficulty="hard", frame_size=(480, 270))


@pytest.fixture(scope="module", params=["easy", "hard"])
def video_run(request: pytest.FixtureRequest) -> dict:
    """Read a generated video through Capture (pace fast) and feed two deciders with GT-derived scores."""
    path, gt = request.getfixturevalue("synth_video" if request.param == "easy" else "hard_video")
    roi_cfg = RoiConfig(**{k: gt["roi"][k] for k in ("x", "y", "width", "height")})
    by_label = ContinuousDecider(DecisionConfig(aggregate="mean"), LABELS, 0.5, "gt-scores")
    by_full = ContinuousDecider(DecisionConfig(aggregate="mean"), LABELS, 0.5, "gt-full")
    out: dict = {"gt": gt, "label": [], "full": [], "scored": [], "frames": 0}
    cap = Capture(SourceConfig(uri=str(path), pace="fast")).start()
    try:
        while not cap.finished:
            f = cap.read(timeout=10)
            if f is None:
                continue
            out["frames"] += 1
            roi = crop(f.image, roi_cfg)
            b = box_at(gt, f.index)
            s1 = s2 = None
            if by_label.needs_score(FrameRecord(0, 0.0, roi)):
                out["scored"].append(f.index)
                s1 = 0.9 if b and b["defective"] else 0.1
            if by_full.needs_score(FrameRecord(0, 0.0, roi)):
                s2 = 1.0 if b and b["full_start"] <= f.index <= b["full_end"] else 0.0
            for dec, s, key in ((by_label, s1, "label"), (by_full, s2, "full")):
                d = dec.update(FrameRecord(f.index, f.captured_at, roi, s))
                if d is not None:
                    out[key].append(d)
    finally:
        cap.stop()
    for dec, key in ((by_label, "label"), (by_full, "full")):
        d = dec.flush()
        if d is not None:
            out[key].append(d)
    return out


def test_one_passage_per_box_on_the_generated_video(video_run: dict) -> None:
    gt, decisions = video_run["gt"], video_run["label"]
    assert video_run["frames"] == gt["frame_count"]
    boxes = gt["boxes"]
    assert len(decisions) == len(boxes), [(d.first_frame, d.last_frame) for d in decisions]
    for d, b in zip(decisions, boxes, strict=True):  # in order, one each, each overlapping its own box only
        assert d.first_frame <= b["exit_frame"] and d.last_frame >= b["enter_frame"], (d, b)
        others = [o for o in boxes if o is not b and d.first_frame <= o["exit_frame"] and d.last_frame >= o["enter_frame"]]
        assert not others, f"passage {d.first_frame}-{d.last_frame} overlaps boxes {[o['id'] for o in others]}"
        # The box's fully-visible moment is inside the passage.
        assert d.first_frame <= b["centre_frame"] <= d.last_frame
        assert d.is_defect == b["defective"]
        assert d.label == ("defective" if b["defective"] else "ok")
        assert d.score == pytest.approx(0.9 if b["defective"] else 0.1)
        assert d.frame_count >= 3 and d.mode == "continuous" and d.part_id is None
        assert d.first_frame <= d.last_frame


def test_only_box_frames_are_scored(video_run: dict) -> None:
    """The empty belt costs no inference: every scored frame lies within a ground-truth box passage."""
    gt, scored = video_run["gt"], video_run["scored"]
    assert scored and len(scored) < 0.6 * gt["frame_count"]
    assert all(box_at(gt, i) is not None for i in scored)


def test_scores_come_from_frames_with_the_whole_box_in_view(video_run: dict) -> None:
    """Score 1 on frames where GT says the box is fully inside the ROI: the mean of the used frames is the share
    of used frames that were fully inside."""
    full = video_run["full"]
    assert len(full) == len(video_run["gt"]["boxes"])
    shares = [d.score for d in full]
    assert min(shares) >= 0.8, shares
    assert float(np.mean(shares)) >= 0.9, shares


def test_event_format_and_schema(video_run: dict) -> None:
    import jsonschema

    schema = json.loads((REPO / "edge" / "event.schema.json").read_text())
    for d in video_run["label"]:
        ev = d.to_event("line1", "cam1")
        assert set(ev) == EVENT_KEYS
        jsonschema.validate(ev, schema, format_checker=jsonschema.FormatChecker())
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ev["captured_at"])
        assert ev["schema_version"] == 2 and ev["evidence"] is None and ev["kind"] == "model"
        json.dumps(ev)
    assert len({d.event_id for d in video_run["label"]}) == len(video_run["label"])
    assert iso_utc(0.0) == "1970-01-01T00:00:00.000Z"


# ---------------------------------------------------------------------------------------- score hysteresis
BLANK = np.zeros((8, 8, 3), np.uint8)


def feed(decider, scores: list[float | None], start: int = 0) -> list[Decision]:
    out = []
    for i, s in enumerate(scores, start):
        roi = BLANK.copy()
        s_used = s if decider.needs_score(FrameRecord(0, 0.0, roi)) else None
        d = decider.update(FrameRecord(i, 1000.0 + i, roi, s_used))
        if d is not None:
            out.append(d)
    return out


def score_cfg(**kw) -> DecisionConfig:
    presence = {"method": "score", "score_on": 0.6, "score_off": 0.4, "min_frames": 3, "gap_frames": 3}
    presence.update(kw.pop("presence", {}))
    return DecisionConfig(presence=PresenceConfig(**presence), **kw)


def test_hysteresis_finds_defective_passages() -> None:
    dec = ContinuousDecider(score_cfg(aggregate="max"), LABELS, 0.5, "m")
    scores = [0.1] * 5 + [0.7, 0.5, 0.45, 0.9, 0.55] + [0.1] * 6 + [0.3, 0.5, 0.55, 0.2] + [0.1] * 5
    out = feed(dec, scores)
    # The first run enters at 0.7 and stays while >= 0.4; the second never reaches score_on: no passage.
    assert len(out) == 1
    d = out[0]
    assert (d.first_frame, d.last_frame) == (5, 9)
    assert d.score == pytest.approx(0.9) and d.max_score == pytest.approx(0.9)
    assert d.mean_score == pytest.approx(np.mean([0.7, 0.5, 0.45, 0.9, 0.55]))
    assert d.is_defect and d.label == "defective" and d.frame_count == 5
    assert d.captured_at == 1009.0  # capture time of the last frame used


@pytest.mark.parametrize(("aggregate", "expected"), [("max", 0.95), ("mean", 0.7), ("median", 0.625)])
def test_aggregates(aggregate: str, expected: float) -> None:
    dec = ContinuousDecider(score_cfg(aggregate=aggregate), LABELS, 0.68, "m")
    out = feed(dec, [0.0, 0.65, 0.6, 0.95, 0.6, 0.0, 0.0, 0.0])
    assert len(out) == 1
    assert out[0].score == pytest.approx(expected)
    assert out[0].is_defect == (expected >= 0.68)
    assert out[0].label == ("defective" if expected >= 0.68 else "ok")
    assert out[0].threshold == 0.68


def test_debounce_min_frames_and_gap_frames() -> None:
    dec = ContinuousDecider(score_cfg(), LABELS, 0.5, "m")
    blip = [0.9, 0.9] + [0.0] * 4  # 2 frames < min_frames: ignored
    dip = [0.9, 0.9, 0.0, 0.0, 0.9, 0.9] + [0.0] * 4  # a 2-frame dip < gap_frames: one passage
    split = [0.9, 0.9, 0.9, 0.0, 0.0, 0.0, 0.9, 0.9, 0.9] + [0.0] * 4  # 3 absent frames end the passage
    assert feed(dec, blip) == []
    assert dec.discarded == 1
    out = feed(dec, dip, start=100)
    assert [(d.first_frame, d.last_frame, d.frame_count) for d in out] == [(100, 105, 4)]
    out = feed(dec, split, start=200)
    assert [(d.first_frame, d.last_frame) for d in out] == [(200, 202), (206, 208)]


def test_flush_decides_the_box_still_in_view() -> None:
    dec = ContinuousDecider(score_cfg(), LABELS, 0.5, "m")
    assert feed(dec, [0.1, 0.8, 0.9, 0.85, 0.9]) == []
    assert dec.present and dec.in_passage
    d = dec.flush()
    assert d is not None and (d.first_frame, d.last_frame) == (1, 4) and d.is_defect
    assert dec.flush() is None and not dec.in_passage


def test_labels_are_checked() -> None:
    with pytest.raises(ValueError, match="two class names"):
        ContinuousDecider(DecisionConfig(), ("ok",), 0.5, "m")


# ------------------------------------------------------------------------------- simple moving rectangles
def belt_frames(
    n: int,
    boxes: list[tuple[int, int]],
    speed: int = 8,
    stop_at: int | None = None,
    seed: int = 0,
    light: tuple[int, int] | None = None,
    resume_at: int | None = None,
):
    """A 100x200 grey belt with sensor noise; each (start_frame, length) box is a rectangle 50 px high and
    ``length`` px long (0 = 80) moving right. ``stop_at``: the first box stops when its left edge reaches that x
    (and moves on at frame ``resume_at``). ``light``: (on, off) frames between which the scene is 40 grey
    levels brighter (a lamp switched on)."""
    rng = np.random.default_rng(seed)
    for t in range(n):
        img = np.full((100, 200, 3), 90, np.uint8)
        for k, (start, length) in enumerate(boxes):
            length = length or 80
            x = -length + (t - start) * speed
            if stop_at is not None and k == 0:
                x = min(x, stop_at)
                if resume_at is not None and t >= resume_at:
                    x = stop_at + (t - resume_at) * speed
            if -length < x < 200:
                img[25:75, max(0, x) : max(0, min(200, x + length))] = (60, 140, 200)
        noise = rng.normal(0, 2.0, img.shape) + (40 if light is not None and light[0] <= t < light[1] else 0)
        yield t, np.clip(img + noise, 0, 255).astype(np.uint8)


def fg_cfg(**presence) -> DecisionConfig:
    p = {"method": "foreground", "learning_frames": 10, "min_frames": 3, "gap_frames": 3}
    p.update(presence)
    return DecisionConfig(presence=PresenceConfig(**p))


def run_frames(dec, frames, score_fn) -> tuple[list[Decision], int]:
    out, scored = [], 0
    for t, img in frames:
        s = None
        if dec.needs_score(FrameRecord(0, 0.0, img)):
            s = score_fn(t)
            scored += 1
        d = dec.update(FrameRecord(t, float(t), img, s))
        if d is not None:
            out.append(d)
    d = dec.flush()
    if d is not None:
        out.append(d)
    return out, scored


def test_foreground_rectangles_and_both_mode() -> None:
    # Two boxes pass; a defect-like score spike appears on the empty belt at frames 100-104.
    def score(t: int) -> float:
        return 0.95 if 100 <= t < 105 else 0.2

    frames = list(belt_frames(125, [(20, 0), (60, 0)]))
    fg_only, scored = run_frames(ContinuousDecider(fg_cfg(), LABELS, 0.5, "m"), frames, score)
    assert [d.is_defect for d in fg_only] == [False, False]
    assert fg_only[0].last_frame < fg_only[1].first_frame
    assert scored < 60
    both, scored_both = run_frames(ContinuousDecider(fg_cfg(method="both"), LABELS, 0.5, "m"), frames, score)
    assert [d.is_defect for d in both] == [False, False, True]
    assert (both[2].first_frame, both[2].last_frame) == (100, 104)
    assert scored_both == 125  # hysteresis needs a score on every frame


def test_box_longer_than_the_roi_uses_the_largest_foreground() -> None:
    """Never fully inside: the frames where most of the box is in view decide (score = share of ROI width covered)."""

    def covered(t: int) -> float:
        x = -260 + (t - 20) * 8
        return (min(200, x + 260) - max(0, x)) / 200

    out, scored = run_frames(ContinuousDecider(fg_cfg(fg_history=500), LABELS, 0.5, "m"), belt_frames(90, [(20, 260)]), covered)
    assert len(out) == 1
    assert out[0].frame_count >= 3 and out[0].score >= 0.8
    assert scored < 20  # not every frame of the 44-frame passage was classified


def test_stopped_belt_decides_the_waiting_box_once(caplog: pytest.LogCaptureFixture) -> None:
    """A box stops in the ROI: it is decided after fg_history frames and the belt is relearned with it in view.
    When it moves on, the old empty-belt background is restored: no second decision, no ghost, and the next
    box is found normally."""
    dec = ContinuousDecider(fg_cfg(fg_history=60), LABELS, 0.5, "m")
    with caplog.at_level(logging.INFO, logger="edge.judge.decision"):
        out, _ = run_frames(dec, belt_frames(320, [(20, 0), (250, 0)], stop_at=70, resume_at=200), lambda t: 0.1)
    spans = [(d.first_frame, d.last_frame) for d in out]
    assert len(out) == 2, spans
    assert spans[0][1] - spans[0][0] + 1 == 60 and spans[0][0] < 40  # the waiting box, decided once
    assert 250 < spans[1][0] and spans[1][1] < 300  # the next box
    assert "stayed in the ROI" in caplog.text and "not decided again" in caplog.text
    assert dec.fg is not None and dec.fg.resets == 1 and dec.fg.restores == 1
    st = dec.stats()
    assert st["passages"] == 2 and st["relearns"] == 1 and st["restores"] == 1 and not st["in_passage"]


@pytest.mark.parametrize("lamp_off", [180, None])
def test_sudden_lighting_change_is_relearned_and_boxes_are_found_again(
    lamp_off: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    """A lamp switched on makes the whole ROI foreground: that 'passage' is closed after fg_history frames and the
    belt relearned. If the lamp goes off again the earlier background comes back at once. Either way the next
    box is found normally."""
    dec = ContinuousDecider(fg_cfg(fg_history=60), LABELS, 0.5, "m")
    with caplog.at_level(logging.WARNING, logger="edge.judge.decision"):
        frames = belt_frames(300, [(20, 0), (250, 0)], light=(100, lamp_off or 10_000))
        out, _ = run_frames(dec, frames, lambda t: 0.1)
    spans = [(d.first_frame, d.last_frame) for d in out]
    assert len(out) == 3, spans
    assert spans[0][1] < 60  # the first box, before the lamp
    assert spans[1] == (100, 159)  # the lighting change, cut after fg_history frames
    assert 250 < spans[2][0] and spans[2][1] < 300  # the next box
    assert "stayed in the ROI" in caplog.text
    assert dec.fg is not None and dec.fg.restores == (1 if lamp_off else 0)


# ----------------------------------------------------------------------------------------------- triggered
def test_triggered_part_ids_and_queue(caplog: pytest.LogCaptureFixture) -> None:
    dec = TriggeredDecider(DecisionConfig(mode="triggered", trigger_frames=3, aggregate="max"), LABELS, 0.5, "m")
    assert not dec.needs_score(FrameRecord(0, 1e9, BLANK)) and dec.update(FrameRecord(0, 100.0, BLANK, 0.9)) is None  # no trigger: nothing
    with caplog.at_level(logging.INFO, logger="edge.judge.decision"):
        assert dec.trigger("A-1", at=100.5)
        assert dec.trigger("A-2", at=100.6)  # arrives while A-1 is pending: queued, logged
    assert "queued behind 1" in caplog.text
    assert dec.pending == 2 and dec.needs_score(FrameRecord(0, 1e9, BLANK))
    assert not dec.needs_score(FrameRecord(0, 100.0, BLANK))  # a frame from before the trigger needs no inference
    assert dec.needs_score(FrameRecord(0, 101.0, BLANK))
    assert dec.update(FrameRecord(0, 100.0, BLANK, 0.9)) is None  # captured before the trigger: not used
    out = [dec.update(FrameRecord(i, 101.0 + i, BLANK, s)) for i, s in enumerate([0.2, 0.7, 0.3, 0.1, 0.1, 0.2], start=1)]
    got = [d for d in out if d is not None]
    assert [d.part_id for d in got] == ["A-1", "A-2"]
    assert [(d.first_frame, d.last_frame, d.frame_count) for d in got] == [(1, 3, 3), (4, 6, 3)]
    assert got[0].is_defect and got[0].score == pytest.approx(0.7) and got[0].mode == "triggered"
    assert not got[1].is_defect and got[1].label == "ok"
    assert dec.pending == 0 and not dec.needs_score(FrameRecord(0, 1e9, BLANK))
    assert dec.stats() == {"mode": "triggered", "pending": 0, "rejected": 0, "decided": 2, "no_box": 0}


def test_triggered_from_threads_bounded_and_flushed(caplog: pytest.LogCaptureFixture) -> None:
    dec = TriggeredDecider(DecisionConfig(mode="triggered", trigger_frames=2), LABELS, 0.5, "m", max_pending=50)
    threads = [threading.Thread(target=lambda k=k: [dec.trigger(f"P{k}-{j}", at=0.0) for j in range(10)]) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert dec.pending == 40
    with caplog.at_level(logging.ERROR, logger="edge.judge.decision"):
        for j in range(12):
            dec.trigger(f"X{j}", at=0.0)
    assert dec.rejected == 2 and "REFUSED" in caplog.text  # never silently lost
    ids = []
    for i in range(100):  # 50 triggers x 2 frames
        d = dec.update(FrameRecord(i, 1.0 + i, BLANK, 0.1))
        if d is not None:
            ids.append(d.part_id)
    assert len(ids) == 50 and len(set(ids)) == 50
    # End of stream with one trigger half-served and one not served at all.
    dec.trigger("LAST-1", at=0.0)
    dec.trigger("LAST-2", at=0.0)
    assert dec.update(FrameRecord(500, 600.0, BLANK, 0.8)) is None
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edge.judge.decision"):
        d = dec.flush()
    assert d is not None and d.part_id == "LAST-1" and d.frame_count == 1 and d.is_defect
    assert "LAST-2" in caplog.text and "no model decision" in caplog.text
    assert dec.flush() is None


def nobox(i: int, t: float, view: str | None = None) -> FrameRecord:
    return FrameRecord(i, t, BLANK, view=view, no_box=True)


def test_triggered_no_box_closes_the_part_without_classifying(caplog: pytest.LogCaptureFixture) -> None:
    """Frames without a box never count as scores; a part that shows no box is closed with no decision."""
    cfg = DecisionConfig(mode="triggered", trigger_frames=2, trigger_no_box_frames=3)
    dec = TriggeredDecider(cfg, LABELS, 0.5, "m")
    assert dec.update(nobox(0, 1.0)) is None  # no trigger waiting: nothing to close
    dec.trigger("EMPTY", at=10.0)
    dec.trigger("LATE", at=10.0)
    assert dec.update(nobox(1, 9.0)) is None  # captured before the trigger: ignored
    assert [dec.update(nobox(i, 11.0 + i)) for i in range(2)] == [None, None]
    assert dec.update(FrameRecord(5, 12.5, BLANK, None)) is None
    with caplog.at_level(logging.WARNING, logger="edge.judge.decision"):
        assert dec.update(nobox(6, 13.0)) is None  # the third frame without a box closes the part, no decision
    assert "part EMPTY: no box found in 3 frames" in caplog.text
    assert dec.pending == 1 and dec.no_box_parts == 1 and dec.decided == 0 and dec.stats()["no_box"] == 1
    # the next part: a box in one frame, then it leaves: decided on the frame it had, at the third no-box frame
    assert dec.update(FrameRecord(7, 14.0, BLANK, 0.9)) is None
    assert [dec.update(nobox(i, 15.0 + i)) for i in range(2)] == [None, None]
    d = dec.update(nobox(10, 17.0))
    assert d is not None and d.part_id == "LATE" and d.frame_count == 1 and d.is_defect
    assert d.evidence is not None and d.evidence.frames == [7] and d.representative is not None
    assert d.representative.index == 7
    assert dec.pending == 0


def test_multi_view_decider_fuses_the_views_of_each_part() -> None:
    """``MultiViewDecider`` is a Decider: records go to ``update`` with their view; the fused decision carries
    one evidence entry per view that voted, and the representative view's evidence as its own."""
    from edge.judge.decision import MultiViewDecider
    from edge.state import Decider

    cfg = DecisionConfig(mode="triggered", trigger_frames=2, trigger_no_box_frames=2, fusion="max")
    dec = MultiViewDecider(cfg, ["top", "side"], LABELS, 0.5, "m")
    as_protocol: Decider = dec  # mypy checks that it implements the protocol
    assert as_protocol.box_in_progress is False
    assert dec.trigger("A", at=1.0) and dec.trigger("B", at=1.0)
    outs = []
    for i, (t, s) in enumerate([(0.2, 0.7), (0.3, 0.9)]):
        for v, sc in (("top", t), ("side", s)):
            rec = FrameRecord(i, 2.0 + i, BLANK, sc, view=v)
            assert dec.needs_score(rec)
            outs.append(dec.update(rec))
    assert outs[:3] == [None, None, None]  # top has decided A, side not yet
    fused = outs[3]
    assert fused is not None and fused.part_id == "A" and fused.fusion == "max"
    assert fused.score == pytest.approx(0.8) and fused.is_defect and fused.frame_count == 4
    assert fused.views["top"]["score"] == pytest.approx(0.25) and fused.views["side"]["score"] == pytest.approx(0.8)
    assert fused.view_evidence is not None and set(fused.view_evidence) == {"top", "side"}
    assert fused.view_evidence["top"].scores == pytest.approx([0.2, 0.3])
    # the representative view: its own verdict is the part's, its score nearest the fused score: side
    assert fused.evidence is fused.view_evidence["side"] and fused.representative.score == pytest.approx(0.9)
    ev = fused.to_event("l", "c")
    assert ev["views"]["side"]["no_box"] is False and ev["fusion"] == "max"
    assert ev["views"]["top"]["decided_on"]["frames"] == [0, 1] and ev["decided_on"]["representative_frame"] == 1
    # part B: the side view sees no box, so only top votes
    assert dec.update(nobox(9, 5.0, "side")) is None and dec.update(nobox(10, 5.1, "side")) is None
    got = [dec.update(FrameRecord(11 + i, 6.0, BLANK, 0.1, view="top")) for i in range(2)]
    fused = got[1]
    assert fused is not None and fused.part_id == "B" and fused.score == pytest.approx(0.1) and not fused.is_defect
    assert fused.views["side"] == {"score": None, "no_box": True, "frame_count": 0, "first_frame": None,
                                   "last_frame": None}
    assert fused.view_evidence is not None and set(fused.view_evidence) == {"top"}
    # a part no view saw: no decision
    dec.trigger("C", at=7.0)
    for v in ("top", "side"):
        assert dec.update(nobox(20, 8.0, v)) is None
        assert dec.update(nobox(21, 8.1, v)) is None
    assert dec.no_box_parts == 1 and dec.decided == 2
    # the model's threshold and labels follow a reload into every view
    dec.threshold, dec.labels = 0.9, ("a", "b")
    assert dec.view("top").threshold == 0.9 and dec.view("side").labels == ("a", "b")


def test_the_representative_gives_the_decisions_verdict() -> None:
    """The representative rule (edge/judge/records.py): of the frames used whose own score gives the decision's verdict,
    the one nearest the aggregate, earliest on ties."""
    from edge.judge.records import make_evidence, nearest_on_side

    recs = [FrameRecord(i, float(i), BLANK, s) for i, s in enumerate([0.3, 0.62, 0.4, 0.7])]
    ev = make_evidence(recs, "mean", 0.5)  # mean 0.505: a defect; 0.4 is nearer but says OK
    assert ev.score == pytest.approx(0.505) and ev.representative.index == 1
    assert make_evidence(recs, "mean", 0.6).representative.index == 2  # mean < 0.6: the nearest OK frame
    assert make_evidence(recs, "max", 0.5).representative.index == 3
    assert make_evidence(recs, "median", 0.5).representative.index == 1  # median 0.51
    assert nearest_on_side([0.2, 0.3], 0.25, 0.5) == 0  # tie: the earliest
    assert nearest_on_side([0.2, 0.3], 0.51, 0.5) == 1  # none on the defect side (noisy-or): the nearest


def test_score_at_the_threshold_is_a_defect() -> None:
    """The one decision rule is ``score >= threshold``: the threshold itself counts as a defect (evaluate picks
    the highest threshold that meets the recall target, so the boundary box is one it counted as caught)."""
    assert verdict(0.44, 0.44, LABELS) == ("defective", True)
    assert verdict(float(np.nextafter(0.44, 0.0)), 0.44, LABELS) == ("ok", False)
    assert verdict(0.0, 0.0, LABELS) == ("defective", True)  # threshold 0: every box is an event
