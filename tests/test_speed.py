"""The fast frame path decides like the reference path, idles cheaply, publishes off the loop; `bench pipeline` runs.

No timing is asserted here (speed lives in `boxinspect bench pipeline` and docs/BENCHMARKS.md): these tests check
that the speed work did not change WHAT is decided, and that the benchmark measures what it says.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.capture.frames import Capture
from edge.config import PresenceConfig, SourceConfig, parse_config
from edge.daemon import EXIT_OK, Daemon, load_model
from edge.judge.decision import ForegroundDetector
from tests.helpers import RecordingSink, ReplayCapture, fake_model, video_frames

# The presence path before issue 13 (INTER_AREA, every frame measured): kept selectable as the reference.
REFERENCE = {"fg_resize": "area", "fg_width": 160, "idle_skip": False}


def _decisions(tmp_path: Path, model: Path, video: Path, gt: dict[str, Any], presence: dict[str, Any],
               source: dict[str, Any] | None = None, idle_as_live: bool = False) -> list[dict]:
    """The real daemon (real model, real capture at pace fast, real evidence store) over the whole video.
    ``idle_as_live``: the capture decodes the file as a live camera would be at the idle rate (lockstep)."""
    return list(reversed(_daemon(tmp_path, model, video, gt, presence, source, idle_as_live).events.latest(10_000)))


def _daemon(tmp_path: Path, model: Path, video: Path, gt: dict[str, Any], presence: dict[str, Any],
            source: dict[str, Any] | None = None, idle_as_live: bool = False) -> Daemon:
    """``_decisions``' daemon after its run (its capture's counters, its events)."""
    data = {
        "model": {"path": str(model), "num_threads": 1},
        "source": {"uri": str(video), "pace": "fast", "exit_on_end": True, **(source or {})},
        "roi": {k: gt["roi"][k] for k in ("x", "y", "width", "height")},
        "decision": {"presence": presence},
        "mqtt": {"enabled": False, "outbox_path": str(tmp_path / "outbox.sqlite3")},
        "evidence": {"dir": str(tmp_path / "evidence")},
        "api": {"enabled": False},
        "reject": {"deadline_ms": 60000},  # a loaded CI machine must not turn a slow decision into a timeout
    }
    cfg = parse_config(data, environ={})
    d = Daemon.from_config(cfg, load_model(cfg, cfg.model.path))
    if idle_as_live:
        assert isinstance(d.capture, Capture)
        d.capture.idle_in_fast_pace = True
    assert d.run() == EXIT_OK, d.stop_reason
    return d


def _per_box(events: list[dict], gt: dict[str, Any]) -> list[list[str]]:
    """For each ground-truth box, the labels of the decisions whose frames overlap it."""
    return [[e["label"] for e in events if e["first_frame"] <= b["exit_frame"] and b["enter_frame"] <= e["last_frame"]]
            for b in gt["boxes"]]


def test_fast_frame_path_decides_the_synth_video_like_the_reference_path(tmp_path, int8_model, synth_video):
    video, gt = synth_video
    ref = _decisions(tmp_path / "ref", int8_model, video, gt, REFERENCE)
    fast = _decisions(tmp_path / "fast", int8_model, video, gt, {})
    assert PresenceConfig().fg_resize != "area" and PresenceConfig().idle_skip  # the defaults are the fast path
    assert PresenceConfig().fg_width < 160
    # one decision per box, the same label for every box, and (as before) every box right
    truth = [["defective" if b["defective"] else "ok"] for b in gt["boxes"]]
    assert _per_box(ref, gt) == truth
    assert _per_box(fast, gt) == _per_box(ref, gt)
    # the box passages agree to a frame or two and the scores closely (the inside-frames may shift by one)
    for a, b in zip(fast, ref, strict=True):
        assert abs(a["first_frame"] - b["first_frame"]) <= 2 and abs(a["last_frame"] - b["last_frame"]) <= 2
        assert a["score"] == pytest.approx(b["score"], abs=0.05)
    # defects carry their evidence, written by the publisher thread before the event
    for e in fast:
        if e["is_defect"]:
            assert e["evidence"] and Path(e["evidence"]["frame"]).is_file()


def test_idle_rate_skips_decoding_on_an_empty_belt_and_decides_every_box_the_same(tmp_path, int8_model, synth_video):
    """source.idle_fps: on an empty belt the capture decodes every 3rd frame (15 fps video, idle_fps 5); each box
    arrives during such a stretch (idle_after_s 0.4 s: the gaps between the boxes are 0.5-1.4 s), is still
    found, the capture goes back to every frame for it, and it gets the decision it gets with every frame
    decoded. The file is decoded as a camera that keeps up would be (lockstep, so the run is repeatable)."""
    video, gt = synth_video
    every = _decisions(tmp_path / "every", int8_model, video, gt, {}, {"idle_fps": 0})
    d = _daemon(tmp_path / "idle", int8_model, video, gt, {}, {"idle_fps": 5, "idle_after_s": 0.4}, idle_as_live=True)
    idle = list(reversed(d.events.latest(10_000)))
    cap = d.capture
    assert isinstance(cap, Capture)
    n_frames = gt["frame_count"]
    # the idle rate ran before every box (two frames in three of the empty stretches after the first 0.4 s)
    assert cap.idle_periods >= len(gt["boxes"])
    assert cap.idle_skipped > 60, cap.idle_skipped
    assert d.loop_counters()["frames"] + cap.idle_skipped == cap.stats()["frames"] == n_frames
    # every box: one decision, the same label; the passage starts at most 2 frames later (the frames grabbed
    # before the box was seen) and, back at every frame, ends on the same frame with the same frames scored
    assert _per_box(idle, gt) == _per_box(every, gt) == [["defective" if b["defective"] else "ok"] for b in gt["boxes"]]
    for a, b in zip(idle, every, strict=True):
        assert abs(a["first_frame"] - b["first_frame"]) <= 2
        assert abs(a["last_frame"] - b["last_frame"]) <= 1
        assert abs(a["frame_count"] - b["frame_count"]) <= 1
        assert a["score"] == pytest.approx(b["score"], abs=0.05)


def test_idle_rate_in_the_capture_decodes_every_nth_frame_and_every_frame_once_the_roi_is_busy(synth_video):
    """The reader alone: after idle_after_s of empty reports it hands out every 3rd frame (15 fps, idle_fps 5) with
    the frames between counted but not decoded; the first report of something in the ROI brings back every
    frame, the very next one included."""
    video, _ = synth_video
    cfg = SourceConfig(uri=str(video), pace="fast", idle_fps=5, idle_after_s=1.0)
    cap = Capture(cfg)
    cap.idle_in_fast_pace = True
    assert cap.enable_idle_rate()
    busy = set(range(60, 70))  # the loop sees "something in the ROI" on these frames
    seen: list[int] = []
    with cap:
        while len(seen) < 200 and (f := cap.read(timeout=10)) is not None:
            seen.append(f.index)
            cap.presence(f.index, empty=f.index not in busy)
            if f.index >= 150:
                break
    # every frame until the belt has been empty for 1 s (frames 0-15), then every 3rd
    assert seen[:16] == list(range(16))
    assert seen[16:20] == [18, 21, 24, 27]
    # the box is seen on the first frame decoded from 60 on (at most 2 frames late); from there every frame,
    # until 1 s (15 frames) after the last busy one (69); then every 3rd again
    b0 = next(i for i in seen if i >= 60)
    assert b0 <= 62 and seen[seen.index(b0) - 1] == b0 - 3
    assert seen[seen.index(b0):seen.index(85) + 1] == list(range(b0, 86))
    rest = seen[seen.index(85):]
    assert [b - a for a, b in zip(rest, rest[1:], strict=False)] == [3] * (len(rest) - 1)
    assert cap.idle_skipped == seen[-1] + 1 - len(seen)
    assert cap.idle_periods == 2
    # idle_fps 0: every frame, no lockstep needed
    off = Capture(SourceConfig(uri=str(video), pace="realtime", idle_fps=0))
    assert not off.enable_idle_rate()
    # pace fast without idle_in_fast_pace: benches and replays keep every frame
    assert not Capture(SourceConfig(uri=str(video), pace="fast")).enable_idle_rate()


def _still_belt(first: np.ndarray, n: int, noise: float, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = first.astype(np.float32)
    return [np.clip(base + rng.normal(0, noise, base.shape), 0, 255).astype(np.uint8) for _ in range(n)]


def test_idle_skip_measures_a_still_empty_belt_once_and_wakes_up_for_a_box(synth_video):
    video, gt = synth_video
    r = gt["roi"]
    first = next(video_frames(video, 1))[r["y"]:r["y"] + r["height"], r["x"]:r["x"] + r["width"]]
    cfg = PresenceConfig(learning_frames=10)
    fg = ForegroundDetector(cfg)
    for roi in _still_belt(first, 60, noise=3.0):
        res = fg.measure(roi)
    assert not res.learning and res.fraction == 0.0
    assert fg.skipped >= 40  # after learning, an unchanged empty belt is not measured again
    # a box (a bright rectangle) entering at the ROI's edge is measured at once and found
    with_box = first.copy()
    with_box[60:240, :40] = (200, 200, 220)
    skipped = fg.skipped
    res = fg.measure(with_box)
    assert fg.skipped == skipped and res.fraction > 0.05
    # the reference path never skips
    ref = ForegroundDetector(PresenceConfig(learning_frames=10, idle_skip=False))
    for roi in _still_belt(first, 30, noise=3.0):
        ref.measure(roi)
    assert ref.skipped == 0


def test_decisions_are_published_in_order_off_the_loop_and_all_before_exit(tmp_path, synth_video):
    """The publisher thread: every decision reaches the sink in decision order, defects too, also when the sink
    is slow (it must not hold up the loop's frames), and run() returns only once all are published."""
    from tests.test_loop import ground_truth_scores, loop_cfg

    video, gt = synth_video
    boxes = gt["boxes"][:4]
    frames = boxes[-1]["exit_frame"] + 20
    capture = ReplayCapture(video_frames(video, frames))
    slow = threading.Event()

    class SlowSink(RecordingSink):
        def publish_defect(self, event: dict[str, Any]) -> int | None:
            slow.wait(0.3)  # a slow disk (fsync): the loop goes on meanwhile
            return super().publish_defect(event)

    sink = SlowSink()
    cfg = loop_cfg(tmp_path, gt)
    d = Daemon(cfg, fake_model(ground_truth_scores(capture, gt)), capture=capture, sink=sink)
    loop_threads: set[str] = set()
    real = sink.publish_result

    def record(event: dict[str, Any]) -> bool:
        loop_threads.add(threading.current_thread().name)
        return real(event)

    sink.publish_result = record  # type: ignore[method-assign]
    assert d.run() == EXIT_OK
    assert loop_threads == {"publisher"}
    assert [e["first_frame"] for e in sink.results] == sorted(e["first_frame"] for e in sink.results)
    assert len(sink.results) == len(boxes)
    assert [e["event_id"] for e in sink.defects] == [e["event_id"] for e in sink.results if e["is_defect"]]
    assert len(sink.defects) == sum(b["defective"] for b in boxes) > 0


def test_bench_pipeline_measures_every_stage_and_the_events_to_their_puback(tmp_path, int8_model, synth_video,
                                                                          mosquitto):
    from edge.bench import bench_pipeline, format_pipeline
    from edge.config import RoiConfig

    video, gt = synth_video
    roi = RoiConfig(**{k: gt["roi"][k] for k in ("x", "y", "width", "height")})
    res = bench_pipeline(str(video), str(int8_model), threads=1, duration=15.0, roi=roi,
                         broker=(mosquitto.host, mosquitto.port), workdir=tmp_path)
    st, d = res["stages"], res["daemon"]
    for name in ("decode", "invoke", "presence", "model_input"):
        assert st[name]["n"] > 10 and st[name]["fps"] > 0 and st[name]["p50_ms"] <= st[name]["p99_ms"]
    assert d["frames"] > 50 and d["throughput_fps"] > 0 and 0 < d["scored_share"] < 1
    assert d["process"]["exit_code"] == 0 and d["max_rss_mb"] > 20 and d["cpu_percent_of_a_core"] > 0
    # every defect decided in the window was acknowledged by the broker, and its latency split adds up
    assert d["defects"] > 0 and d["defects_acked"] == d["defects"]
    assert d["e2e_read_to_puback"]["n"] == d["defects"]
    assert d["e2e_parts"]["store_to_puback"]["n"] == d["defects"]
    assert d["decision_delay_gap_frames"]["n"] == d["decisions"] and d["decision_delay_gap_frames"]["p50_ms"] > 0
    assert res["ratios"]["throughput_over_limit"] > 0 and res["ratios"]["e2e_p99_over_invoke_p99"] > 0
    assert "e2e read -> PUBACK" in format_pipeline(res)
    json.dumps(res)  # the JSON a device sends us


@pytest.mark.slow  # runs the daemon as its own process: the full lane
def test_bench_idle_measures_the_daemon_on_a_still_belt_at_the_idle_rate(tiny_model, synth_video, mosquitto):
    """`bench idle`: the daemon (its own process, realtime pace) on the still-belt video; the CPU figure comes with
    the camera's counters over the same window, which show the idle rate at work (frames grabbed, not decoded)."""
    from edge.bench import bench_idle
    from edge.config import RoiConfig

    video, gt = synth_video
    roi = RoiConfig(**{k: gt["roi"][k] for k in ("x", "y", "width", "height")})
    res = bench_idle(str(video), str(tiny_model), duration=4.0, roi=roi, broker=(mosquitto.host, mosquitto.port),
                     overrides={"source.idle_after_s": 0.0, "decision.presence.learning_frames": 5})
    assert res["daemon_errors"] == [] and res["cpu_percent_of_a_core"] > 0
    cam = res["camera"]
    assert cam["frames"] > 10 and cam["idle_at_end"]
    assert 0 < cam["decoded"] < cam["frames"] and cam["grabbed_not_decoded"] > cam["frames"] // 3
    json.dumps(res)


def test_bench_pipeline_cli_refuses_missing_arguments(capsys):
    import argparse

    from boxinspect.cli import build_parser

    parser: argparse.ArgumentParser = build_parser()
    args = parser.parse_args(["bench", "pipeline", "--source", "x.mp4"])
    assert args.func(args) == 2
    assert "--model" in capsys.readouterr().err


def test_shrunk_roi_buffers_are_reused():
    fg = ForegroundDetector(PresenceConfig(learning_frames=0))
    roi = np.zeros((300, 300, 3), np.uint8)
    first = fg._shrink(roi)
    assert fg._shrink(roi + 1) is first and first.shape == (80, 80, 3)
    assert cv2.countNonZero(first[..., 0]) == first.shape[0] * first.shape[1]


def test_outbox_ack_is_not_fsynced_but_every_put_stays_durable(tmp_path):
    """A PUBACK's delete must not queue a waiting defect event behind an fsync; puts keep synchronous=FULL."""
    from edge.deliver.outbox import Outbox

    ob = Outbox(tmp_path / "outbox.sqlite3")
    try:
        seqs = [ob.put("t/defect", b'{"a": 1}', f"e{i}") for i in range(3)]
        assert ob.ack_many(seqs[:2]) == 2 and ob.depth() == 1
        assert ob._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again for the next put
        assert [r.seq for r in ob.pending()] == seqs[2:]
    finally:
        ob.close()
    reopened = Outbox(tmp_path / "outbox.sqlite3")
    try:
        assert [r.event_id for r in reopened.pending()] == ["e2"]
    finally:
        reopened.close()
