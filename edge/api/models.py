"""The model's life cycle over HTTP: ``GET /model`` (+ the page's ``GET /ui/model``), ``POST``/``DELETE
/model/candidate``, ``POST /model/retrain``, ``POST /model/promote``, ``POST /model/rollback``, and the disagreement
queue ``GET /ui/shadow/{name}.jpg``, ``POST /ui/shadow/{name}`` (label a disagreement). Actions need the engineer
role and, like ``POST /reload``, are refused without a token unless ``api.reload_without_token``.
``POST /model/retrain`` takes a recipe (edge/learn/recipes.py): ``head`` (a supervised head on both classes, on any
package with a features output, an anomaly package included: the switch the page suggests) or ``anomaly`` (a new
bank of good parts; anomaly packages only); none: the live package's own.
The work is edge/learn/lifecycle.py's ``ModelControl``; this module only maps it to HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, StringConstraints

from edge.api.access import has_credentials
from edge.api.changes import expect_live, live_id
from edge.api.deps import ENGINEER, Control, State
from edge.api.state import ApiState
from edge.learn.feedback import FeedbackError
from edge.learn.lifecycle import ControlError, without_paths
from edge.learn.poison import PromoteNeedsConfirmation, candidate_review, check_promote
from edge.learn.recipes import Recipe
from edge.runtime.principal import actor


class CandidateRequest(BaseModel):
    path: str = Field(min_length=1, max_length=255,
                      description="a .tflite inside model.dir (or a retrain candidate inside <shadow.dir>/candidates/)")


class RetrainRequest(BaseModel):
    recipe: Recipe | None = Field(default=None, description=(
        "head: a supervised logistic head on both classes, on the live backbone (on an anomaly package: the switch to "
        "a supervised head); anomaly: a new bank of good parts from feedback/<good class>/ (anomaly packages only, "
        "else 422); omitted: the live package's own recipe"))
    target_recall: float | None = Field(default=None, gt=0, le=1,
                                        description="head: pick the threshold for this recall")
    cost_ratio: float | None = Field(default=None, gt=0, le=1000,
                                     description="head: a missed defect costs N false rejects")
    target_frr: float | None = Field(default=None, gt=0, lt=1, description=(
        "anomaly: the threshold's false-reject rate on good parts (default: the package's own rule)"))
    min_per_class: int | None = Field(default=None, ge=2, le=100_000, description=(
        "refuse when a class (anomaly: the good class) has fewer labelled images (default: the recipe's, 20)"))


class ActionRequest(BaseModel):
    who: str | None = Field(default=None, max_length=80, description="operator name or badge (logged)")
    confirm: bool | Annotated[str, StringConstraints(max_length=200)] = Field(default=False, description=(
        "true: promote despite the review's warning (edge/learn/poison.py); or the id of the live model the caller "
        "expects to replace (issue 26, edge/api/changes.py): a confirmation, refused with 409 when another is live"))


class ShadowLabelRequest(BaseModel):
    label: str = Field(min_length=1, max_length=80, description="a class name of the model, or 'skip'")
    who: str | None = Field(default=None, max_length=80)


router = APIRouter(tags=["model life cycle"])


def allowed(state: ApiState) -> None:
    cfg = state.config
    if not has_credentials(cfg) and not cfg.api.reload_without_token:  # api.token or named users (issue 26)
        raise HTTPException(403, "model changes over HTTP need api.token (or api.reload_without_token: true)")


def run(state: ApiState, fn: Callable[[], dict[str, Any]]) -> JSONResponse:
    allowed(state)
    try:
        out = fn()
    except ControlError as e:
        raise HTTPException(e.status, str(e)) from None
    if state.operator is not None:
        state.operator.invalidate()
    return JSONResponse(out)


@router.get("/model", summary="Live model, candidate in shadow (metrics side by side), shadow statistics, retrain, history",
            dependencies=ENGINEER)
def get_model(control: Control) -> dict[str, Any]:
    return control.doc()


@router.get("/ui/model", summary="The operator page's Model panel: GET /model without file paths, plus the "
            "disagreement queue and, while an anomaly package is live, the suggestion to train a supervised head "
            "(read-only, open like the page)", tags=["operator page"])
def ui_model(state: State, control: Control, limit: int = Query(20, ge=1, le=200)) -> dict[str, Any]:
    cfg = state.config
    d: dict[str, Any] = without_paths(control.doc())
    d["disagreements"] = control.shadow.store.items(limit)
    d["review"] = candidate_review(d, cfg)  # issue 24: CV next to the recent parts, and the warning
    d["suggestion"] = control.suggestion()  # issue 29: label counts toward a supervised head, then the switch
    return d


@router.post("/model/candidate", summary="Load a candidate package and run it in shadow", dependencies=ENGINEER,
             responses={404: {"description": "no such package"}, 422: {"description": "cannot load, or self-test failed"}})
def candidate(state: State, control: Control, body: CandidateRequest) -> JSONResponse:
    out = run(state, lambda: control.load_candidate(control.resolve(body.path)))
    state.audited("candidate", f"candidate {body.path} loaded in shadow", live_id(state), body.path)
    return out


@router.delete("/model/candidate", summary="Stop shadow mode and forget the candidate", dependencies=ENGINEER)
def drop(state: State, control: Control) -> JSONResponse:
    out = run(state, control.drop_candidate)
    state.audited("candidate", "candidate dropped", live_id(state), None)
    return out


@router.post("/model/retrain", status_code=202, dependencies=ENGINEER,
             summary="Retrain from the operator's labels in the background, by a recipe (a supervised head, or a new "
                     "bank of good parts for an anomaly package); the candidate runs in shadow; GET /model shows the "
                     "progress",
             responses={404: {"description": "retrain not available in this install"}, 409: {"description": "already running"},
                        422: {"description": "the recipe or an option does not fit the live package"}})
def retrain(state: State, control: Control, body: RetrainRequest | None = None) -> JSONResponse:
    b = body or RetrainRequest()
    job: dict[str, Any] = {}

    def start() -> dict[str, Any]:
        job.update(control.start_retrain(b.target_recall, b.cost_ratio, b.min_per_class, b.recipe, b.target_frr))
        return job

    resp = run(state, start)
    resp.status_code = 202
    state.audited("retrain", f"retrain ({job['recipe']} recipe) started from the operator's labels", live_id(state),
                  b.model_dump(mode="json", exclude_none=True))
    return resp


@router.post("/model/promote", summary="Swap the candidate in (atomic reload + self-test); the live one is kept for rollback",
             dependencies=ENGINEER, responses={409: {"description": "no candidate"}, 422: {"description": "refused"}})
def promote(state: State, control: Control, body: ActionRequest | None = None) -> JSONResponse:
    cfg = state.config
    before = expect_live(state, body.confirm if body else None, "promote")  # issue 26: confirm names the live model
    who = actor(body.who if body else None)
    try:  # issue 24: a candidate that disagrees with live on too many recent parts needs a confirmation
        check_promote(control.doc(), cfg, bool(body and body.confirm), who)
    except PromoteNeedsConfirmation as e:
        raise HTTPException(409, str(e)) from None
    out = run(state, lambda: control.promote(who))
    state.audited("promote", f"promoted {live_id(state)} over {before}", before, live_id(state))
    return out


@router.post("/model/rollback", summary="Swap the previous package back in", dependencies=ENGINEER,
             responses={409: {"description": "nothing to roll back to"}, 422: {"description": "refused"}})
def rollback(state: State, control: Control, body: ActionRequest | None = None) -> JSONResponse:
    before = expect_live(state, body.confirm if body else None, "roll back")
    out = run(state, lambda: control.rollback(actor(body.who if body else None)))
    state.audited("rollback", f"rolled back from {before} to {live_id(state)}", before, live_id(state))
    return out


@router.get("/ui/shadow/{name}.jpg", summary="The crop of one disagreement", response_class=Response,
            tags=["operator page"], responses={200: {"content": {"image/jpeg": {}}}})
def shadow_image(control: Control, name: str) -> Response:
    try:
        path = control.shadow.store.crop_path(name)
    except FeedbackError:
        path = None
    if path is None or not path.is_file():
        raise HTTPException(404, f"{name} is not in the disagreement queue")
    return Response(path.read_bytes(), media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.post("/ui/shadow/{name}", summary="Label (or skip) one disagreement: the crop goes to feedback/<class>/",
             tags=["operator page"], dependencies=ENGINEER,
             responses={404: {"description": "not in the queue"}, 422: {"description": "unknown label"}})
def shadow_label(state: State, control: Control, name: str, body: ShadowLabelRequest) -> dict[str, Any]:
    cfg = state.config
    model = state.models.get()
    if model is None:
        raise HTTPException(503, "no model loaded")
    names = list(model.labels)
    if body.label != "skip" and body.label not in names:
        raise HTTPException(422, f"label must be one of {', '.join(names)} or 'skip'")
    op = state.operator
    if body.label != "skip" and op is None:
        raise HTTPException(503, "the operator page (feedback store) is off: operator.enabled")
    try:
        data, rec = control.shadow.store.pop(name)
    except FeedbackError as e:
        raise HTTPException(404, str(e)) from None
    if body.label == "skip" or op is None:  # op is None only for a skip: a label was refused above
        return {"name": name, "label": "skip"}
    decision = rec.get("decision") or {}
    record = {"decision_id": decision.get("event_id"), "source": "shadow disagreement",
              "model_id": (rec.get("live") or {}).get("model_id"), "score": (rec.get("live") or {}).get("score"),
              "threshold": (rec.get("live") or {}).get("threshold"), "verdict": decision.get("label"),
              "candidate": rec.get("candidate"), "who": body.who, "line": cfg.line, "camera": cfg.camera}
    try:
        saved = op.feedback.save(name, body.label, "label", data, None, record)
    except OSError as e:
        raise HTTPException(507, f"label not stored: {e.strerror or e}") from None
    op.invalidate()
    state.audited("label", f"disagreement {name} labelled", decision.get("label"), body.label)  # issue 26
    return dict(saved)
