"""Recent decisions for the page (``/ui/decisions``), with the full frame, crop and thumbnail of each, and the images of
manual checks (``/ui/checks/{id}/...``)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from edge.api.deps import Page, State
from edge.api.page_state import decision_images, image_of

router = APIRouter(tags=["operator page"])


@router.get("/ui/decisions", summary="Recent decisions, newest first, with whether their images are kept")
def decisions(state: State, op: Page, limit: int = Query(20, ge=1, le=200)) -> list[dict[str, Any]]:
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


@router.get("/ui/decisions/{event_id}/{which}.jpg", summary="A decision's full frame, crop or thumbnail",
            response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
def decision_image(state: State, op: Page, event_id: str, which: Literal["frame", "crop", "thumb"]) -> Response:
    return image_of(decision_images(state, op, event_id), which)


@router.get("/ui/checks/{check_id}/{which}.jpg", summary="A manual check's image or the crop the model saw",
            response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
def check_image(op: Page, check_id: str, which: Literal["frame", "crop", "thumb", "seen"]) -> Response:
    kept = op.kept("check", check_id)
    if kept is None:
        raise HTTPException(404, f"no recent check {check_id}")
    return image_of(kept, which)
