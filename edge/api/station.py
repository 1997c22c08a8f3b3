"""The station view at ``/station`` (issue 26): what an operator at the line reads from two metres and touches.

- ``GET /station``: the page (static; its data come from the routes below, so it is always served, like ``/``).
- ``GET /ui/station``: the result tile (the last part, or the NG frozen until someone acknowledges it), the
  alarms (NG waiting, SPC) and their acknowledgements, the age of the live frame, the staleness limit.
- ``POST /ui/station/ack``: acknowledge the NG on the tile (and every NG before it) or the SPC alarm; needs the
  ``operate`` role; stored with who and when, logged.
- ``GET /ui/stream.mjpg``: the live image as ``multipart/x-mixed-replace`` (MJPEG), bounded in clients, rate and
  duration; a view, like ``/snapshot.jpg``. The page polls ``/ui/frame.jpg`` when the stream is off or full.

Stack light: ``station.outputs`` maps an alarm (``ng``, ``spc``) to an MQTT topic; each change of the alarm's
"needs attention" state is published there retained (a small thread watches, so it works with no page open).
MQTT only: a GPIO stack light is driven from that topic by the PLC or a relay bridge.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from edge.api.access import principal
from edge.api.deps import OPERATE, VIEW, State
from edge.api.page_state import OperatorState
from edge.api.state import ApiState
from edge.deliver.stacklight import GpiodLamp
from edge.runtime.principal import Principal
from edge.runtime.timeutil import iso_utc

log = logging.getLogger(__name__)

RECENT_SCAN = 200  # decisions looked at for NG parts waiting for an acknowledgement
ACKS_KEPT = 50
OUTPUT_PERIOD_S = 0.5
BOUNDARY = "boxinspect-frame"
STATIC_DIR = Path(__file__).parent / "static"


class AckRequest(BaseModel):
    alarm: Literal["ng", "spc"] = "ng"
    event_id: str | None = None  # ng: the decision on the tile (it and every NG before it are acknowledged)


@dataclass(frozen=True)
class Ack:
    alarm: str
    who: str
    at: str
    event_id: str | None = None
    part_id: str | None = None
    spc_since: str | None = None


def _iso(t: Any) -> str | None:
    return iso_utc(float(t)) if isinstance(t, (int, float)) else None


def _tile(e: dict[str, Any]) -> dict[str, Any]:
    keys = ("event_id", "label", "is_defect", "score", "threshold", "part_id", "decided_at", "model_id")
    return {**{k: e.get(k) for k in keys}, "crop": f"/ui/decisions/{e['event_id']}/crop.jpg"}


class StationState:
    """NG parts waiting for an acknowledgement, the SPC alarm's acknowledgement, and the stack-light outputs."""

    def __init__(self, state: ApiState, request_lines: Callable[..., Any] | None = None) -> None:
        self.state = state
        self._request_lines = request_lines  # tests: a fake chip (gpiod's request_lines)
        self.lamps: dict[str, GpiodLamp] = {}  # station.gpio: alarm -> its stack-light lamp
        self._lock = threading.Lock()
        self._ng_floor: tuple[str, str] | None = None  # (event_id, decided_at) of the newest NG acknowledged
        self._spc_acked: str | None = None  # the SPC activation ("since") acknowledged
        self.acks: deque[Ack] = deque(maxlen=ACKS_KEPT)
        self._published: dict[str, bool] = {}
        self._stop = threading.Event()
        self.streams: Streams | None = None  # the MJPEG streams (set by ``install``)

    # -- what waits ---------------------------------------------------------------------------------------
    def pending_ng(self) -> list[dict[str, Any]]:
        """NG decisions newer than the last acknowledged one, newest first."""
        with self._lock:
            floor = self._ng_floor
        out = []
        for e in self.state.events.latest(RECENT_SCAN):
            if floor is not None and (e["event_id"] == floor[0] or str(e.get("decided_at")) < floor[1]):
                break
            if e.get("is_defect"):
                out.append(e)
        return out

    def spc(self) -> dict[str, Any] | None:
        counters = self.state.counters
        loop = counters() if counters is not None else {}
        spc = loop.get("spc") if isinstance(loop, dict) else None
        return spc if isinstance(spc, dict) else None

    def alarms(self) -> dict[str, dict[str, Any]]:
        pending = self.pending_ng()
        spc = self.spc() or {}
        with self._lock:
            spc_acked = spc.get("active") and self._spc_acked is not None and self._spc_acked == spc.get("since")
        return {
            "ng": {"active": bool(pending), "waiting": len(pending),
                   "event_id": pending[0]["event_id"] if pending else None,
                   "since": pending[-1].get("decided_at") if pending else None},
            "spc": {"active": bool(spc.get("active")) and not spc_acked, "raised": bool(spc.get("active")),
                    "since": _iso(spc.get("since")), "reason": spc.get("reason")},
        }

    # -- acknowledging ------------------------------------------------------------------------------------
    def acknowledge(self, body: AckRequest, who: str) -> Ack:
        if body.alarm == "spc":
            spc = self.spc() or {}
            if not spc.get("active"):
                raise HTTPException(409, "no SPC alarm to acknowledge")
            ack = Ack("spc", who, iso_utc(), spc_since=_iso(spc.get("since")))
            with self._lock:
                self._spc_acked = spc.get("since")
        else:
            pending = self.pending_ng()
            target = next((e for e in pending if e["event_id"] == body.event_id), None) if body.event_id else None
            if target is None and pending and body.event_id is None:
                target = pending[0]
            if target is None:
                raise HTTPException(409, f"no NG part waiting with id {body.event_id}" if body.event_id
                                    else "no NG part waiting for an acknowledgement")
            ack = Ack("ng", who, iso_utc(), target["event_id"], target.get("part_id"))
            with self._lock:
                self._ng_floor = (target["event_id"], str(target.get("decided_at")))
        with self._lock:
            self.acks.appendleft(ack)
        log.info("station: %s alarm acknowledged by %s (%s)", ack.alarm, who, ack.event_id or ack.spc_since)
        self.update_outputs()
        return ack

    def doc(self) -> dict[str, Any]:
        cfg = self.state.config.station
        recent = self.state.events.latest(1)
        pending = self.pending_ng()
        shown = pending[0] if pending else (recent[0] if recent else None)
        frame = self.state.latest.frame
        with self._lock:
            acks = [asdict(a) for a in list(self.acks)[:10]]
        return {
            "now": iso_utc(),
            "stale_after_s": cfg.stale_after_s,
            "sound": cfg.sound,
            "stream": cfg.stream,
            "frame_age_s": None if frame is None else round(max(0.0, time.time() - frame.captured_at), 3),
            "inspecting": bool(self.state.latest.inspecting),
            "tile": None if shown is None else {**_tile(shown), "frozen": bool(pending)},
            "latest": None if not recent else _tile(recent[0]),
            "alarms": self.alarms(),
            "acks": acks,
            "outputs": dict(cfg.outputs),
        }

    # -- stack light ---------------------------------------------------------------------------------------
    def update_outputs(self) -> None:
        """Each stack-light lamp on or off with its alarm; each configured alarm's state published (retained) when it
        changed since the last publish."""
        outputs = self.state.config.station.outputs
        sink = self.state.sink
        if not (outputs and sink is not None) and not self.lamps:
            return
        alarms = self.alarms()
        for alarm, lamp in self.lamps.items():
            lamp.set(bool(alarms[alarm]["active"]))
        if not outputs or sink is None:
            return
        for alarm, topic in outputs.items():
            a = alarms[alarm]
            if self._published.get(alarm) == a["active"]:
                continue
            with self._lock:
                last = next((asdict(x) for x in self.acks if x.alarm == alarm), None)
            msg = {"alarm": alarm, "active": a["active"], "since": a.get("since"), "line": self.state.config.line,
                   "camera": self.state.config.camera, "changed_at": iso_utc(),
                   "acknowledged_by": None if a["active"] or last is None else last["who"]}
            if sink.publish(topic, json.dumps(msg).encode(), qos=1, retain=True):
                self._published[alarm] = a["active"]

    def run_outputs(self) -> None:
        while not self._stop.wait(OUTPUT_PERIOD_S):
            try:
                self.update_outputs()
            except Exception:  # the stack light must never take the API down; say why and go on
                log.exception("station: stack-light output failed")

    def stop_outputs(self) -> None:
        """End the output thread (the lamps keep their last state)."""
        self._stop.set()

    def start_outputs(self) -> None:
        cfg = self.state.config.station
        for alarm, g in cfg.gpio.items():
            try:
                self.lamps[alarm] = GpiodLamp(alarm, g, self._request_lines)
            except RuntimeError as e:  # the station works on without that lamp; the log says why, once
                log.error("stack light: %s (the %s lamp stays off)", e, alarm)
        if cfg.outputs or self.lamps:
            threading.Thread(target=self.run_outputs, name="station-outputs", daemon=True).start()


class Streams:
    """At most ``station.stream_max_clients`` MJPEG streams at once, each at most ``stream_max_fps``."""

    def __init__(self, state: ApiState, frame: Callable[[], bytes | None]) -> None:
        self.state = state
        self.cfg = state.config.station
        self.frame = frame
        self.slots = threading.BoundedSemaphore(self.cfg.stream_max_clients)

    async def parts(self) -> AsyncIterator[bytes]:
        try:
            period = 1.0 / self.cfg.stream_max_fps
            end = time.monotonic() + self.cfg.stream_max_s
            last: bytes | None = None
            while time.monotonic() < end and not self.stopping():
                t0 = time.monotonic()
                jpeg = await run_in_threadpool(self.frame)
                if jpeg is not None and jpeg is not last:
                    last = jpeg
                    yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                           .encode() + jpeg + b"\r\n")
                await asyncio.sleep(max(0.0, period - (time.monotonic() - t0)))
        finally:
            self.slots.release()

    def stopping(self) -> bool:
        """The daemon is shutting down: end the stream, so an open station never delays the exit."""
        hb = self.state.heartbeat
        return hb is not None and hb.check().phase == "stopping"


def install(app: FastAPI, state: ApiState) -> None:
    """Add the station's routes to ``app`` and start its stack-light outputs (edge/api/operator.py calls it)."""
    op = state.operator
    assert isinstance(op, OperatorState), "install_operator makes the page's state first"
    station = StationState(state)
    station.streams = Streams(state, lambda: op.live_frame(state))
    app.state.station = station
    station.start_outputs()
    app.include_router(router)


def station_state(request: Request) -> StationState:
    station: StationState = request.app.state.station
    return station


Station = Annotated[StationState, Depends(station_state)]
Who = Annotated[Principal, Depends(principal)]
router = APIRouter(tags=["station"])


@router.get("/station", include_in_schema=False)
def page() -> HTMLResponse:
    return HTMLResponse((STATIC_DIR / "station.html").read_text(), headers={"Cache-Control": "no-store"})


@router.get("/ui/station", summary="The station view's result tile, alarms and acknowledgements", dependencies=VIEW)
def station_doc(station: Station) -> dict[str, Any]:
    return station.doc()


@router.post("/ui/station/ack", summary="Acknowledge the NG on the tile (and those before it) or the SPC alarm",
             dependencies=OPERATE)
def ack(body: AckRequest, state: State, station: Station, who: Who) -> dict[str, Any]:
    done = station.acknowledge(body, who.name)
    target = done.event_id or done.spc_since
    state.audited("acknowledge", f"{done.alarm} alarm acknowledged ({target})", None, asdict(done))
    return asdict(done)


# Not in the OpenAPI schema: a never-ending body is no request/response operation (a schema fuzzer would hang on
# it); documented in docs/DEPLOY.md, "The station view".
@router.get("/ui/stream.mjpg", include_in_schema=False, dependencies=VIEW)
def stream(state: State, station: Station) -> StreamingResponse:
    streams = station.streams
    if not state.config.station.stream or streams is None:
        raise HTTPException(503, "the stream is off (station.stream): poll /ui/frame.jpg")
    if state.latest.frame is None:
        raise HTTPException(503, "no frame captured yet")
    if not streams.slots.acquire(blocking=False):
        raise HTTPException(503, f"{state.config.station.stream_max_clients} streams already open "
                            "(station.stream_max_clients): poll /ui/frame.jpg")
    return StreamingResponse(streams.parts(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                             headers={"Cache-Control": "no-store"})
