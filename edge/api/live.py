"""The page's live view: ``/ui/summary`` (header, counters, rates, the result tile's data), ``/ui/frame.jpg`` (the
current frame; while a box is in it "inspecting..." and the located box, never a verdict) and ``/ui/result.jpg``
(the verdict drawn on the frame that decided the last box)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

from edge.api.access import access_summary, has_credentials
from edge.api.deps import Page, State
from edge.api.page_state import OperatorState, jpeg_response, result_doc
from edge.api.state import ApiState, status_of
from edge.learn.feedback import KINDS, parse_iso

router = APIRouter(tags=["operator page"])


@router.get("/ui/summary", summary="Everything the page's header and counters show")
def summary(state: State, op: Page) -> dict[str, Any]:
    return op.summary(lambda: build_summary(state, op))


def build_summary(state: ApiState, op: OperatorState) -> dict[str, Any]:
    cfg = state.config
    s = status_of(state)
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
        "token_required": has_credentials(cfg),
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
        "result": result_doc(getattr(state.latest, "result", None)),  # the last box decided (the result tile)
        "spc": loop.get("spc"),  # the SPC alarm (edge/judge/spc.py), None when spc.enabled is false
        # issue 26: the current shift and lot {name, started, boxes, ng, yield, n} (edge/deliver/station.py)
        **(state.station.counters() if state.station is not None else {"shift": None, "lot": None}),
    }


@router.get(
    "/ui/frame.jpg",
    summary="The current frame with the ROI and, while a box is in view, INSPECTING... and the located box; "
    "never a verdict (the result tile has it), scaled for the page",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, 503: {"description": "no frame yet"}},
)
def frame(state: State, op: Page) -> Response:
    jpeg = op.live_frame(state)
    if jpeg is None:
        raise HTTPException(503, "no frame captured yet")
    return jpeg_response(jpeg)


@router.get(
    "/ui/result.jpg",
    summary="The result tile: the last decided box's verdict drawn on the frame that decided it",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "no box decided yet"}},
)
def result(state: State, op: Page) -> Response:
    jpeg = op.result_frame(state)
    if jpeg is None:
        raise HTTPException(404, "no box decided yet")
    return jpeg_response(jpeg)
