"""``/status`` (config without secrets, counters, camera, MQTT, model), ``/snapshot.jpg`` and Prometheus ``/metrics``."""

from __future__ import annotations

import logging
from typing import Any

import cv2
from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

from edge.api.deps import VIEW, State
from edge.api.state import status_of

log = logging.getLogger(__name__)

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


router = APIRouter(tags=["status"])


@router.get("/status", summary="Config (secrets masked), counters, camera, MQTT, model", dependencies=VIEW)
def status(state: State) -> dict[str, Any]:
    return status_of(state)


@router.get(
    "/snapshot.jpg",
    summary="The latest frame with the ROI and the last verdict drawn",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, 503: {"description": "no frame yet"}},
    dependencies=VIEW,
)
def snapshot(state: State) -> Response:
    cfg = state.config
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


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
def metrics(state: State) -> Response:
    cfg = state.config
    if not cfg.metrics.enabled:
        raise HTTPException(404, "metrics are disabled (metrics.enabled: false)")
    return Response(state.metrics.render(), media_type=PROMETHEUS_CONTENT_TYPE)
