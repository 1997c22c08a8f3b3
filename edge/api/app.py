"""The daemon's HTTP API (FastAPI, OpenAPI docs at /docs).

``create_app(state)`` builds the app from an ``ApiState`` the daemon owns: the current model (swapped
atomically on reload), the camera, the MQTT sink, the metrics, the recent decisions and the latest frame.
The API reads that state; it never drives the inspection loop itself (reload and trigger go through the
callables the daemon hands over).

Endpoints: /healthz /readyz /predict /status /snapshot.jpg /events /metrics, POST /reload, POST /trigger; the
model's life cycle (/model, candidate, retrain, promote, rollback) from edge/learn/shadow.py.
With ``api.token`` set, everything but /healthz, /metrics and the operator page's read-only views (``/``,
``GET /ui/*``, edge/api/operator.py) needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
from fastapi import Depends, FastAPI, File, HTTPException, Query, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.middleware.trustedhost import TrustedHostMiddleware

from edge import __version__
from edge.api.access import HOW_TO_ENABLE, Access, AccessGuard
from edge.api.bodies import install_validation_handler
from edge.api.upload import DECODE_WAIT_S, decode_upload
from edge.capture.source import safe_uri
from edge.config import Config
from edge.deliver.replay import ReplayReader
from edge.judge.crops import localizer_counts
from edge.runtime.liveness import Heartbeat
from edge.runtime.metrics import Metrics
from edge.runtime.principal import Principal, Role
from edge.runtime.ratelimit import RateLimited, TokenBucket
from edge.state import (
    EVENTS_MAX,
    CameraState,
    EventSink,
    FrameSource,
    LatestFrame,
    LoadedModel,
    ModelSlot,
    RecentEvents,
    ReloadResult,
)

log = logging.getLogger(__name__)

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPART_SLACK = 64 * 1024  # multipart framing on top of the image itself


# --------------------------------------------------------------------------------------------------
# What the API serves (the shared types live in edge/state.py)
# --------------------------------------------------------------------------------------------------


@dataclass
class ApiState:
    """Everything the API serves. The daemon builds one; tests build one from real parts."""

    config: Config
    metrics: Metrics
    models: ModelSlot
    capture: FrameSource | None = None
    sink: EventSink | None = None
    events: RecentEvents = field(default_factory=RecentEvents)
    latest: LatestFrame = field(default_factory=LatestFrame)
    reload: Callable[[str | None], ReloadResult] | None = None
    trigger: Callable[[str | None], bool] | None = None
    started: float = field(default_factory=time.time)
    counters: Callable[[], dict[str, Any]] | None = None  # live loop figures (fps, frames) from the daemon
    heartbeat: Heartbeat | None = None  # the inspection loop's pulse: /healthz fails when it stops
    operator: Any = None  # edge.api.operator.OperatorState: the page's images, rates, feedback (made by create_app if None)
    model_control: Any = None  # edge.learn.shadow.ModelControl: candidate in shadow, retrain, promote, rollback (/model*)

    def threshold(self, model: LoadedModel) -> float:
        return model.threshold(self.config.model.threshold)

    def not_ready_reasons(self) -> list[str]:
        reasons: list[str] = []
        model = self.models.get()
        if model is None:
            reasons.append("model: not loaded")
        elif not model.self_test_passed:
            reasons.append("model: self-test failed: " + "; ".join(model.self_test_failures))
        if self.capture is None:
            reasons.append("camera: not started")
        else:
            state = self.capture.state
            if state != CameraState.OK:
                reasons.append(f"camera: {state} (source {safe_uri(self.config.source.uri)})")
            elif self.capture.frozen:
                reasons.append("camera: picture frozen (identical frames)")
        if self.config.mqtt.enabled:
            if self.sink is None:
                reasons.append("mqtt: not started")
            else:
                if not self.sink.connected:
                    why = self.sink.last_error
                    reasons.append(
                        f"mqtt: not connected to {self.config.mqtt.host}:{self.config.mqtt.port}" + (f" ({why})" if why else "")
                    )
                if (problem := self.sink.not_ready_reason()) is not None:  # e.g. disk full, events only in memory
                    reasons.append(f"mqtt: {problem}")
        return reasons


# --------------------------------------------------------------------------------------------------
# Response models (they document the API in /docs)
# --------------------------------------------------------------------------------------------------


class Health(BaseModel):
    status: str = Field(default="alive", description="alive, or hung when the inspection loop stopped turning (503)")
    version: str = __version__
    reason: str | None = Field(default=None, description="why: loop running, waiting for the camera, or where it hung")
    loop_age_s: float | None = Field(default=None, description="seconds since the inspection loop last completed an iteration")


class Readiness(BaseModel):
    ready: bool
    reasons: list[str] = Field(default_factory=list)


class PredictResult(BaseModel):
    label: str
    score: float = Field(description="probability of the positive (defect) class")
    is_defect: bool
    threshold: float
    latency_ms: float
    model_id: str
    width: int
    height: int


class ReloadRequest(BaseModel):
    path: str | None = Field(
        default=None,
        max_length=255,
        description="the name of a .tflite inside model.dir to load instead of model.path (no absolute path, no '..')",
    )


class TriggerRequest(BaseModel):
    part_id: str | None = Field(default=None, max_length=200)


class TriggerResponse(BaseModel):
    accepted: bool
    part_id: str | None = None


class BodyTooLarge(HTTPException):
    """Raised from the request's ``receive`` once a body passes the limit; FastAPI turns it into a 413."""


class BodyLimit:
    """ASGI middleware: refuse request bodies above ``limit`` bytes on ``paths`` with 413.

    A declared ``Content-Length`` above the limit is refused before anything is read; a chunked body
    is counted as it arrives and cut off at the limit (the body is never buffered beyond it).
    """

    def __init__(self, app: Any, paths: tuple[str, ...], limit: int, detail: str) -> None:
        self.app, self.paths, self.limit, self.detail = app, paths, limit, detail

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        if scope["type"] != "http" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers") or ():
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                body = json.dumps({"detail": f"request body is {int(value)} bytes; {self.detail}"}).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 413,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        seen = 0

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(413, f"request body is over {self.limit} bytes; {self.detail}")
            return message

        await self.app(scope, limited_receive, send)


# --------------------------------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------------------------------


def _config_summary(cfg: Config) -> dict[str, Any]:
    """The config without secrets: SecretStr fields are masked, and so are credentials in a stream URL."""
    summary = cfg.summary()
    summary["source"]["uri"] = safe_uri(cfg.source.uri)
    return summary


def _status(state: ApiState) -> dict[str, Any]:
    m = state.metrics
    value = m.value
    model = state.models.get()
    model_info: dict[str, Any] = {"loaded": model is not None}
    if model is not None:
        clf = model.classifier
        meta = clf.metadata
        model_info.update(
            model_id=clf.model_id,
            path=str(clf.path),
            runtime=clf.runtime_name,
            delegate=clf.delegate,
            threshold=state.threshold(model),
            labels=list(meta.labels),
            positive_class=meta.positive_class,
            format=getattr(meta, "format", None),
            crop=meta.crop.model_dump(mode="json"),
            self_test_passed=model.self_test_passed,
            self_test_failures=list(model.self_test_failures),
            loaded_at=model.loaded_at,
        )
    camera: dict[str, Any] = {"state": "not started"}
    if state.capture is not None:
        camera = {"state": state.capture.state, "frozen": bool(state.capture.frozen)}
        try:
            camera["stats"] = state.capture.stats()
        except Exception as e:  # stats are informative only; /status must not fail because of them
            camera["stats_error"] = str(e)
    mqtt: dict[str, Any] = {"enabled": state.config.mqtt.enabled}
    if state.sink is not None:
        mqtt.update(state.sink.status())
    labels = model.classifier.metadata.labels if model is not None else []
    counters = {
        "frames_processed": value(m.frames_processed),
        "frames_captured": value(m.frames_captured),
        "no_box": value(m.no_box),
        "no_box_parts": value(m.no_box_parts),
        "localizer": localizer_counts(m),  # frames per localiser outcome/reason (edge/judge/crops.py)
        "decisions": {lbl: value(m.decisions, label=lbl) for lbl in labels},
        "defects": value(m.defects),
        "events_published": value(m.events_published),
        "events_failed": value(m.events_failed),
        "events_dropped": value(m.events_dropped),
    }
    reasons = state.not_ready_reasons()
    out: dict[str, Any] = {
        "version": __version__,
        "uptime_s": round(time.time() - state.started, 3),
        "ready": not reasons,
        "not_ready_reasons": reasons,
        "line": state.config.line,
        "camera_id": state.config.camera,
        "model": model_info,
        "camera": camera,
        "mqtt": mqtt,
        "counters": counters,
        "config": _config_summary(state.config),
    }
    if state.counters is not None:
        out["loop"] = state.counters()
    return out


def create_app(state: ApiState) -> FastAPI:
    cfg = state.config
    app = FastAPI(
        title="boxinspect edge daemon",
        version=__version__,
        description="Box-defect inspection at the line: health, readiness, on-demand prediction, status, "
        "the latest frame, recent decisions, Prometheus metrics, model reload and part triggers.",
        docs_url=None,  # /docs is served offline by edge/api/operator.py
        redoc_url=None,
    )
    app.state.boxinspect = state
    token = cfg.api.token.get_secret_value().encode() if cfg.api.token is not None else None
    # Who may do what (edge/api/access.py): checked by AccessGuard from the request head, before any body is read.
    access = Access(cfg.api.token.get_secret_value() if cfg.api.token is not None else None, cfg.api.viewing,
                    cfg.api.reload_without_token)
    app.state.access = access
    auth = [access.require(Role.OPERATE)]  # stores data or decodes an upload
    engineer = [access.require(Role.ENGINEER)]  # changes the model or replays history
    view = [access.require(Role.VIEW)]  # the live image, status, recent decisions: api.viewing
    if not access.configured:
        log.warning("API: no credential configured: serving health, metrics and read-only views only; %s", HOW_TO_ENABLE)
    upload_limit = cfg.api.max_upload_bytes + MULTIPART_SLACK
    decodes = threading.BoundedSemaphore(cfg.api.max_concurrent_decodes)
    app.state.decode_slots = decodes

    app.add_middleware(_CatchAll)  # one log line (with traceback) and a JSON 500 per unexpected error
    app.add_middleware(AccessGuard, access=access, routes=lambda: app.router.routes)
    install_validation_handler(app)  # malformed bodies (bytes, NaN) are a 422, never a 500 (edge/api/bodies.py)
    app.add_exception_handler(RateLimited, _rate_limited)  # a store or replay over its rate: 429 (edge/runtime/ratelimit.py)
    if cfg.api.trusted_hosts:  # DNS rebinding: a browser page on another name cannot reach the API
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(cfg.api.trusted_hosts))

    # The upload limit as plain ASGI middleware: works with every FastAPI/Starlette this package supports
    # (FastAPI's own per-route ``max_body_size`` exists only from 0.164, which needs Python 3.11).
    app.add_middleware(
        BodyLimit,
        paths=("/predict", "/ui/check"),
        limit=upload_limit,
        detail=f"uploads are limited to {cfg.api.max_upload_bytes} bytes (api.max_upload_bytes)",
    )

    @app.get(
        "/healthz",
        response_model=Health,
        tags=["health"],
        summary="Liveness: the process answers and the inspection loop is turning",
        responses={503: {"model": Health, "description": "the inspection loop is hung; `reason` says where"}},
    )
    def healthz() -> JSONResponse:
        if state.heartbeat is None:
            return JSONResponse(Health().model_dump())
        live = state.heartbeat.check()
        body = Health(status="alive" if live.alive else "hung", reason=live.reason, loop_age_s=round(live.loop_age_s, 3))
        return JSONResponse(body.model_dump(), status_code=200 if live.alive else 503)

    @app.get(
        "/readyz",
        response_model=Readiness,
        tags=["health"],
        summary="Readiness: model loaded and self-tested, camera ok, MQTT connected",
        responses={503: {"model": Readiness, "description": "not ready; `reasons` says why"}},
        dependencies=[],
    )
    def readyz() -> JSONResponse:
        reasons = state.not_ready_reasons()
        body = Readiness(ready=not reasons, reasons=reasons).model_dump()
        return JSONResponse(body, status_code=200 if not reasons else 503)

    @app.post(
        "/predict",
        response_model=PredictResult,
        tags=["inference"],
        summary="Classify one uploaded image (multipart field `file`)",
        responses={
            413: {"description": "upload larger than api.max_upload_bytes, or more pixels than api.max_image_pixels"},
            415: {"description": "not a decodable image, or not JPEG/PNG/BMP/WebP"},
            422: {"description": "empty upload or missing `file` field"},
            503: {"description": "no model loaded"},
        },
        dependencies=auth,
    )
    def predict(file: UploadFile = File(..., description="a JPEG, PNG, BMP or WebP image")) -> PredictResult:
        data = file.file.read(cfg.api.max_upload_bytes + 1)
        if not decodes.acquire(timeout=DECODE_WAIT_S):
            raise HTTPException(503, "too many images are being decoded; retry shortly", {"Retry-After": "1"})
        try:  # the slot is held until the decoded image is dropped (issue 24: decodes in memory are bounded)
            image = decode_upload(data, cfg.api.max_upload_bytes, cfg.api.max_image_pixels)
            model = state.models.get()
            if model is None:
                raise HTTPException(503, "no model loaded")
            threshold = state.threshold(model)
            p = model.classifier.predict(image, threshold)
            height, width = int(image.shape[0]), int(image.shape[1])
            del image
        finally:
            decodes.release()
        return PredictResult(
            label=p.label,
            score=float(p.score),
            is_defect=bool(p.is_defect),
            threshold=threshold,
            latency_ms=float(p.latency_ms),
            model_id=model.classifier.model_id,
            width=width,
            height=height,
        )

    @app.get("/status", tags=["status"], summary="Config (secrets masked), counters, camera, MQTT, model", dependencies=view)
    def status() -> dict[str, Any]:
        return _status(state)

    @app.get(
        "/snapshot.jpg",
        tags=["status"],
        summary="The latest frame with the ROI and the last verdict drawn",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, 503: {"description": "no frame yet"}},
        dependencies=view,
    )
    def snapshot() -> Response:
        from edge.capture.roi import draw_overlay

        latest = state.latest
        frame = latest.frame
        if frame is None:
            raise HTTPException(503, "no frame captured yet")
        label, score, is_defect = latest.verdict or (None, None, None)
        try:
            image = draw_overlay(frame.image, cfg.roi, label, score, is_defect, frame.captured_at)
        except ValueError as e:  # the ROI lies outside this frame: show the frame and say so
            log.warning("snapshot: %s", e)
            image = frame.image
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise HTTPException(500, "could not encode the snapshot")
        return Response(buf.tobytes(), media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    replay_limit = TokenBucket(cfg.api.replays_per_minute)
    replay_reader = ReplayReader(cfg.mqtt.outbox_path)

    @app.get(
        "/events",
        tags=["status"],
        summary="Recent decisions, newest first; with since_seq: replay of the outbox",
        dependencies=view,
    )
    def events(
        response: Response,
        limit: int = Query(50, ge=1, le=EVENTS_MAX, description=f"how many (1..{EVENTS_MAX})"),
        since_seq: int | None = Query(
            None, ge=0, le=2**62,
            description="replay: re-publish every event still in the outbox with seq > since_seq (original event_id "
            "and seq, oldest first, at most api.replay_page_max: X-Next-Since-Seq names the next page) and return them "
            "(docs/EVENTS.md)",
        ),
        who: Principal = Depends(access.principal),
    ) -> list[dict[str, Any]]:
        if since_seq is None:
            return state.events.latest(limit)
        access.demand(who, Role.ENGINEER)  # a replay re-publishes history: not a view
        replay = getattr(state.sink, "replay", None)
        if replay is None:
            raise HTTPException(404, "no outbox: replay needs the MQTT sink")
        wait = replay_limit.take()  # issue 24: paged, rate-limited, read beside the writer (edge/runtime/ratelimit.py)
        if wait > 0:
            raise HTTPException(429, f"too many replays: at most {cfg.api.replays_per_minute} a minute "
                                "(api.replays_per_minute)", {"Retry-After": str(max(1, round(wait)))})
        page = cfg.api.replay_page_max
        try:
            rows = replay_reader.since(since_seq, page)
        except sqlite3.Error as e:
            raise HTTPException(503, f"replay failed: cannot read the outbox: {e}") from None
        republish = getattr(state.sink, "republish", None)
        if republish is not None:
            republish(rows)
        if len(rows) == page:
            response.headers["X-Next-Since-Seq"] = str(rows[-1].seq)
        out: list[dict[str, Any]] = []
        for row in rows:
            try:
                doc = json.loads(row.payload)
            except ValueError:
                continue
            if isinstance(doc, dict):
                doc["seq"] = row.seq
                doc["topic"] = row.topic
                out.append(doc)
        return out

    @app.get(
        "/metrics",
        tags=["status"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
    )
    def metrics() -> Response:
        if not cfg.metrics.enabled:
            raise HTTPException(404, "metrics are disabled (metrics.enabled: false)")
        return Response(state.metrics.render(), media_type=PROMETHEUS_CONTENT_TYPE)

    @app.post(
        "/reload",
        response_model=ReloadResult,
        tags=["control"],
        summary="Load the model again (or the .tflite in `path`), self-test it, swap it in; the old one stays on failure",
        responses={422: {"model": ReloadResult, "description": "new model rejected; the old one stays"}},
        dependencies=engineer,
    )
    def reload(body: ReloadRequest | None = None) -> JSONResponse:
        if state.reload is None:
            raise HTTPException(503, "reload is not available")
        if token is None and not cfg.api.reload_without_token:
            raise HTTPException(
                403, "reload over HTTP needs api.token (or api.reload_without_token: true); SIGHUP still reloads"
            )
        result = state.reload(body.path if body is not None else None)
        payload = result.model_dump()
        return JSONResponse(payload, status_code=200 if result.ok else 422)

    @app.post(
        "/trigger",
        response_model=TriggerResponse,
        status_code=202,
        tags=["control"],
        summary="Triggered mode: inspect the next frames as one part",
        responses={
            409: {"description": "the daemon runs in continuous mode"},
            429: {"description": "too many triggers already waiting for frames"},
        },
        dependencies=auth,
    )
    def trigger(body: TriggerRequest | None = None) -> TriggerResponse:
        if cfg.decision.mode != "triggered" or state.trigger is None:
            raise HTTPException(409, "decision.mode is 'continuous'; triggers only apply in 'triggered' mode")
        part_id = body.part_id if body is not None else None
        if not state.trigger(part_id):
            raise HTTPException(429, "trigger refused: too many triggers are waiting for frames (is the camera ok?)")
        return TriggerResponse(accepted=True, part_id=part_id)

    from edge.api.operator import install_operator

    install_operator(app, state, auth, _status)
    if state.model_control is not None:
        from edge.learn.shadow import install_model_api

        install_model_api(app, state, state.model_control, engineer, token is not None)

    return app


async def _rate_limited(request: Any, exc: Exception) -> JSONResponse:
    wait = exc.retry_after if isinstance(exc, RateLimited) else 1.0
    return JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": str(max(1, round(wait)))})


class _CatchAll:
    """ASGI middleware: an unexpected exception becomes one logged traceback and a JSON 500.

    (A FastAPI ``exception_handler(Exception)`` answers too, but Starlette then re-raises the exception to
    the server, which logs the same traceback a second time.)
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log.error("API error on %s %s", scope.get("method"), scope.get("path"), exc_info=exc)
            if not started:
                response = JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)
                await response(scope, receive, send)
