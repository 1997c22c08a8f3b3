"""``POST /predict``: classify one uploaded image, bounded (size, pixels, concurrent decodes: edge/api/upload.py)."""

from __future__ import annotations

from fastapi import APIRouter, File, HTTPException, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from edge.api.deps import OPERATE, Decodes, State
from edge.api.upload import DECODE_WAIT_S, decode_upload


class PredictResult(BaseModel):
    model_config = ConfigDict(protected_namespaces=())  # a field named model_id: no warning on pydantic < 2.10

    label: str
    score: float = Field(description="probability of the positive (defect) class")
    is_defect: bool
    threshold: float
    latency_ms: float
    model_id: str
    width: int
    height: int


router = APIRouter(tags=["inference"])


@router.post(
    "/predict",
    response_model=PredictResult,
    tags=["inference"],
    summary="Classify one uploaded image (multipart field `file`)",
    responses={
        413: {"description": "upload larger than api.max_upload_bytes, or more pixels than api.max_image_pixels"},
        415: {"description": "not a decodable image, or not JPEG/PNG/BMP/WebP"},
        422: {"description": "empty upload or missing `file` field"},
        503: {"description": "no model loaded"},
    },
    dependencies=OPERATE,
)
def predict(state: State, decodes: Decodes, file: UploadFile = File(..., description="a JPEG, PNG, BMP or WebP image")) -> PredictResult:
    cfg = state.config
    data = file.file.read(cfg.api.max_upload_bytes + 1)
    if not decodes.acquire(timeout=DECODE_WAIT_S):
        raise HTTPException(503, "too many images are being decoded; retry shortly", {"Retry-After": "1"})
    try:  # the slot is held until the decoded image is dropped (issue 24: decodes in memory are bounded)
        image = decode_upload(data, cfg.api.max_upload_bytes, cfg.api.max_image_pixels)
        model = state.models.get()
        if model is None:
            raise HTTPException(503, "no model loaded")
        threshold = state.threshold(model)
        p = model.classifier.predict(image, threshold)
        height, width = int(image.shape[0]), int(image.shape[1])
        del image
    finally:
        decodes.release()
    return PredictResult(
        label=p.label,
        score=float(p.score),
        is_defect=bool(p.is_defect),
        threshold=threshold,
        latency_ms=float(p.latency_ms),
        model_id=model.classifier.model_id,
        width=width,
        height=height,
    )
