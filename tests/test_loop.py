"""The inspection loop in-process: ``Daemon`` with injected parts (tests/helpers.py): real frames from the
generated conveyor video, the real decider and evidence store, a score function instead of the model, a
sink that records. Covers decisions, reload, stop and the error policy (a defect is never dropped)."""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.config import parse_config
from edge.daemon import EXIT_OK, Daemon
from edge.judge.classifier import ModelError
from tests.helpers import RecordingSink, ReplayCapture, fake_model, video_frames, wait_for

FIRST_BOXES = 5  # replay the video up to the end of this many boxes: enough to show the loop, quick to run


def loop_cfg(tmp_path: Path, gt: dict[str, Any], **over: Any):
    cfg: dict[str, Any] = {
        "line": "t",
        "camera": "loop",
        "roi": {k: gt["roi"][k] for k in ("x", "y", "width", "height")},
        "model": {"path": str(tmp_path / "not-loaded.tflite")},
        "mqtt": {"publish_results": True, "outbox_path": str(tmp_path / "outbox.sqlite3")},
        "api": {"enabled": False},
        "evidence": {"dir": str(tmp_path / "evidence"), "ok_sample_rate": 0.0},
        "shutdown_timeout_s": 5,
        # these tests are about the loop, not the pusher: a loaded CI machine must not turn a slow decision
        # into a fail-safe timeout (tests/test_plant*.py test the deadline)
        "reject": {"deadline_ms": 60000},
    }
    for key, value in over.items():
        cfg.setdefault(key, {}).update(value) if isinstance(value, dict) else cfg.__setitem__(key, value)
    return parse_config(cfg)


def ground_truth_scores(capture: ReplayCapture, gt: dict[str, Any]):
    """The score function of a perfect model: 0.9 while a defective box is in view, else 0.1."""
    defective = [(b["enter_frame"], b["exit_frame"]) for b in gt["boxes"] if b["defective"]]

    def score(roi: np.ndarray) -> float:
        i = capture.current
        return 0.9 if any(a <= i <= b for a, b in defective) else 0.1

    return score


def run_in_thread(d: Daemon) -> tuple[threading.Thread, list[int]]:
    code: list[int] = []
    t = threading.Thread(target=lambda: code.append(d.run()), name="daemon-run", daemon=True)
    t.start()
    return t, code


def overlapping_box(event: dict[str, Any], gt: dict[str, Any]) -> dict[str, Any]:
    hits = [b for b in gt["boxes"] if b["enter_frame"] <= event["last_frame"] and event["first_frame"] <= b["exit_frame"]]
    assert len(hits) == 1, (event["first_frame"], event["last_frame"], hits)
    return hits[0]


def test_one_decision_per_box_and_every_defect_reaches_the_sink(tmp_path, synth_video):
    video, gt = synth_video
    boxes = gt["boxes"][:FIRST_BOXES]
    frames = boxes[-1]["exit_frame"] + 20
    capture = ReplayCapture(video_frames(video, frames))
    sink = RecordingSink()
    cfg = loop_cfg(tmp_path, gt)
    from edge.deliver.evidence import EvidenceStore

    d = Daemon(cfg, fake_model(ground_truth_scores(capture, gt)), capture=capture, sink=sink,
               evidence=EvidenceStore(cfg.evidence))
    assert d.run() == EXIT_OK
    assert d.stop_reason == "end of the source"
    assert capture.started and capture.stopped and sink.started and sink.stopped
    # one decision per box, in order, each matching its box; defects went through publish_defect
    assert len(sink.results) == len(boxes), [(e["first_frame"], e["last_frame"]) for e in sink.results]
    assert [overlapping_box(e, gt)["id"] for e in sink.results] == [b["id"] for b in boxes]
    assert [overlapping_box(e, gt)["id"] for e in sink.defects] == [b["id"] for b in boxes if b["defective"]]
    for e in sink.defects:
        assert e["is_defect"] and e["label"] == "defective" and e["model_id"] == "fake@000000000001"
        assert e["evidence"] and Path(e["evidence"]["frame"]).is_file()
    # the same decisions in /events, the metrics and the loop counters
    assert [e["event_id"] for e in d.events.latest(100)][::-1] == [e["event_id"] for e in sink.results]
    assert d.metrics.value(d.metrics.defects) == len(sink.defects)
    assert d.loop_counters()["frames"] == frames


def test_reload_swaps_model_and_threshold_between_frames_and_keeps_the_old_on_failure(tmp_path, synth_video):
    video, gt = synth_video
    # a camera that never runs dry (the frames cycle): the reloads between triggers take as long as they take
    capture = ReplayCapture(itertools.cycle(list(video_frames(video, 30))), end=False)
    sink = RecordingSink()
    models = {"m2.tflite": fake_model(lambda roi: 0.6, threshold=0.7, model_id="m2@000000000002")}
    for name in ("m2.tflite", "broken.tflite"):  # reload takes names of files inside model.dir
        (tmp_path / name).write_bytes(b"the loader is injected: not read")

    def loader(path):
        name = Path(path).name
        if name not in models:
            raise ModelError(f"{path}: sha256 mismatch")
        return models[name]

    cfg = loop_cfg(tmp_path, gt, decision={"mode": "triggered", "trigger_frames": 2})
    d = Daemon(cfg, fake_model(lambda roi: 0.6, threshold=0.5), capture=capture, sink=sink, loader=loader)
    t, code = run_in_thread(d)
    try:
        assert d.trigger("A")
        wait_for(lambda: len(sink.results) == 1, 20, "the decision for part A")
        result = d.reload("m2.tflite")
        assert result.ok and result.model_id == "m2@000000000002"
        assert d.trigger("B")
        wait_for(lambda: len(sink.results) == 2, 20, "the decision for part B")
        bad = d.reload("broken.tflite")
        assert not bad.ok and "sha256 mismatch" in (bad.reason or "") and bad.model_id == "m2@000000000002"
        outside = d.reload("../elsewhere.tflite")
        assert not outside.ok and outside.model_id == "m2@000000000002"
        assert d.trigger("C")
        wait_for(lambda: len(sink.results) == 3, 20, "the decision for part C")
    finally:
        d.stop_requested.set()
        t.join(20)
    assert code == [EXIT_OK]
    a, b, c = sink.results
    assert (a["part_id"], a["label"], a["threshold"], a["model_id"]) == ("A", "defective", 0.5, "fake@000000000001")
    assert (b["part_id"], b["label"], b["threshold"], b["model_id"]) == ("B", "ok", 0.7, "m2@000000000002")
    assert (c["part_id"], c["model_id"]) == ("C", "m2@000000000002")
    assert [e["part_id"] for e in sink.defects] == ["A"]
    assert d.metrics.value(d.metrics.reloads, outcome="ok") == 1
    assert d.metrics.value(d.metrics.reloads, outcome="load_failed") == 1
    assert d.metrics.value(d.metrics.reloads, outcome="refused") == 1
    assert [m["model_id"] for m in sink.models] == ["fake@000000000001", "m2@000000000002"]  # retained model topic


def test_stop_decides_the_box_still_in_view(tmp_path, synth_video):
    """SIGTERM (here: stop_requested) while a defective box is in view: the shutdown decides it."""
    video, gt = synth_video
    box = next(b for b in gt["boxes"] if b["defective"])
    capture = ReplayCapture(video_frames(video, box["full_end"]), end=False)  # the camera keeps running
    sink = RecordingSink()
    d = Daemon(loop_cfg(tmp_path, gt), fake_model(ground_truth_scores(capture, gt)), capture=capture, sink=sink)
    t, code = run_in_thread(d)
    wait_for(lambda: capture.current == box["full_end"] - 1, 60, "the box in view")
    wait_for(lambda: d.loop_counters()["frames"] == box["full_end"], 10, "the loop to take the last frame")
    d.stop_requested.set()
    t.join(20)
    assert code == [EXIT_OK] and d.stop_reason == "signal"
    assert [overlapping_box(e, gt)["id"] for e in sink.defects] == [box["id"]]
    assert capture.stopped and sink.stopped


def test_error_policy_a_defect_is_never_dropped(tmp_path, synth_video, caplog):
    """A crashing model on some frames, a broken result topic, an evidence store that cannot write and an
    outbox that fails once: the loop goes on, every defect is either in the sink or logged in full."""
    video, gt = synth_video
    boxes = gt["boxes"][:8]  # three defective among them
    defective = [b for b in boxes if b["defective"]]
    assert len(defective) >= 3
    capture = ReplayCapture(video_frames(video, boxes[-1]["exit_frame"] + 20))
    perfect = ground_truth_scores(capture, gt)
    crash_at = {boxes[0]["centre_frame"], defective[-1]["centre_frame"]}

    def flaky(roi: np.ndarray) -> float:
        if capture.current in crash_at:
            raise RuntimeError("invoke failed")
        return perfect(roi)

    sink = RecordingSink(fail_defects=1, fail_results=True)
    (tmp_path / "evidence").write_text("a file where the evidence directory should be")
    cfg = loop_cfg(tmp_path, gt)
    from edge.deliver.evidence import EvidenceStore

    evidence = EvidenceStore(cfg.evidence)
    d = Daemon(cfg, fake_model(flaky), capture=capture, sink=sink, evidence=evidence)
    with caplog.at_level("INFO"):
        assert d.run() == EXIT_OK
    assert d.loop_counters()["frame_errors"] == len(crash_at)
    assert evidence.errors >= 1 and evidence.saved == 0
    # the first defect could not be stored: it is counted and logged in full (never silently lost) ...
    logged = [r.getMessage().split("; the event: ", 1)[1] for r in caplog.records
              if r.getMessage().startswith("DEFECT EVENT LOST")]
    assert len(logged) == 1
    lost = json.loads(logged[0])
    assert d.metrics.value(d.metrics.events_lost, reason="error") == 1  # a loss, never counted as overflow
    assert d.metrics.value(d.metrics.events_dropped) == 0
    # ... and every other defect reached the sink
    ids = [overlapping_box(e, gt)["id"] for e in [lost, *sink.defects]]
    assert ids == [b["id"] for b in defective]
    assert len(d.events.latest(100)) == len(boxes)  # the broken result topic kept no decision out of /events


@pytest.mark.parametrize("mode", ["continuous", "triggered"])
def test_triggers_follow_the_mode(tmp_path, synth_video, mode):
    video, gt = synth_video
    sink = RecordingSink()
    capture = ReplayCapture([], end=False)
    cfg = loop_cfg(tmp_path, gt, decision={"mode": mode})
    d = Daemon(cfg, fake_model(lambda roi: 0.1), capture=capture, sink=sink)
    t, code = run_in_thread(d)
    try:
        wait_for(lambda: capture.started, 10, "the capture to start")
        assert d.trigger("P-1") is (mode == "triggered")
        assert (f"{cfg.topic_base}/trigger" in sink.subscriptions) is (mode == "triggered")
    finally:
        d.stop_requested.set()
        t.join(20)
    assert code == [EXIT_OK]
