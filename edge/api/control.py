"""``POST /reload`` (load the model again, self-test, swap; the old one stays on failure) and ``POST /trigger``."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from edge.api.access import has_credentials
from edge.api.changes import expect_live, live_id
from edge.api.deps import ENGINEER, OPERATE, State
from edge.state import ReloadResult


class ReloadRequest(BaseModel):
    path: str | None = Field(
        default=None,
        max_length=255,
        description="the name of a .tflite inside model.dir to load instead of model.path (no absolute path, no '..')",
    )
    confirm: str | None = Field(default=None, max_length=200, description=(
        "issue 26: the id of the live model the caller expects to replace; refused with 409 when another is live"))


class TriggerRequest(BaseModel):
    part_id: str | None = Field(default=None, max_length=200)


class TriggerResponse(BaseModel):
    accepted: bool
    part_id: str | None = None


router = APIRouter(tags=["control"])


@router.post(
    "/reload",
    response_model=ReloadResult,
    summary="Load the model again (or the .tflite in `path`), self-test it, swap it in; the old one stays on failure",
    responses={422: {"model": ReloadResult, "description": "new model rejected; the old one stays"}},
    dependencies=ENGINEER,
)
def reload(state: State, body: ReloadRequest | None = None) -> JSONResponse:
    cfg = state.config
    if state.reload is None:
        raise HTTPException(503, "reload is not available")
    if not has_credentials(cfg) and not cfg.api.reload_without_token:
        raise HTTPException(
            403, "reload over HTTP needs api.token (or api.reload_without_token: true); SIGHUP still reloads"
        )
    before = expect_live(state, body.confirm if body is not None else None, "reload")  # issue 26
    result = state.reload(body.path if body is not None else None)
    payload = result.model_dump()
    state.audited("reload", f"reload {'of ' + body.path if body and body.path else 'of the active package'}: "
                  + ("swapped in" if result.ok else f"refused ({result.reason})"), before, live_id(state))
    return JSONResponse(payload, status_code=200 if result.ok else 422)


@router.post(
    "/trigger",
    response_model=TriggerResponse,
    status_code=202,
    summary="Triggered mode: inspect the next frames as one part",
    responses={
        409: {"description": "the daemon runs in continuous mode"},
        429: {"description": "too many triggers already waiting for frames"},
    },
    dependencies=OPERATE,
)
def trigger(state: State, body: TriggerRequest | None = None) -> TriggerResponse:
    cfg = state.config
    if cfg.decision.mode != "triggered" or state.trigger is None:
        raise HTTPException(409, "decision.mode is 'continuous'; triggers only apply in 'triggered' mode")
    part_id = body.part_id if body is not None else None
    if not state.trigger(part_id):
        raise HTTPException(429, "trigger refused: too many triggers are waiting for frames (is the camera ok?)")
    return TriggerResponse(accepted=True, part_id=part_id)
