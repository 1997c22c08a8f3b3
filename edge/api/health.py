"""``/healthz`` (is the loop turning?) and ``/readyz`` (model, camera, MQTT): always open, for probes and systemd."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from edge import __version__
from edge.api.deps import State


class Health(BaseModel):
    status: str = Field(default="alive", description="alive, or hung when the inspection loop stopped turning (503)")
    version: str = __version__
    reason: str | None = Field(default=None, description="why: loop running, waiting for the camera, or where it hung")
    loop_age_s: float | None = Field(default=None, description="seconds since the inspection loop last completed an iteration")


class Readiness(BaseModel):
    ready: bool
    reasons: list[str] = Field(default_factory=list)


router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    response_model=Health,
    tags=["health"],
    summary="Liveness: the process answers and the inspection loop is turning",
    responses={503: {"model": Health, "description": "the inspection loop is hung; `reason` says where"}},
)
def healthz(state: State) -> JSONResponse:
    if state.heartbeat is None:
        return JSONResponse(Health().model_dump())
    live = state.heartbeat.check()
    body = Health(status="alive" if live.alive else "hung", reason=live.reason, loop_age_s=round(live.loop_age_s, 3))
    return JSONResponse(body.model_dump(), status_code=200 if live.alive else 503)

@router.get(
    "/readyz",
    response_model=Readiness,
    tags=["health"],
    summary="Readiness: model loaded and self-tested, camera ok, MQTT connected",
    responses={503: {"model": Readiness, "description": "not ready; `reasons` says why"}},
    dependencies=[],
)
def readyz(state: State) -> JSONResponse:
    reasons = state.not_ready_reasons()
    body = Readiness(ready=not reasons, reasons=reasons).model_dump()
    return JSONResponse(body, status_code=200 if not reasons else 503)
