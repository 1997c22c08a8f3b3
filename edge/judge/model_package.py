"""The model package: ``<name>.tflite`` plus its metadata sidecar ``<name>.tflite.json``.

``convert`` writes the package, ``edge`` reads it. Everything the edge needs to run the model the way it
was evaluated lives in the sidecar: labels, input size and colour order, how frames are preprocessed,
quantisation parameters, the operating threshold, test metrics, the sha256 of the .tflite and a few golden
samples (small PNGs at the model input size, base64, with the score the converted model gave them).

Features and heads (issue 11, the line teaches itself):
  * ``features`` (optional): the .tflite has a second output, the backbone's pooled feature vector (the input
    of the model's final Dense head). The sidecar names that output (tensor name, position among the
    outputs, dimension, quantisation) and carries ``backbone_sha256``: a digest of everything the features
    depend on inside the .tflite (edge/judge/backbone.py: the ops upstream of the features output, their tensor
    shapes, types, quantisation and constant data; tensor names and everything downstream, i.e. the head,
    are left out). Two packages with equal ``backbone_sha256`` compute identical features for the same input,
    so a head fitted on one package's features runs on the other's. Packages from before features have
    ``features: null`` and still load.
  * ``head`` (optional): a head-only package. The .tflite is the parent package's file unchanged (a hardlink
    or copy; ``sha256`` is the same), the sidecar adds a linear head applied in numpy to the features output:
    ``score = sigmoid(((f - mean) / scale) . weights + bias)``. The score output of the .tflite is then
    ignored, ``threshold`` is the head's, the golden samples' expected scores are the head's (so the
    self-test covers it), and ``package_sha256`` covers the head like any other sidecar field: a changed
    weight is a new model id and an edited one is refused as tampering. Layout written by
    ``boxinspect retrain`` (edge/learn/retrain.py): ``<out_dir>/<name>.tflite`` + ``<out_dir>/<name>.tflite.json``.
  * ``cv_metrics`` (optional): the cross-validated metrics of the model's head (out-of-fold scores of the
    grouped CV that chose C and the threshold), written by ``retrain`` and by ``convert`` for a run of the
    linear recipe, so a live package and a candidate can be compared side by side.

Integrity: ``package_sha256`` is the sha256 of the sidecar's own canonical JSON (every field but this one,
keys sorted, no whitespace), and the sidecar holds the sha256 of the .tflite. So the package hash covers
both files: an edited threshold (or any other sidecar field) no longer matches, and ``verify_package``
refuses it with one line. The model id (``name@<package_sha256[:12]>``) changes with any change to either
file. This module is the one place that validates a package; the classifier and the daemon call it.
Issue 24: ``write_metadata`` records each golden sample's verdict (``expected_label``: its expected score at the
threshold written); ``load_metadata`` refuses a package whose threshold or labels no longer give those verdicts (a
sidecar resealed by hand with a wrong threshold). A deliberate forger can redo the verdicts too: signatures
(edge/judge/signing.py, ``model.trusted_keys``) are the defence against that.

No TensorFlow here: this module is imported on the edge.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge.judge.localize import NO_CROP, CropSpec, Located, crop, locate_for_still
from edge.state import verdict

SCHEMA_VERSION = 2  # 2: package_sha256 covers the sidecar
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
    # issue 24: what the converted model decided on it at the package's threshold (write_metadata records it; not the
    # ground truth). A package whose threshold or labels contradict these is refused (golden_verdict_mismatches).
    # None: a package from before issue 24.
    expected_label: str | None = None


class FeaturesSpec(_Strict):
    """The .tflite's second output: the backbone's pooled feature vector (the input of the final Dense head)."""

    output_name: str  # the TFLite output tensor's name
    output_position: int = Field(ge=0)  # position in the interpreter's output details
    dim: int = Field(gt=1)
    dtype: Literal["uint8", "int8", "float32"]
    quantization: QuantParams | None = None
    layer: str = ""  # the Keras layer whose input the features are (the head), for humans
    backbone_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")  # edge/judge/backbone.py: equal => identical features


class CVMetrics(_Strict):
    """Grouped cross-validated metrics of a head: out-of-fold scores of the CV that chose C and the threshold."""

    n: int
    counts: dict[str, int] = Field(default_factory=dict)  # class -> images
    folds: int = 0
    groups: int = 0
    auc: float | None = None
    macro_f1: float | None = None  # at the package threshold
    recall: float | None = None
    specificity: float | None = None
    threshold: float | None = None
    rule: str = ""
    C: float | None = None
    note: str = ""


class LinearHead(_Strict):
    """A logistic head on the features output: ``sigmoid(((f - mean) / scale) . weights + bias)``."""

    kind: Literal["standardised_logistic"] = "standardised_logistic"
    mean: list[float]
    scale: list[float]
    weights: list[float]
    bias: float
    parent_model_id: str = ""  # the package whose backbone (and .tflite) this head runs on
    trained_at: str = ""
    trained_on: dict[str, int] = Field(default_factory=dict)  # class -> images
    sources: list[str] = Field(default_factory=list)  # the labelled folders

    @model_validator(mode="after")
    def _same_length(self) -> LinearHead:
        n = len(self.weights)
        if n < 2 or len(self.mean) != n or len(self.scale) != n:
            raise ValueError(f"head vectors must have one equal length >= 2 (mean {len(self.mean)}, "
                             f"scale {len(self.scale)}, weights {n})")
        if not all(s > 0 for s in self.scale):
            raise ValueError("head scale must be > 0 everywhere")
        return self

    def folded(self) -> tuple[np.ndarray, float]:
        """(w', b') with the standardisation folded in (float64): score = sigmoid(f . w' + b')."""
        w = np.asarray(self.weights, np.float64) / np.asarray(self.scale, np.float64)
        return w, float(self.bias - np.dot(w, np.asarray(self.mean, np.float64)))

    def score(self, features: np.ndarray) -> np.ndarray | float:
        """P(positive) for one feature vector (D,) -> float, or a batch (N, D) -> (N,)."""
        w, b = self.folded()
        z = np.asarray(features, np.float64) @ w + b
        out = 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))
        return float(out) if np.ndim(out) == 0 else out


class MapKind(str, Enum):
    """What a decision's map shows (the event's ``anomaly_map.kind``, edge/judge/heatmap.py)."""

    ANOMALY = "anomaly"  # an anomaly package: each cell's distance to the nearest good patch (edge/judge/anomaly.py)
    HEAD = "head"  # a supervised package: its head applied to each cell of the last feature map (edge/judge/head_map.py)


class CellsSpec(_Strict):
    """A supervised package's map (issue 29): the .tflite's last feature map (the input of the head's global average
    pooling, one vector per cell) as an extra output. The head applied to each cell gives the cell's logit (a class
    activation map, edge/judge/head_map.py): ``z_cell = cell . w[:channels] + (f[channels:] . w[channels:] + b)``,
    with ``f`` the pooled features output (the global average is its first ``channels`` values; the rest, the
    mid-level pooling of ``gap+mid``, is the same for every cell). The mean of the cell logits is the crop's logit,
    so the map shows where the score comes from. ``weights``/``bias``: the .tflite's own Dense head; a head-only
    package maps with its sidecar head instead. An anomaly package exports it too, without weights (its own map is
    the patch distances): a supervised head retrained on it (the switch, edge/learn/recipes.py) maps with it."""

    output_name: str
    output_position: int = Field(ge=0)  # position among the interpreter's outputs
    rows: int = Field(gt=0)
    cols: int = Field(gt=0)
    channels: int = Field(gt=1)  # the first ``channels`` values of the features are the global average of the map
    dtype: Literal["uint8", "int8", "float32"]
    quantization: QuantParams | None = None
    weights: list[float]  # the .tflite's head on the features (len = features.dim); [] for an anomaly package
    bias: float


class AnomalySpec(_Strict):
    """An anomaly package (``train --recipe anomaly``, issue 29): the .tflite's patch-map output is scored in numpy
    against a bank of good patches (edge/judge/anomaly.py). The bank file lies beside the .tflite; its sha256 is here,
    so ``package_sha256`` covers the bank and the scoring rule. The package score is ``d / (d + d_thr)``."""

    method: Literal["patchcore", "padim"]
    bank_file: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a file name in the package's folder
    bank_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bank_rows: int = Field(ge=0)  # patch vectors in the bank (0 for padim)
    threshold_distance: float = Field(gt=0)  # the distance that scores 0.5
    threshold_rule: dict[str, Any] = Field(default_factory=dict)  # edge/judge/anomaly.py frr_threshold: target, CI
    patches_output_name: str
    patches_output_position: int = Field(ge=0)
    grid: tuple[int, int, int]  # rows, cols, channels of the patch map
    layers: list[str] = Field(default_factory=list)  # the backbone layers the patch vectors come from
    score: str = "d / (d + threshold_distance), d = largest cell distance to the bank; defect iff score >= 0.5"
    border: int = Field(default=0, ge=0)  # rings of edge cells left out of d (edge/judge/anomaly.py crop_distance)
    # one bank per view (edge/judge/anomaly.py AnomalyScorer.views): {view name: its threshold distance}; a crop of
    # another view (or none) is scored by the pooled bank and ``threshold_distance``. {} = one bank for every view
    views: dict[str, float] = Field(default_factory=dict)


class FinderGolden(_Strict):
    """A golden sample of the learned box finder: a small BGR region of a test photo around its box (PNG, lossless)
    and the box the finder gave on exactly that image when the package was made (None: no box). The self-test
    runs the finder on it again where the package is loaded (another CPU, another LiteRT build) and wants the same
    box (IoU >= :data:`FINDER_GOLDEN_IOU`)."""

    name: str  # source file name, for humans
    png_b64: str  # BGR region as PNG (decode_golden gives RGB), base64
    box: tuple[int, int, int, int] | None  # x0, y0, x1, y1 in the region's pixels (x1/y1 exclusive)


FINDER_GOLDEN_IOU = 0.9  # a finder golden sample passes when the box found again overlaps the recorded one this much


class FinderSpec(_Strict):
    """The learned box finder a package crops with (``train --finder``, issue 25): its box first, the ``crop``
    search only where it finds none (edge/judge/crops.py ``locate_still``), in convert, predict and the daemon alike.
    The finder's .tflite lies beside the package as ``file`` (``<name>.finder``: not ``*.tflite``, so ``model.dir``
    lists models only); its sha256 is here, so ``package_sha256`` covers it. ``threshold`` / ``min_area``: the
    decode constants the run cropped with (edge/judge/boxfinder.py)."""

    file: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a file name in the package's folder
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(gt=0)
    threshold: float = Field(gt=0, lt=1)
    min_area: float = Field(ge=0, lt=1)
    source: str = ""  # the file the run was trained with (for humans)
    golden: list[FinderGolden] = Field(default_factory=list)  # the finder's self-test (empty: a package from before)


class ModelMetadata(_Strict):
    schema_version: int = SCHEMA_VERSION
    name: str
    format: ModelFormat
    labels: list[str] = Field(min_length=2)  # index order of training
    positive_class: str
    input: InputSpec
    output: OutputSpec
    preprocessing: str
    crop: CropSpec = NO_CROP  # how the box is found and cropped before resizing (packages before crops: none)
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
    features: FeaturesSpec | None = None  # second .tflite output: pooled backbone features (None: older package)
    head: LinearHead | None = None  # head-only package: this head on the features replaces the score output
    cv_metrics: CVMetrics | None = None
    anomaly: AnomalySpec | None = None  # anomaly package: the patch map scored against a bank of good parts
    finder: FinderSpec | None = None  # the learned box finder beside the package, answering before the crop search
    cells: CellsSpec | None = None  # supervised package: the last feature map, for the head's map (None: no map)
    # sha256 of this sidecar without this field (see package_digest); write_metadata fills it in
    package_sha256: str = Field(default="", pattern=r"^([0-9a-f]{64})?$")

    @model_validator(mode="after")
    def _positive_in_labels(self) -> ModelMetadata:
        if self.positive_class not in self.labels:
            raise ValueError(f"positive_class {self.positive_class!r} is not one of labels {self.labels}")
        if self.head is not None:
            if self.features is None:
                raise ValueError("a head needs the features output (features is null)")
            if len(self.head.weights) != self.features.dim:
                raise ValueError(f"head has {len(self.head.weights)} weights, features output has "
                                 f"{self.features.dim} values")
        if self.cells is not None and (self.features is None or len(self.cells.weights) not in (0, self.features.dim)
                                       or self.cells.channels > self.features.dim):
            raise ValueError("cells needs the features output, weights of its length (or none) and at most as many "
                             "channels")
        return self

    @property
    def backbone_sha256(self) -> str | None:
        """Equal for two packages whose features are identical (None: the package has no features output)."""
        return self.features.backbone_sha256 if self.features else None

    @property
    def model_id(self) -> str:
        """``name@`` + the first 12 hex digits of the package hash: a new .tflite or any sidecar change is a new id."""
        return f"{self.name}@{self.package_sha256[:12]}"

    @property
    def negative_class(self) -> str:
        return next(lbl for lbl in self.labels if lbl != self.positive_class)

    def summary(self) -> dict[str, Any]:
        """The metadata without the golden images (for logs, /status and the like)."""
        d = self.model_dump(mode="json", exclude={"golden": True, "head": True, "anomaly": True,
                                                  "finder": {"golden"}})
        if self.anomaly is not None:
            d["anomaly"] = self.anomaly.model_dump(mode="json", exclude={"threshold_rule"})
        d["golden_count"] = len(self.golden)
        if self.head is not None:  # the vectors are long: summarise them
            d["head"] = {**self.head.model_dump(mode="json", exclude={"mean", "scale", "weights"}),
                         "dim": len(self.head.weights)}
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


def package_digest(sidecar: dict[str, Any]) -> str:
    """sha256 of a sidecar mapping without its ``package_sha256``: canonical JSON (sorted keys, no spaces)."""
    body = {k: v for k, v in sidecar.items() if k != "package_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def load_metadata(model_path: str | Path) -> ModelMetadata:
    """Read and validate the sidecar of ``model_path`` and check its package hash; PackageError (one line) if
    it is missing, invalid, from an older convert, or edited after convert."""
    side = sidecar_path(model_path)
    if not side.is_file():
        raise PackageError(f"missing metadata sidecar {side} (convert writes it next to the .tflite)")
    try:
        raw = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise PackageError(f"unreadable metadata sidecar {side}: {' '.join(str(e).split())[:200]}") from e
    if not isinstance(raw, dict):
        raise PackageError(f"invalid metadata sidecar {side}: the top level must be a JSON object")
    declared = raw.get("package_sha256")
    if not declared:
        raise PackageError(
            f"metadata sidecar {side} has no package_sha256 (schema_version {raw.get('schema_version')!r}, "
            f"expected {SCHEMA_VERSION}): re-run boxinspect convert"
        )
    try:
        actual = package_digest(raw)
    except ValueError as e:  # NaN/Infinity in the file
        raise PackageError(f"invalid metadata sidecar {side}: {e}") from e
    if actual != declared:
        raise PackageError(
            f"tampered model package {side}: sidecar hash mismatch (file {actual[:12]}, declared "
            f"{str(declared)[:12]}): it was edited after convert; re-run convert (set a different "
            "threshold with model.threshold in the config, not in the sidecar)"
        )
    try:
        meta = ModelMetadata.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"]) or "(root)"
        raise PackageError(
            f"invalid metadata sidecar {side}: {loc}: {first['msg']} ({e.error_count()} error(s))"
        ) from e
    wrong = golden_verdict_mismatches(meta)
    if wrong:
        raise PackageError(
            f"model package {side} contradicts its own golden verdicts ({len(wrong)} of {len(meta.golden)}; {wrong[0]}): "
            "its threshold or labels were changed after convert; re-run convert (set a different threshold with "
            "model.threshold in the config, not in the sidecar)"
        )
    return meta


def record_golden_verdicts(meta: ModelMetadata) -> None:
    """Each golden sample's ``expected_label``: what the converted model itself decides on it (its expected score at
    the package's threshold; not the ground truth, which a model may get wrong)."""
    labels = (meta.negative_class, meta.positive_class)
    for g in meta.golden:
        g.expected_label = verdict(g.expected_score, meta.threshold, labels)[0]


def golden_verdict_mismatches(meta: ModelMetadata) -> list[str]:
    """One line per golden sample whose recorded verdict the package's threshold and labels no longer give."""
    labels = (meta.negative_class, meta.positive_class)
    out = []
    for i, g in enumerate(meta.golden):
        if g.expected_label is None:
            continue
        got = verdict(g.expected_score, meta.threshold, labels)[0]
        if got != g.expected_label:
            out.append(f"golden[{i}] {g.name}: score {g.expected_score:.4f} is {got!r} at threshold {meta.threshold:.4f}, "
                       f"convert decided {g.expected_label!r}")
    return out


def verify_package(model_path: str | Path, verify_hash: bool = True) -> ModelMetadata:
    """The checks every loader runs: the .tflite exists, its sidecar is valid and matches its package hash,
    and (``verify_hash``) the .tflite is the file the sidecar describes. PackageError (one line) otherwise."""
    p = Path(model_path)
    if not p.is_file():
        raise PackageError(f"model file not found: {p}")
    meta = load_metadata(p)
    if verify_hash:
        actual = sha256_file(p)
        if actual != meta.sha256:
            raise PackageError(
                f"{p}: sha256 mismatch (file {actual[:12]}, metadata {meta.sha256[:12]}): "
                "the .tflite is not the one its metadata describes; re-run convert or copy both files"
            )
    return meta


def companion_file(model_path: str | Path, name: str, sha256: str, what: str, verify_hash: bool = True) -> Path:
    """A file a package's sidecar names beside its .tflite (an anomaly bank, a learned box finder), checked against
    the sha256 the sidecar holds. PackageError (one line) when it is missing or not the file convert wrote."""
    path = Path(model_path).with_name(name)
    if not path.is_file():
        raise PackageError(f"{what} {path} not found (convert writes it beside the .tflite; copy both)")
    if verify_hash and sha256_file(path) != sha256:
        raise PackageError(f"{path}: sha256 mismatch with the sidecar: the {what} is not the one this package was "
                           "converted with; re-run convert")
    return path


MAX_MODEL_NAME = 255


def resolve_model_name(model_dir: str | Path, name: str) -> Path:
    """``name`` (from a network request) -> the .tflite inside ``model_dir``, or PackageError.

    Only plain relative names inside the folder: no absolute path, no ``..``, no NUL/backslash, at most
    255 characters, a ``.tflite`` that exists as a file whose real path (symlinks followed) stays in the
    folder. Every refusal has the same message, so the answer does not reveal which files exist elsewhere.
    """
    shown = name if len(name) <= 80 else name[:77] + "..."
    refused = PackageError(
        f"no model package {shown!r} in model.dir (give a .tflite name inside model.dir: no absolute path, no '..')"
    )
    if not name or len(name) > MAX_MODEL_NAME or "\0" in name or "\\" in name:
        raise refused
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or rel.suffix != ".tflite":
        raise refused
    base = Path(model_dir).resolve()
    try:
        target = (base / rel).resolve()
    except (OSError, RuntimeError, ValueError):
        raise refused from None
    if base not in target.parents or not target.is_file():
        raise refused
    return target


def write_metadata(meta: ModelMetadata, model_path: str | Path) -> Path:
    """Write the sidecar beside ``model_path`` with its package hash filled in (atomic replace)."""
    side = sidecar_path(model_path)
    record_golden_verdicts(meta)  # issue 24: the verdicts at the threshold written now
    data = meta.model_dump(mode="json")
    data["schema_version"] = SCHEMA_VERSION
    data["package_sha256"] = package_digest(data)
    meta.schema_version = SCHEMA_VERSION
    meta.package_sha256 = data["package_sha256"]
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    tmp.replace(side)
    return side


def as_bgr(img: np.ndarray) -> np.ndarray:
    """Any OpenCV image (BGR, BGRA or grey, uint8) -> 3-channel BGR uint8; ValueError/TypeError if it is not one."""
    if not isinstance(img, np.ndarray):
        raise TypeError(f"expected a numpy image, got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {img.dtype}")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    elif img.ndim == 3 and img.shape[2] == 1:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif not (img.ndim == 3 and img.shape[2] == 3):
        raise ValueError(f"expected an image of shape (H, W[, 1|3|4]), got {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"empty image {img.shape}")
    return img


def to_rgb_input(bgr: np.ndarray, height: int, width: int, resize: str = "area") -> np.ndarray:
    """Any OpenCV image (BGR, BGRA or grey, uint8) -> RGB uint8 (height, width, 3), the model's input.

    The same function is used by training, convert (calibration, evaluation, golden samples) and the edge,
    so the preprocessing cannot drift between them. Crops come first: see :func:`model_input`.
    """
    bgr = as_bgr(bgr)
    h, w = bgr.shape[:2]
    if (h, w) != (height, width):
        # INTER_AREA when shrinking, else INTER_LINEAR (training/data.py uses this very function)
        shrink = h > height or w > width
        interp = cv2.INTER_AREA if (resize == "area" and shrink) else cv2.INTER_LINEAR
        bgr = cv2.resize(bgr, (width, height), interpolation=interp)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def model_input(img: np.ndarray, spec: CropSpec, height: int, width: int, resize: str = "area",
                background: np.ndarray | None = None, located: Located | None = None) -> np.ndarray:
    """A still image or frame -> the model's RGB input: find the box (``spec``; the whole image when none is
    found), crop it, resize. Training, convert, predict and the daemon all call this, so a crop is the same
    tensor everywhere. ``located`` skips the search (the daemon locates first, to tell "no box")."""
    bgr = as_bgr(img)
    if spec.method != "none":
        loc = located if located is not None else locate_for_still(bgr, spec, background)
        bgr = crop(bgr, loc, spec)
    return to_rgb_input(bgr, height, width, resize)


PREPROCESSING_TEXT = (
    "OpenCV BGR uint8 frame -> box crop as in `crop` (edge/judge/localize.py; none = whole frame) -> "
    "stretch to {w}x{h} (cv2.INTER_AREA when shrinking, INTER_LINEAR when enlarging) -> BGR to RGB -> uint8 values 0..255 "
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
