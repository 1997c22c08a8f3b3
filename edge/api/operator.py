"""The operator page at ``/`` and its ``/ui/*`` endpoints: what a person at the line needs.

- Live: the current frame with the ROI; while a box is in it, "inspecting..." and the located box, never a verdict
  (``/ui/frame.jpg``). Beside it the result tile: the verdict drawn on the frame that decided the last box (its
  decision's representative record, ``/ui/result.jpg``). Camera, model, MQTT and outbox state with the
  ``/readyz`` reasons, counters (``/ui/summary``).
- Recent decisions with thumbnails; the full frame and the crop of each (``/ui/decisions``).
- Manual check of an uploaded image or of the current frame (``POST /ui/check``, ``POST /ui/check/current``).
- Feedback on a decision or a check (``POST /ui/feedback``): the crop goes to ``feedback/<class>/`` (edge/learn/feedback.py).
- Collection mode and the label queue (``POST /ui/collection``, ``/ui/queue``).

Read-only views are open (the API listens on 127.0.0.1 unless configured otherwise); every action needs the
API token when ``api.token`` is set. Every response carries a Content-Security-Policy that allows this origin
only: the page, its script and style, and the Swagger UI at ``/docs`` (served from the ``fastapi-offline``
package's files, not a CDN) load nothing from anywhere else.

Cost to the inspection loop: the loop hands over references (``on_decision``: no copy, no encoding); the
live frame is drawn, scaled and encoded in the API thread on request, at most ``operator.frame_max_fps``
times a second however many pages are open. docs/BENCHMARKS.md has the measurement.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np
from fastapi import APIRouter, FastAPI, File, HTTPException, Query, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.datastructures import MutableHeaders

from edge.api.access import access_summary
from edge.judge.localize import Located, locate
from edge.learn.feedback import (
    KINDS,
    Collector,
    FeedbackError,
    FeedbackStore,
    Quota,
    class_for,
    encode_jpeg,
    parse_iso,
    safe_name,
)
from edge.runtime.ratelimit import TokenBucket

if TYPE_CHECKING:
    from edge.api.app import ApiState
    from edge.config import Config
    from edge.runtime.metrics import Metrics

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
CHECKS_KEPT = 20
THUMB_WIDTH = 160
HOUR_S = 3600.0
MINUTE_S = 60.0  # the last-hour rate counts per minute: at most 60 buckets, however fast the line runs
FPS_WINDOW_S = 5.0
SUMMARY_TTL_S = 0.5
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
# Swagger UI sets style attributes from its scripts; that needs 'unsafe-inline' styles on /docs (still no other origin).
DOCS_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def swagger_dir() -> Path | None:
    """Swagger UI's files as shipped by the fastapi-offline package (None if it is not installed)."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    d = Path(fastapi_offline.__file__).parent / "static"
    return d if (d / "swagger-ui-bundle.js").is_file() else None


@dataclass
class _Kept:
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
        self._recent: OrderedDict[str, _Kept] = OrderedDict()  # event_id -> images, newest last
        self._checks: OrderedDict[str, _Kept] = OrderedDict()
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
            self._recent[event["event_id"]] = _Kept(event, frame, crop)
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

    def kept(self, target: str, id_: str) -> _Kept | None:
        with self._lock:
            return (self._recent if target == "decision" else self._checks).get(id_)

    def has_images(self, event_id: str) -> bool:
        with self._lock:
            return event_id in self._recent

    def add_check(self, record: dict[str, Any], frame: np.ndarray | bytes | None, crop: np.ndarray | bytes) -> None:
        with self._lock:
            self._checks[record["check_id"]] = _Kept(record, frame, crop)
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


def _jpeg(data: np.ndarray | bytes | None, max_width: int | None = None) -> bytes | None:
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


def _result_doc(res: Any) -> dict[str, Any] | None:
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


def _jpeg_response(data: bytes) -> Response:
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


# --------------------------------------------------------------------------------------------------
# Request / response bodies
# --------------------------------------------------------------------------------------------------


class FeedbackRequest(BaseModel):
    target: Literal["decision", "check"] = Field("decision", description="a decision of the line or a manual check")
    id: str = Field(min_length=1, max_length=120, description="the decision's event_id or the check's check_id")
    kind: Literal["correct", "false_reject", "missed_defect"]
    who: str | None = Field(default=None, max_length=80, description="operator name or badge (optional)")


class LabelRequest(BaseModel):
    label: str = Field(min_length=1, max_length=80, description="a class name of the model, or 'skip'")
    who: str | None = Field(default=None, max_length=80)


class CollectionRequest(BaseModel):
    enabled: bool | None = Field(default=None, description="on or off; left as it is when not given")
    every: int | None = Field(default=None, ge=1, le=100_000, description="save every Nth box crop")


# --------------------------------------------------------------------------------------------------
# Routes
# --------------------------------------------------------------------------------------------------


def install_operator(app: FastAPI, state: ApiState, auth: list[Any],
                     status: Callable[[ApiState], dict[str, Any]]) -> None:
    """Add the page, its endpoints, the offline /docs and the CSP header to ``app``. ``status`` is the API's
    /status document (edge/api/app.py passes it in, so this module does not import the API back)."""
    cfg = state.config
    _install_headers(app)
    _install_docs(app)
    if not cfg.operator.enabled:
        return
    op = getattr(state, "operator", None)
    if op is None:
        op = OperatorState(cfg, state.metrics)
        state.operator = op
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(_router(state, op, auth, status, app.state))


class SecurityHeaders:
    """Pure ASGI middleware: the CSP (and nosniff, no-referrer) on every response, at almost no cost per request."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = DOCS_CSP if scope.get("path") == "/docs" else CSP

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", csp)
                for k, v in SECURITY_HEADERS.items():
                    headers.setdefault(k, v)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _install_headers(app: FastAPI) -> None:
    app.add_middleware(SecurityHeaders)


def _install_docs(app: FastAPI) -> None:
    sdir = swagger_dir()
    if sdir is None:
        log.warning("fastapi-offline is not installed: /docs is off (the OpenAPI schema stays at /openapi.json)")
        return
    app.mount("/swagger", StaticFiles(directory=sdir), name="swagger")

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(STATIC_DIR / "docs.html", media_type="text/html")


def _router(state: ApiState, op: OperatorState, auth: list[Any], status: Callable[[ApiState], dict[str, Any]],  # one route per def
            app_state: Any = None) -> APIRouter:
    cfg = state.config
    r = APIRouter(tags=["operator page"])

    def model_or_503() -> Any:
        model = state.models.get()
        if model is None:
            raise HTTPException(503, "no model loaded")
        return model

    def labels(model: Any) -> tuple[str, str]:
        meta = model.classifier.metadata
        return meta.negative_class, meta.positive_class

    @r.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC_DIR / "index.html").read_text(), headers={"Cache-Control": "no-store"})

    @r.get("/ui/summary", summary="Everything the page's header and counters show")
    def summary() -> dict[str, Any]:
        return op.summary(build_summary)

    def build_summary() -> dict[str, Any]:
        s = status(state)
        s.pop("config", None)
        model = state.models.get()
        loop = s.get("loop") or {}
        created = None
        if model is not None:
            created = parse_iso(getattr(model.classifier.metadata, "created_at", None)) or model.loaded_at
        counts = op.feedback.counts()
        counters = s["counters"]
        frames = loop.get("frames")

        return {
            "version": s["version"],
            "line": s["line"],
            "camera_id": s["camera_id"],
            "ready": s["ready"],
            "reasons": s["not_ready_reasons"],
            "token_required": cfg.api.token is not None,
            "access": access_summary(cfg),  # issue 24: whether actions are enabled at all, and how to enable them
            "camera": s["camera"],
            "model": {k: s["model"].get(k) for k in ("loaded", "model_id", "threshold", "labels", "positive_class",
                                                     "format", "self_test_passed", "loaded_at")},
            "mqtt": s["mqtt"],
            "counters": {
                "boxes": loop.get("decisions", int(sum(counters["decisions"].values()))),
                "defects": loop.get("defects", int(counters["defects"])),
                "frames": loop.get("frames", int(counters["frames_processed"])),
                "fps": op.fps(frames) if frames is not None else loop.get("fps"),
                "no_box_frames": loop.get("no_box_frames", loop.get("no_box")),  # frames where no box was found
                "localizer": counters.get("localizer") or {},  # frames per localiser outcome/reason
                **op.rates(),
            },
            "feedback": {
                "counts": counts,
                "total": sum(counts.values()),
                "new_since_model": op.feedback.since(created) if created is not None else None,
                "answers": {k: int(state.metrics.value(op.feedback.answers, kind=k)) for k in KINDS},
            },
            "collection": {
                "enabled": op.collector.enabled,
                "every": op.collector.every,
                "queued": len(op.collector),
                "collected": int(state.metrics.value(op.collector.collected)),
            },
            "mode": cfg.decision.mode,
            "inspecting": bool(getattr(state.latest, "inspecting", False)),  # a box is in the ROI, not decided yet
            "result": _result_doc(getattr(state.latest, "result", None)),  # the last box decided (the result tile)
            "spc": loop.get("spc"),  # the SPC alarm (edge/judge/spc.py), None when spc.enabled is false
        }

    @r.get(
        "/ui/frame.jpg",
        summary="The current frame with the ROI and, while a box is in view, INSPECTING... and the located box; "
        "never a verdict (the result tile has it), scaled for the page",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, 503: {"description": "no frame yet"}},
    )
    def frame() -> Response:
        jpeg = op.live_frame(state)
        if jpeg is None:
            raise HTTPException(503, "no frame captured yet")
        return _jpeg_response(jpeg)

    @r.get(
        "/ui/result.jpg",
        summary="The result tile: the last decided box's verdict drawn on the frame that decided it",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "no box decided yet"}},
    )
    def result() -> Response:
        jpeg = op.result_frame(state)
        if jpeg is None:
            raise HTTPException(404, "no box decided yet")
        return _jpeg_response(jpeg)

    @r.get("/ui/decisions", summary="Recent decisions, newest first, with whether their images are kept")
    def decisions(limit: int = Query(20, ge=1, le=200)) -> list[dict[str, Any]]:
        out = []
        for e in state.events.latest(limit):
            eid = e["event_id"]
            ev = e.get("evidence") or {}
            out.append({
                **{k: e.get(k) for k in ("event_id", "label", "is_defect", "score", "threshold", "model_id",
                                          "part_id", "decided_at", "frame_count", "anomaly_map")},
                "images": op.has_images(eid) or bool(ev.get("crop") or ev.get("frame")),
                "answered": op.answered(eid),
            })
        return out

    def find_event(event_id: str) -> dict[str, Any] | None:
        for e in state.events.latest(state.events.maxlen or 1000):
            if e["event_id"] == event_id:
                return e
        return None

    def decision_images(event_id: str) -> _Kept:
        kept = op.kept("decision", event_id)
        if kept is not None:
            return kept
        event = find_event(event_id)
        if event is None:
            raise HTTPException(404, f"no recent decision {event_id}")
        ev = event.get("evidence") or {}

        def read(p: str | None) -> bytes | None:
            try:
                return Path(p).read_bytes() if p else None
            except OSError:
                return None

        kept = _Kept(event, read(ev.get("frame")), read(ev.get("crop")))
        if kept.crop is None and kept.frame is None:
            raise HTTPException(
                404, f"the images of decision {event_id} are no longer kept (operator.recent_images) "
                "and it has no evidence files",
            )
        return kept

    def image_of(kept: _Kept, which: str) -> Response:
        if which == "frame":
            data = _jpeg(kept.frame)
        elif which == "crop":
            data = _jpeg(kept.crop)
        elif which == "seen":
            data = kept.seen or _jpeg(kept.crop)
        else:
            if kept.thumb is None:
                kept.thumb = _jpeg(kept.crop if kept.crop is not None else kept.frame, THUMB_WIDTH)
            data = kept.thumb
        if data is None:
            raise HTTPException(404, f"no {which} image")
        return _jpeg_response(data)

    @r.get("/ui/decisions/{event_id}/{which}.jpg", summary="A decision's full frame, crop or thumbnail",
           response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    def decision_image(event_id: str, which: Literal["frame", "crop", "thumb"]) -> Response:
        return image_of(decision_images(event_id), which)

    @r.get("/ui/checks/{check_id}/{which}.jpg", summary="A manual check's image or the crop the model saw",
           response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    def check_image(check_id: str, which: Literal["frame", "crop", "thumb", "seen"]) -> Response:
        kept = op.kept("check", check_id)
        if kept is None:
            raise HTTPException(404, f"no recent check {check_id}")
        return image_of(kept, which)

    def run_check(image: np.ndarray, source: str, frame: np.ndarray | bytes | None) -> dict[str, Any]:
        model = model_or_503()
        threshold = state.threshold(model)
        clf = model.classifier
        p = clf.predict(image, threshold)
        seen = cv2.cvtColor(np.ascontiguousarray(clf.preprocess(image)), cv2.COLOR_RGB2BGR)
        record = {
            "check_id": uuid.uuid4().hex,
            "source": source,
            "label": p.label,
            "is_defect": bool(p.is_defect),
            "score": round(float(p.score), 6),
            "threshold": threshold,
            "model_id": clf.model_id,
            "latency_ms": round(float(p.latency_ms), 2),
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "checked_at": time.time(),
        }
        # The crop kept for feedback is the image scaled to operator.check_keep_width, as JPEG (issue 24: 20 kept
        # full-resolution decodes of 49 MP uploads were 3 GB); the one shown is what the model saw.
        keep = cfg.operator.check_keep_width
        op.add_check(record, _jpeg(frame, keep) if isinstance(frame, np.ndarray) else frame, _jpeg(image, keep) or b"")
        kept = op.kept("check", record["check_id"])
        if kept is not None:
            kept.seen = _jpeg(seen)
        return record

    @r.post(
        "/ui/check",
        summary="Manual check of an uploaded image: verdict, score, threshold; what the model saw at /ui/checks/{id}/seen.jpg",
        responses={413: {"description": "larger than api.max_upload_bytes or api.max_image_pixels"},
                   415: {"description": "not a decodable image"}, 422: {"description": "empty or missing file"},
                   503: {"description": "no model loaded, or too many decodes at once"}},
        dependencies=auth,
    )  # body size: edge.api.app.BodyLimit covers /ui/check too (no FastAPI max_body_size: 0.164+, Python 3.11+)
    def check_upload(file: UploadFile = File(..., description="a JPEG, PNG, BMP or WebP image")) -> dict[str, Any]:
        from edge.api.upload import DECODE_WAIT_S, decode_upload

        data = file.file.read(cfg.api.max_upload_bytes + 1)
        slots = getattr(app_state, "decode_slots", None)  # shared with /predict: api.max_concurrent_decodes
        if slots is not None and not slots.acquire(timeout=DECODE_WAIT_S):
            raise HTTPException(503, "too many images are being decoded; retry shortly", {"Retry-After": "1"})
        try:  # the slot is held until the decoded image is dropped (issue 24: decodes in memory are bounded)
            image = decode_upload(data, cfg.api.max_upload_bytes, cfg.api.max_image_pixels)
            del data
            return run_check(image, "upload", None)
        finally:
            if slots is not None:
                slots.release()

    @r.post("/ui/check/current", summary="Manual check of the current frame's ROI",
            responses={503: {"description": "no frame yet or no model"}}, dependencies=auth)
    def check_current() -> dict[str, Any]:
        from edge.capture.roi import crop

        frame = state.latest.frame
        if frame is None:
            raise HTTPException(503, "no frame captured yet")
        try:
            roi = crop(frame.image, cfg.roi)
        except ValueError as e:
            raise HTTPException(409, f"the ROI does not fit the current frame: {e}") from None
        located = box_in(np.ascontiguousarray(roi), model_or_503())
        if not located.found:  # an empty belt is never classified, so it can never be stored as "ok"
            return {"check_id": None, "source": "current frame", "no_box": True, "label": None, "is_defect": None,
                    "score": None, "reason": located.reason or "no box in the ROI", "checked_at": time.time()}
        return run_check(np.ascontiguousarray(roi), "current frame", frame.image)

    @r.post("/ui/feedback", summary="Answer a decision or a check: correct, false reject or missed defect",
            responses={404: {"description": "unknown or forgotten decision/check"},
                       422: {"description": "the answer does not fit the verdict"}},
            dependencies=auth)
    def feedback(body: FeedbackRequest) -> dict[str, Any]:
        model = model_or_503()
        if body.target == "decision":
            kept = decision_images(body.id)
            rec = kept.record
            record: dict[str, Any] = {"decision_id": body.id, "source": "decision"}
        else:
            found = op.kept("check", body.id)
            if found is None:
                raise HTTPException(404, f"no recent check {body.id}")
            kept, rec = found, found.record
            record = {"check_id": body.id, "source": f"manual check ({rec.get('source')})"}
        try:
            cls = class_for(body.kind, bool(rec["is_defect"]), labels(model))
        except FeedbackError as e:
            raise HTTPException(422, str(e)) from None
        if kept.crop is None:
            raise HTTPException(404, "this decision has no crop to store")
        record.update({
            "model_id": rec.get("model_id"), "score": rec.get("score"), "threshold": rec.get("threshold"),
            "verdict": rec.get("label"), "who": body.who, "line": cfg.line, "camera": cfg.camera,
        })
        crop_img = kept.crop if isinstance(kept.crop, bytes) else np.ascontiguousarray(kept.crop)
        frame_img = kept.frame if isinstance(kept.frame, (bytes, type(None))) else np.ascontiguousarray(kept.frame)
        try:
            saved = op.feedback.save(safe_name(body.id), cls, body.kind, crop_img, frame_img, record)
        except FeedbackError as e:
            raise HTTPException(422, str(e)) from None
        except OSError as e:
            raise HTTPException(507, f"feedback not stored: {e.strerror or e}") from None
        op.set_answered(body.id, cls)
        op.invalidate()
        return saved

    @r.get("/ui/queue", summary="Collection mode's unlabelled crops, oldest first")
    def queue(limit: int = Query(50, ge=1, le=500)) -> dict[str, Any]:
        model = state.models.get()
        return {
            "labels": list(labels(model)) if model is not None else [],
            "waiting": len(op.collector),
            "items": op.collector.items(limit),
        }

    @r.get("/ui/queue/{name}.jpg", summary="One unlabelled crop", response_class=Response,
           responses={200: {"content": {"image/jpeg": {}}}})
    def queue_image(name: str) -> Response:
        try:
            path = op.collector.crop_path(name)
        except FeedbackError:
            path = None
        if path is None or not path.is_file():
            raise HTTPException(404, f"{name} is not in the label queue")
        return _jpeg_response(path.read_bytes())

    @r.post("/ui/queue/{name}", summary="Label (or skip) one crop of the queue", dependencies=auth,
            responses={404: {"description": "not in the queue"}, 422: {"description": "unknown label"}})
    def queue_label(name: str, body: LabelRequest) -> dict[str, Any]:
        model = model_or_503()
        names = labels(model)
        if body.label != "skip" and body.label not in names:
            raise HTTPException(422, f"label must be one of {', '.join(names)} or 'skip'")
        try:
            data, rec = op.collector.pop(name)
        except FeedbackError as e:
            raise HTTPException(404, str(e)) from None
        op.invalidate()
        if body.label == "skip":
            return {"name": name, "label": "skip"}
        record = {"decision_id": rec.get("event_id"), "source": "collection", "model_id": rec.get("model_id"),
                  "score": rec.get("score"), "threshold": rec.get("threshold"), "verdict": rec.get("label"),
                  "who": body.who, "line": cfg.line, "camera": cfg.camera}
        try:
            saved = op.feedback.save(name, body.label, "label", data, None, record)
            op.invalidate()
            return saved
        except OSError as e:
            raise HTTPException(507, f"label not stored: {e.strerror or e}") from None

    @r.post("/ui/collection", summary="Collection mode on or off (and every how many boxes)", dependencies=auth)
    def collection(body: CollectionRequest) -> dict[str, Any]:
        op.collector.set(op.collector.enabled if body.enabled is None else body.enabled, body.every)
        op.invalidate()
        return {"enabled": op.collector.enabled, "every": op.collector.every, "queued": len(op.collector)}

    # issue 24: labels can be reviewed (with who gave them and from where) and removed
    @r.get("/ui/labels", summary="Labelled crops, newest first, with who gave each and from where", dependencies=auth)
    def labels_review(limit: int = Query(200, ge=1, le=5000),
                      who: str | None = Query(None, max_length=200, description="only this person or client")) -> dict[str, Any]:
        items = op.feedback.labels(limit, who)
        by: dict[str, int] = {}
        for item in items:
            key = f"{item.get('who') or '-'} ({item.get('principal') or '-'} from {item.get('from') or '-'})"
            by[key] = by.get(key, 0) + 1
        return {"total": len(op.feedback), "by_source": by, "items": items}

    @r.delete("/ui/labels/{name}", summary="Remove one labelled crop (review)", dependencies=auth,
              responses={404: {"description": "no such label"}})
    def label_remove(name: str) -> dict[str, Any]:
        try:
            removed = op.feedback.remove(safe_name(name))
        except FeedbackError:
            removed = False
        if not removed:
            raise HTTPException(404, f"no label {name}")
        op.invalidate()
        return {"removed": name}

    return r
