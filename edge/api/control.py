"""``POST /reload`` (load the model again, self-test, swap; the old one stays on failure) and ``POST /trigger``."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from edge.api.access import Access
from edge.api.changes import expect_live, live_id
from edge.api.state import ApiState
from edge.runtime.principal import Role
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


def router(state: ApiState, access: Access) -> APIRouter:
    cfg = state.config
    auth = [access.require(Role.OPERATE)]
    engineer = [access.require(Role.ENGINEER)]  # changes the model
    r = APIRouter(tags=["control"])

    @r.post(
        "/reload",
        response_model=ReloadResult,
        summary="Load the model again (or the .tflite in `path`), self-test it, swap it in; the old one stays on failure",
        responses={422: {"model": ReloadResult, "description": "new model rejected; the old one stays"}},
        dependencies=engineer,
    )
    def reload(body: ReloadRequest | None = None) -> JSONResponse:
        if state.reload is None:
            raise HTTPException(503, "reload is not available")
        if not access.configured and not cfg.api.reload_without_token:
            raise HTTPException(
                403, "reload over HTTP needs api.token (or api.reload_without_token: true); SIGHUP still reloads"
            )
        before = expect_live(state, body.confirm if body is not None else None, "reload")
        result = state.reload(body.path if body is not None else None)
        payload = result.model_dump()
        state.audited("reload", f"reload {'of ' + body.path if body and body.path else 'of the active package'}: "
                      + ("swapped in" if result.ok else f"refused ({result.reason})"), before, live_id(state))
        return JSONResponse(payload, status_code=200 if result.ok else 422)

    @r.post(
        "/trigger",
        response_model=TriggerResponse,
        status_code=202,
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

    return r
