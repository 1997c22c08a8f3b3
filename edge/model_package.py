"""The model package: ``<name>.tflite`` plus its metadata sidecar ``<name>.tflite.json``.

``convert`` writes the package, ``edge`` reads it. Everything the edge needs to run the model the way it
was evaluated lives in the sidecar: labels, input size and colour order, how frames are preprocessed,
quantisation parameters, the operating threshold, test metrics, the sha256 of the .tflite and a few golden
samples (small PNGs at the model input size, base64, with the score the converted model gave them).

No TensorFlow here: this module is imported on the edge.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SCHEMA_VERSION = 1
SIDECAR_SUFFIX = ".json"

ModelFormat = Literal["int8", "fp16", "float32"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QuantParams(_Strict):
    """Affine quantisation of a tensor: real = (q - zero_point) * scale."""

    scale: float
    zero_point: int


class InputSpec(_Strict):
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    channels: Literal[3] = 3
    dtype: Literal["uint8", "int8", "float32"]
    colour_order: Literal["RGB"] = "RGB"
    value_range: tuple[float, float] = (0.0, 255.0)  # what the model expects before its own rescaling
    # "area": cv2.INTER_AREA when shrinking, INTER_LINEAR when enlarging (as training); "bilinear": always LINEAR
    resize: Literal["area", "bilinear"] = "area"
    quantization: QuantParams | None = None


class OutputSpec(_Strict):
    dtype: Literal["uint8", "int8", "float32"]
    meaning: str = "sigmoid probability of positive_class"
    quantization: QuantParams | None = None


class SplitMetrics(_Strict):
    """Metrics of one model on the held-out test split at the package threshold."""

    n: int
    accuracy: float
    macro_f1: float
    auc: float | None = None  # None when the split holds only one class
    recall: float | None = None  # of the positive (defect) class
    specificity: float | None = None  # recall of the negative class


class PackageMetrics(_Strict):
    split: str = "test"
    keras: SplitMetrics
    tflite: SplitMetrics
    agreement: float  # share of images where Keras and TFLite fall on the same side of the threshold
    max_abs_score_diff: float
    gate_passed: bool
    max_f1_drop: float
    max_auc_drop: float
    keras_threshold: float | None = None  # the Keras model is scored at this threshold (tflite at `threshold`)


class TrainingDataSummary(_Strict):
    data_dir: str | None = None
    counts: dict[str, dict[str, int]] = Field(default_factory=dict)  # split -> class -> count
    representative_count: int = 0  # images used to calibrate int8 (from the training split)


class GoldenSample(_Strict):
    name: str  # source file name, for humans
    label: str  # ground-truth label
    png_b64: str  # RGB image at the model input size, PNG (lossless), base64; decode with decode_golden()
    expected_score: float  # what the converted model returned for exactly this image


class ModelMetadata(_Strict):
    schema_version: int = SCHEMA_VERSION
    name: str
    format: ModelFormat
    labels: list[str] = Field(min_length=2)  # index order of training
    positive_class: str
    input: InputSpec
    output: OutputSpec
    preprocessing: str
    threshold: float = Field(ge=0, le=1)
    threshold_source: str = "metrics.json"
    metrics: PackageMetrics | None = None
    training_data: TrainingDataSummary = TrainingDataSummary()
    source: dict[str, str] = Field(default_factory=dict)  # run dir, keras model path, ...
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(gt=0)
    created_at: str
    tool_version: str
    versions: dict[str, str] = Field(default_factory=dict)
    golden: list[GoldenSample] = Field(default_factory=list)
    golden_tolerance: float = Field(default=0.02, gt=0)

    @model_validator(mode="after")
    def _positive_in_labels(self) -> ModelMetadata:
        if self.positive_class not in self.labels:
            raise ValueError(f"positive_class {self.positive_class!r} is not one of labels {self.labels}")
        return self

    @property
    def negative_class(self) -> str:
        return next(lbl for lbl in self.labels if lbl != self.positive_class)

    def summary(self) -> dict[str, Any]:
        """The metadata without the golden images (for logs, /status and the like)."""
        d = self.model_dump(mode="json", exclude={"golden"})
        d["golden_count"] = len(self.golden)
        return d


class PackageError(ValueError):
    """A model package that cannot be used; the message is one line."""


def sidecar_path(model_path: str | Path) -> Path:
    p = Path(model_path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load_metadata(model_path: str | Path) -> ModelMetadata:
    """Read and validate the sidecar of ``model_path``; PackageError (one line) if missing or invalid."""
    side = sidecar_path(model_path)
    if not side.is_file():
        raise PackageError(f"missing metadata sidecar {side} (convert writes it next to the .tflite)")
    try:
        raw = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PackageError(f"unreadable metadata sidecar {side}: {e}") from e
    try:
        return ModelMetadata.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"]) or "(root)"
        raise PackageError(
            f"invalid metadata sidecar {side}: {loc}: {first['msg']} ({e.error_count()} error(s))"
        ) from e


def write_metadata(meta: ModelMetadata, model_path: str | Path) -> Path:
    side = sidecar_path(model_path)
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(json.dumps(meta.model_dump(mode="json"), indent=1) + "\n", encoding="utf-8")
    tmp.replace(side)
    return side


def to_rgb_input(bgr: np.ndarray, height: int, width: int, resize: str = "area") -> np.ndarray:
    """Any OpenCV image (BGR, BGRA or grey, uint8) -> RGB uint8 (height, width, 3), the model's input.

    The same function is used by convert (calibration, evaluation, golden samples) and by the edge, so
    the preprocessing cannot drift between the two.
    """
    if not isinstance(bgr, np.ndarray):
        raise TypeError(f"expected a numpy image, got {type(bgr).__name__}")
    if bgr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {bgr.dtype}")
    if bgr.ndim == 2:
        bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
    elif bgr.ndim == 3 and bgr.shape[2] == 4:
        bgr = cv2.cvtColor(bgr, cv2.COLOR_BGRA2BGR)
    elif bgr.ndim == 3 and bgr.shape[2] == 1:
        bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
    elif not (bgr.ndim == 3 and bgr.shape[2] == 3):
        raise ValueError(f"expected an image of shape (H, W[, 1|3|4]), got {bgr.shape}")
    if bgr.shape[0] == 0 or bgr.shape[1] == 0:
        raise ValueError(f"empty image {bgr.shape}")
    h, w = bgr.shape[:2]
    if (h, w) != (height, width):
        # Same rule as training (training/data.py resize): INTER_AREA when shrinking, else INTER_LINEAR.
        shrink = h > height or w > width
        interp = cv2.INTER_AREA if (resize == "area" and shrink) else cv2.INTER_LINEAR
        bgr = cv2.resize(bgr, (width, height), interpolation=interp)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


PREPROCESSING_TEXT = (
    "OpenCV BGR uint8 frame -> stretch to {w}x{h} (cv2.INTER_AREA when shrinking, INTER_LINEAR when "
    "enlarging) -> BGR to RGB -> uint8 values 0..255 "
    "fed as-is (int8 package: uint8 input tensor; float packages: cast to float32); "
    "the MobileNetV2 scaling to [-1, 1] is inside the model"
)


def encode_golden(rgb: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not PNG-encode a golden sample")
    return base64.b64encode(buf.tobytes()).decode("ascii")


def decode_golden(png_b64: str) -> np.ndarray:
    """Golden sample -> RGB uint8 array at the model input size."""
    data = np.frombuffer(base64.b64decode(png_b64), dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("golden sample is not a valid PNG")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
