"""Manual checks: an uploaded image (``POST /ui/check``, bounded like ``/predict``) or the current frame's ROI
(``POST /ui/check/current``; an empty belt answers "no box" and is never classified)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import cv2
import numpy as np
from fastapi import APIRouter, File, HTTPException, UploadFile

from edge.api.deps import OPERATE, Decodes, Page, State
from edge.api.page_state import OperatorState, box_in, model_or_503, to_jpeg
from edge.api.state import ApiState
from edge.api.upload import DECODE_WAIT_S, decode_upload
from edge.capture.roi import crop

router = APIRouter(tags=["operator page"])


def run_check(state: ApiState, op: OperatorState, image: np.ndarray, source: str,
              frame: np.ndarray | bytes | None) -> dict[str, Any]:
    cfg = state.config
    model = model_or_503(state)
    threshold = state.threshold(model)
    clf = model.classifier
    p = clf.predict(image, threshold)
    seen = cv2.cvtColor(np.ascontiguousarray(clf.preprocess(image)), cv2.COLOR_RGB2BGR)
    record = {
        "check_id": uuid.uuid4().hex,
        "source": source,
        "label": p.label,
        "is_defect": bool(p.is_defect),
        "score": round(float(p.score), 6),
        "threshold": threshold,
        "model_id": clf.model_id,
        "latency_ms": round(float(p.latency_ms), 2),
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "checked_at": time.time(),
    }
    # The crop kept for feedback is the image scaled to operator.check_keep_width, as JPEG (issue 24: 20 kept
    # full-resolution decodes of 49 MP uploads were 3 GB); the one shown is what the model saw.
    keep = cfg.operator.check_keep_width
    op.add_check(record, to_jpeg(frame, keep) if isinstance(frame, np.ndarray) else frame, to_jpeg(image, keep) or b"")
    kept = op.kept("check", record["check_id"])
    if kept is not None:
        kept.seen = to_jpeg(seen)
    return record


@router.post(
    "/ui/check",
    summary="Manual check of an uploaded image: verdict, score, threshold; what the model saw at /ui/checks/{id}/seen.jpg",
    responses={413: {"description": "larger than api.max_upload_bytes or api.max_image_pixels"},
               415: {"description": "not a decodable image"}, 422: {"description": "empty or missing file"},
               503: {"description": "no model loaded, or too many decodes at once"}},
    dependencies=OPERATE,
)  # body size: edge.api.middleware.BodyLimit covers /ui/check too (no FastAPI max_body_size: 0.164+, Python 3.11+)
def check_upload(state: State, op: Page, decodes: Decodes,
                 file: UploadFile = File(..., description="a JPEG, PNG, BMP or WebP image")) -> dict[str, Any]:
    cfg = state.config
    data = file.file.read(cfg.api.max_upload_bytes + 1)
    if not decodes.acquire(timeout=DECODE_WAIT_S):  # shared with /predict: api.max_concurrent_decodes
        raise HTTPException(503, "too many images are being decoded; retry shortly", {"Retry-After": "1"})
    try:  # the slot is held until the decoded image is dropped (issue 24: decodes in memory are bounded)
        image = decode_upload(data, cfg.api.max_upload_bytes, cfg.api.max_image_pixels)
        del data
        return run_check(state, op, image, "upload", None)
    finally:
        decodes.release()


@router.post("/ui/check/current", summary="Manual check of the current frame's ROI",
             responses={503: {"description": "no frame yet or no model"}}, dependencies=OPERATE)
def check_current(state: State, op: Page) -> dict[str, Any]:
    cfg = state.config
    frame = state.latest.frame
    if frame is None:
        raise HTTPException(503, "no frame captured yet")
    try:
        roi = crop(frame.image, cfg.roi)
    except ValueError as e:
        raise HTTPException(409, f"the ROI does not fit the current frame: {e}") from None
    located = box_in(np.ascontiguousarray(roi), model_or_503(state))
    if not located.found:  # an empty belt is never classified, so it can never be stored as "ok"
        return {"check_id": None, "source": "current frame", "no_box": True, "label": None, "is_defect": None,
                "score": None, "reason": located.reason or "no box in the ROI", "checked_at": time.time()}
    return run_check(state, op, np.ascontiguousarray(roi), "current frame", frame.image)
