"""Feedback and labels: answer a decision or a check (``POST /ui/feedback``: the crop goes to ``feedback/<class>/``,
edge/learn/feedback.py), collection mode and its label queue (``/ui/collection``, ``/ui/queue``), and the review of
stored labels with who gave each (``/ui/labels``)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from edge.api.deps import OPERATE, Page, State
from edge.api.page_state import decision_images, jpeg_response, model_labels, model_or_503
from edge.learn.feedback import FeedbackError, class_for, safe_name


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


router = APIRouter(tags=["operator page"])


@router.post("/ui/feedback", summary="Answer a decision or a check: correct, false reject or missed defect",
             responses={404: {"description": "unknown or forgotten decision/check"},
                   422: {"description": "the answer does not fit the verdict"}},
             dependencies=OPERATE)
def feedback(state: State, op: Page, body: FeedbackRequest) -> dict[str, Any]:
    cfg = state.config
    model = model_or_503(state)
    if body.target == "decision":
        kept = decision_images(state, op, body.id)
        rec = kept.record
        record: dict[str, Any] = {"decision_id": body.id, "source": "decision"}
    else:
        found = op.kept("check", body.id)
        if found is None:
            raise HTTPException(404, f"no recent check {body.id}")
        kept, rec = found, found.record
        record = {"check_id": body.id, "source": f"manual check ({rec.get('source')})"}
    try:
        cls = class_for(body.kind, bool(rec["is_defect"]), model_labels(model))
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
    state.audited("feedback", f"{body.target} {body.id}: {body.kind}", rec.get("label"), cls)  # issue 26
    return saved


@router.get("/ui/queue", summary="Collection mode's unlabelled crops, oldest first")
def queue(state: State, op: Page, limit: int = Query(50, ge=1, le=500)) -> dict[str, Any]:
    model = state.models.get()
    return {
        "labels": list(model_labels(model)) if model is not None else [],
        "waiting": len(op.collector),
        "items": op.collector.items(limit),
    }


@router.get("/ui/queue/{name}.jpg", summary="One unlabelled crop", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}})
def queue_image(op: Page, name: str) -> Response:
    try:
        path = op.collector.crop_path(name)
    except FeedbackError:
        path = None
    if path is None or not path.is_file():
        raise HTTPException(404, f"{name} is not in the label queue")
    return jpeg_response(path.read_bytes())


@router.post("/ui/queue/{name}", summary="Label (or skip) one crop of the queue", dependencies=OPERATE,
             responses={404: {"description": "not in the queue"}, 422: {"description": "unknown label"}})
def queue_label(state: State, op: Page, name: str, body: LabelRequest) -> dict[str, Any]:
    cfg = state.config
    model = model_or_503(state)
    names = model_labels(model)
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
        state.audited("label", f"queued crop {name} labelled", rec.get("label"), body.label)  # issue 26
        return saved
    except OSError as e:
        raise HTTPException(507, f"label not stored: {e.strerror or e}") from None


@router.post("/ui/collection", summary="Collection mode on or off (and every how many boxes)", dependencies=OPERATE)
def collection(op: Page, body: CollectionRequest) -> dict[str, Any]:
    op.collector.set(op.collector.enabled if body.enabled is None else body.enabled, body.every)
    op.invalidate()
    return {"enabled": op.collector.enabled, "every": op.collector.every, "queued": len(op.collector)}

# issue 24: labels can be reviewed (with who gave them and from where) and removed
@router.get("/ui/labels", summary="Labelled crops, newest first, with who gave each and from where", dependencies=OPERATE)
def labels_review(op: Page, limit: int = Query(200, ge=1, le=5000),
                  who: str | None = Query(None, max_length=200, description="only this person or client")) -> dict[str, Any]:
    items = op.feedback.labels(limit, who)
    by: dict[str, int] = {}
    for item in items:
        key = f"{item.get('who') or '-'} ({item.get('principal') or '-'} from {item.get('from') or '-'})"
        by[key] = by.get(key, 0) + 1
    return {"total": len(op.feedback), "by_source": by, "items": items}


@router.delete("/ui/labels/{name}", summary="Remove one labelled crop (review)", dependencies=OPERATE,
               responses={404: {"description": "no such label"}})
def label_remove(op: Page, name: str) -> dict[str, Any]:
    try:
        removed = op.feedback.remove(safe_name(name))
    except FeedbackError:
        removed = False
    if not removed:
        raise HTTPException(404, f"no label {name}")
    op.invalidate()
    return {"removed": name}
