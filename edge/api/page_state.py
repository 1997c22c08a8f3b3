"""What the operator page holds beyond the daemon's own state: images of recent decisions and checks, the rates,
the live and result images drawn on request, and the helpers the page's routers share.

Cost to the inspection loop: the loop hands over references (``on_decision``: no copy, no encoding); the live
frame is drawn, scaled and encoded in the API thread on request, at most ``operator.frame_max_fps`` times a
second however many pages are open. docs/BENCHMARKS.md has the measurement.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from fastapi import HTTPException
from fastapi.responses import Response

from edge.judge.localize import Located, locate
from edge.learn.feedback import Collector, FeedbackStore, Quota, encode_jpeg
from edge.runtime.ratelimit import TokenBucket

if TYPE_CHECKING:
    from edge.api.state import ApiState
    from edge.config import Config
    from edge.runtime.metrics import Metrics

CHECKS_KEPT = 20
THUMB_WIDTH = 160
HOUR_S = 3600.0
MINUTE_S = 60.0  # the last-hour rate counts per minute: at most 60 buckets, however fast the line runs
FPS_WINDOW_S = 5.0
SUMMARY_TTL_S = 0.5


@dataclass
class Kept:
    """A decision or a manual check the page can still show and answer: the record and its images."""

    record: dict[str, Any]
    frame: np.ndarray | bytes | None
    crop: np.ndarray | bytes | None
    thumb: bytes | None = None
    seen: bytes | None = None  # manual checks: the model's input image


@dataclass
class _Minute:
    """Decisions of one minute (minute number = epoch seconds // 60), for the last-hour rate."""

    minute: int
    boxes: int = 0
    defects: int = 0


def _rate(defects: int, boxes: int) -> float | None:
    return round(defects / boxes, 4) if boxes else None


class OperatorState:
    """What the page shows beyond the daemon's own state: images of recent decisions, rates, checks, labels."""

    def __init__(self, cfg: Config, metrics: Metrics, clock: Callable[[], float] = time.time) -> None:
        oc = cfg.operator
        self._clock = clock
        self.cfg = cfg
        self.feedback = FeedbackStore(oc.feedback_dir, metrics.registry, Quota(
            oc.feedback_max_files, oc.feedback_max_bytes, oc.feedback_max_age_days * 86400.0))
        self.feedback.rate = TokenBucket(oc.feedback_per_minute)  # issue 24: answers and labels stored a minute
        self.collector = Collector(
            oc.feedback_dir, oc.collect_every, oc.collect_max_files, oc.collect_max_age_days, oc.collect, metrics.registry
        )
        self._lock = threading.Lock()
        self._recent: OrderedDict[str, Kept] = OrderedDict()  # event_id -> images, newest last
        self._checks: OrderedDict[str, Kept] = OrderedDict()
        self._last_n: deque[bool] = deque(maxlen=oc.rate_window)
        # the decisions of the current minute and the 59 before it: bounded, unlike one entry
        # per decision (a soak at ~175 decisions a minute kept ~10,000 of those, ~1 MB, and copied them per read)
        self._hour: deque[_Minute] = deque()
        self._answered: dict[str, str] = {}  # decision/check id -> class of the latest answer
        self._frame_lock = threading.Lock()
        self._frame_cache: tuple[Any, float, bytes] | None = None  # (key, drawn at, jpeg)
        self._result_cache: tuple[str, bytes] | None = None  # (event id, jpeg) of the result tile
        self.frames_drawn = 0
        self._fps_samples: deque[tuple[float, int]] = deque()  # (monotonic time, frames) seen by /ui/summary
        self._summary_lock = threading.Lock()
        self._summary: tuple[float, dict[str, Any]] | None = None  # (built at, summary) shared by all pages

    # -- the inspection loop's side (main thread; O(1), no copies) -------------------------------------------
    def on_decision(self, event: dict[str, Any], frame: np.ndarray | None, crop: np.ndarray | None) -> None:
        minute = int(self._clock() // MINUTE_S)
        with self._lock:
            self._recent[event["event_id"]] = Kept(event, frame, crop)
            while len(self._recent) > self.cfg.operator.recent_images:
                self._recent.popitem(last=False)
            self._last_n.append(bool(event["is_defect"]))
            if not self._hour or self._hour[-1].minute != minute:
                self._hour.append(_Minute(minute))
            self._hour[-1].boxes += 1
            self._hour[-1].defects += bool(event["is_defect"])
            self._drop_old_minutes(minute)
        self.invalidate()  # the page's counters show this decision at its next poll
        if self.collector.enabled:
            self.collector.offer(event, crop)

    def _drop_old_minutes(self, minute: int) -> None:
        """Keep the current minute and the 59 before it (the caller holds the lock)."""
        while self._hour and self._hour[0].minute <= minute - int(HOUR_S // MINUTE_S):
            self._hour.popleft()

    # -- read side (API threads) ------------------------------------------------------------------------------
    def rates(self) -> dict[str, Any]:
        """The rate over the last ``rate_window`` decisions and over the last hour (the current minute and the 59
        whole minutes before it)."""
        minute = int(self._clock() // MINUTE_S)
        with self._lock:
            last = list(self._last_n)
            self._drop_old_minutes(minute)
            boxes = sum(m.boxes for m in self._hour)
            defects = sum(m.defects for m in self._hour)
        return {
            "last_n": {"n": self._last_n.maxlen, "boxes": len(last), "defects": sum(last),
                       "rate": _rate(sum(last), len(last))},
            "last_hour": {"boxes": boxes, "defects": defects, "rate": _rate(defects, boxes)},
        }

    def summary(self, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """One summary serves every open page for SUMMARY_TTL_S, so its cost is bounded however many are open."""
        with self._summary_lock:
            cached = self._summary
            if cached is not None and time.monotonic() - cached[0] < SUMMARY_TTL_S:
                return cached[1]
            out = build()
            self._summary = (time.monotonic(), out)
            return out

    def invalidate(self) -> None:
        """After a decision or an action: the next summary is fresh."""
        self._summary = None

    def fps(self, frames: int) -> float | None:
        """Frames per second over the last ~5 s of summary requests (the loop's own figure is updated slowly)."""
        now = time.monotonic()
        with self._lock:
            self._fps_samples.append((now, frames))
            while len(self._fps_samples) > 2 and now - self._fps_samples[1][0] >= FPS_WINDOW_S:
                self._fps_samples.popleft()
            t0, n0 = self._fps_samples[0]
        return round((frames - n0) / (now - t0), 2) if now - t0 >= 0.5 else None

    def kept(self, target: str, id_: str) -> Kept | None:
        with self._lock:
            return (self._recent if target == "decision" else self._checks).get(id_)

    def has_images(self, event_id: str) -> bool:
        with self._lock:
            return event_id in self._recent

    def add_check(self, record: dict[str, Any], frame: np.ndarray | bytes | None, crop: np.ndarray | bytes) -> None:
        with self._lock:
            self._checks[record["check_id"]] = Kept(record, frame, crop)
            while len(self._checks) > CHECKS_KEPT:
                self._checks.popitem(last=False)

    def answered(self, id_: str) -> str | None:
        with self._lock:
            return self._answered.get(id_)

    def set_answered(self, id_: str, cls: str) -> None:
        with self._lock:
            self._answered[id_] = cls
            if len(self._answered) > 10_000:
                self._answered.pop(next(iter(self._answered)))

    def live_frame(self, state: ApiState) -> bytes | None:
        """The latest frame drawn, scaled and encoded; shared by all viewers for 1/frame_max_fps seconds."""
        latest = state.latest
        frame = latest.frame
        if frame is None:
            return None
        box = getattr(latest, "box", None)
        inspecting = bool(getattr(latest, "inspecting", False))
        key = (frame.index, inspecting, box)
        oc = self.cfg.operator
        with self._frame_lock:
            cached = self._frame_cache
            if cached is not None and (cached[0] == key or time.monotonic() - cached[1] < 1.0 / oc.frame_max_fps):
                return cached[2]
            # the live view never shows a verdict: the one it had would be the previous box's (the result tile has it)
            jpeg = encode_jpeg(self._draw(frame, None, box, INSPECTING if inspecting else None), 80)
            self._frame_cache = (key, time.monotonic(), jpeg)
            self.frames_drawn += 1
            return jpeg

    def result_frame(self, state: ApiState) -> bytes | None:
        """The result tile: the last decided box's verdict drawn on its representative frame (encoded once)."""
        res = getattr(state.latest, "result", None)
        if res is None or res.frame is None:
            return None
        with self._frame_lock:
            cached = self._result_cache
            if cached is not None and cached[0] == res.event_id:
                return cached[1]
        shown = _Shown(res.frame, res.captured_at or time.time())
        jpeg = encode_jpeg(self._draw(shown, (res.label, res.score, res.is_defect), res.box), 85)
        with self._frame_lock:
            self._result_cache = (res.event_id, jpeg)
        return jpeg

    def _draw(self, frame: Any, verdict: tuple[str, float | None, bool] | None, box: Any,
              caption: str | None = None) -> np.ndarray:
        from edge.capture.roi import draw_overlay

        label, score, is_defect = verdict or (None, None, None)
        try:
            image = draw_overlay(frame.image, self.cfg.roi, label, score, is_defect, frame.captured_at)
        except ValueError:  # the ROI lies outside this frame: show the frame as it is
            image = frame.image
        if caption is not None:
            image = _caption(image if image is not frame.image else image.copy(), caption)
        if box is not None:
            try:
                x0, y0, x1, y1 = (int(v) for v in box)
                if image is frame.image:
                    image = image.copy()
                cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), (255, 160, 0), max(2, image.shape[1] // 400))
            except (TypeError, ValueError):
                pass
        w = self.cfg.operator.frame_width
        if image.shape[1] > w:
            image = cv2.resize(image, (w, round(image.shape[0] * w / image.shape[1])), interpolation=cv2.INTER_AREA)
        return image


INSPECTING = "INSPECTING..."


@dataclass
class _Shown:
    """A frame to draw on: the image and its capture time (what ``_draw`` reads of a capture Frame)."""

    image: np.ndarray
    captured_at: float


def _caption(image: np.ndarray, text: str) -> np.ndarray:
    """``text`` in a yellow label at the top left of ``image`` (drawn in place)."""
    scale = max(0.5, image.shape[1] / 1280)
    thick = max(2, round(3 * scale))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    cv2.rectangle(image, (0, 0), (tw + 12, th + base + 10), (0, 200, 255), -1)
    cv2.putText(image, text, (6, th + 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return image


def to_jpeg(data: np.ndarray | bytes | None, max_width: int | None = None) -> bytes | None:
    if data is None:
        return None
    if isinstance(data, bytes):
        if max_width is None:
            return data
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            return None
    else:
        image = data
    if max_width is not None and image.shape[1] > max_width:
        image = cv2.resize(image, (max_width, max(1, round(image.shape[0] * max_width / image.shape[1]))),
                           interpolation=cv2.INTER_AREA)
    return encode_jpeg(image, 85)


def result_doc(res: Any) -> dict[str, Any] | None:
    if res is None:
        return None
    return {"event_id": res.event_id, "label": res.label, "score": res.score, "is_defect": res.is_defect,
            "threshold": res.threshold, "frame": res.frame_index, "view": res.view, "decided_at": res.decided_at}


def box_in(roi: np.ndarray, model: Any) -> Located:
    """Whether a box is in ``roi``, by the localiser (edge/judge/localize.py) without a reference image: the model's own
    crop method, or ``auto`` for a model that takes the whole ROI (it still gets the whole ROI)."""
    spec = model.classifier.metadata.crop
    if spec.method in ("none", "background"):
        spec = spec.model_copy(update={"method": "auto" if spec.method == "none" else "salient"})
    return locate(roi, spec, None)


def jpeg_response(data: bytes) -> Response:
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


def model_or_503(state: ApiState) -> Any:
    model = state.models.get()
    if model is None:
        raise HTTPException(503, "no model loaded")
    return model



def model_labels(model: Any) -> tuple[str, str]:
    meta = model.classifier.metadata
    return meta.negative_class, meta.positive_class



def find_event(state: ApiState, event_id: str) -> dict[str, Any] | None:
    for e in state.events.latest(state.events.maxlen or 1000):
        if e["event_id"] == event_id:
            return e
    return None



def decision_images(state: ApiState, op: OperatorState, event_id: str) -> Kept:
    """A recent decision's record and images: kept by the page, else read back from its evidence files."""
    kept = op.kept("decision", event_id)
    if kept is not None:
        return kept
    event = find_event(state, event_id)
    if event is None:
        raise HTTPException(404, f"no recent decision {event_id}")
    ev = event.get("evidence") or {}

    def read(p: str | None) -> bytes | None:
        try:
            return Path(p).read_bytes() if p else None
        except OSError:
            return None

    kept = Kept(event, read(ev.get("frame")), read(ev.get("crop")))
    if kept.crop is None and kept.frame is None:
        raise HTTPException(
            404, f"the images of decision {event_id} are no longer kept (operator.recent_images) "
            "and it has no evidence files",
        )
    return kept



def image_of(kept: Kept, which: str) -> Response:
    if which == "frame":
        data = to_jpeg(kept.frame)
    elif which == "crop":
        data = to_jpeg(kept.crop)
    elif which == "seen":
        data = kept.seen or to_jpeg(kept.crop)
    else:
        if kept.thumb is None:
            kept.thumb = to_jpeg(kept.crop if kept.crop is not None else kept.frame, THUMB_WIDTH)
        data = kept.thumb
    if data is None:
        raise HTTPException(404, f"no {which} image")
    return jpeg_response(data)
