"""Run a boxinspect model package (.tflite + sidecar) on OpenCV frames. No TensorFlow needed.

Runtimes, in the order ``runtime="auto"`` tries them:
``ai_edge_litert.interpreter`` (LiteRT, XNNPACK on CPU), ``tflite_runtime.interpreter`` (legacy, last
release 2.14: numpy<2 only, cannot load newer op versions), ``tensorflow.lite`` (last resort, imported
lazily). A TFLite interpreter is not thread-safe: every invoke is guarded by a lock, so one Classifier can be
shared by the daemon loop and the API.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.judge.anomaly import AnomalyScorer, load_package_scorer
from edge.judge.boxfinder import BoxFinder, golden_failures, load_package_finder
from edge.judge.crops import locate_still
from edge.judge.fusion import part_and_view
from edge.judge.head_map import cell_logits
from edge.judge.interpreter import ModelError as ModelError  # re-exported: callers have always caught it here
from edge.judge.interpreter import check_tflite, interpreter_class
from edge.judge.localize import Located
from edge.judge.model_package import (
    MapKind,
    ModelMetadata,
    PackageError,
    decode_golden,
    model_input,
    verify_package,
)
from edge.state import effective_threshold, verdict

log = logging.getLogger(__name__)

SELF_TEST_TIMED_PASSES = 3  # timed runs of the golden samples after the checked one (invoke p50 of the self-test)


@dataclass
class Scored:
    """One crop scored with everything the invoke gave: the score, the pooled features, and the map of where it
    came from (``kind`` "anomaly": cell distances to the bank of good parts, edge/judge/anomaly.py; "head": cell
    logits, edge/judge/head_map.py; None: the package has no map)."""

    score: float
    features: np.ndarray | None
    cells: np.ndarray | None
    kind: MapKind | None
    rgb: np.ndarray  # the model input


@dataclass
class Prediction:
    label: str
    score: float  # P(positive class)
    is_defect: bool
    latency_ms: float  # preprocess + invoke


def _check_cells(p: Path, meta: ModelMetadata, runner: Runner) -> None:
    """ModelError unless the .tflite's map output is the one the sidecar's ``cells`` describes."""
    spec = meta.cells
    assert spec is not None
    got = runner.map_detail(spec.output_position)
    if got is None or got[1] != (spec.rows, spec.cols, spec.channels):
        raise ModelError(f"{p}: no cells output at position {spec.output_position} of shape "
                         f"{(spec.rows, spec.cols, spec.channels)} (the sidecar's), got {got and got[1]}")


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}" if text else type(e).__name__


class Runner:
    """A TFLite interpreter for a single-input, single-output image model, with its quantisation handled.

    ``run(rgb)`` takes an RGB uint8 image already at the model input size and returns the dequantised
    float output (a probability for boxinspect models). Used by :class:`Classifier` and by ``convert``.
    """

    def __init__(self, path: str | Path, num_threads: int = 2, runtime: str = "auto"):
        self.path = Path(path)
        self.num_threads = int(num_threads)
        self.runtime_name, interp_cls = interpreter_class(runtime)
        check_tflite(self.path)
        try:
            self._interp = interp_cls(model_path=str(self.path), num_threads=self.num_threads)
            self._interp.allocate_tensors()
        except Exception as e:
            raise ModelError(
                f"{self.path}: corrupt or unsupported .tflite for runtime {self.runtime_name} ({_one_line(e)})"
            ) from e
        ins, outs = self._interp.get_input_details(), self._interp.get_output_details()
        # map outputs (1, H, W, C): an anomaly package's patch map (edge/judge/anomaly.py), scored in numpy instead of
        # a score output, and the last feature map (the sidecar's ``cells``, edge/judge/head_map.py) a head's map is
        # made of. With both, the patch map is the finer grid (stride 16; the last map is stride 32).
        all_outs = list(outs)
        self._maps = {i: o for i, o in enumerate(all_outs) if len(o["shape"]) == 4}
        self._patches = max(self._maps.values(), key=lambda o: int(o["shape"][1] * o["shape"][2]), default=None)
        self.patches_position: int | None = None
        if self._patches is not None:
            self.patches_position = [o["index"] for o in all_outs].index(self._patches["index"])
            outs = [o for o in outs if len(o["shape"]) != 4]
        if len(ins) != 1 or len(outs) not in (1, 2):
            raise ModelError(f"{self.path}: expected 1 input and 1 or 2 output tensors (score, features), got "
                             f"{len(ins)} and {len(outs)}")
        self._in = ins[0]
        # the score is the 1-value output; a second output is the pooled features (model_package.FeaturesSpec)
        sizes = [int(np.prod(o["shape"])) for o in outs]
        if self._patches is not None and 1 not in sizes:  # patch map + pooled features: scored in numpy
            outs, sizes = [self._patches, *outs], [1, *sizes]
        if 1 not in sizes or (len(outs) == 2 and sizes.count(1) != 1):
            raise ModelError(f"{self.path}: expected one output with a single value (the score), got shapes "
                             f"{[tuple(int(x) for x in o['shape']) for o in outs]}")
        self.score_position = sizes.index(1)
        self._out = outs[self.score_position]
        self.features_position: int | None = None if len(outs) == 1 else 1 - self.score_position
        self._feat = outs[self.features_position] if self.features_position is not None else None
        self.features_name: str | None = None if self._feat is None else str(self._feat["name"])
        self.features_dim = 0 if self._feat is None else sizes[self.features_position]  # type: ignore[index]
        if self._out is self._patches and self._feat is not None:  # its position among the interpreter's outputs
            self.features_position = [o["index"] for o in all_outs].index(self._feat["index"])
        self.features_dtype = None if self._feat is None else np.dtype(self._feat["dtype"])
        self.features_quant = None if self._feat is None else self._quant(self._feat)
        shape = tuple(int(x) for x in self._in["shape"])
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
            raise ModelError(f"{self.path}: expected input shape (1, H, W, 3), got {shape}")
        self.height, self.width = shape[1], shape[2]
        self.input_dtype = np.dtype(self._in["dtype"])
        self.output_dtype = np.dtype(self._out["dtype"])
        self.input_quant = self._quant(self._in)
        self.output_quant = self._quant(self._out)
        self.delegate = self._detect_delegate()
        self._lock = threading.Lock()

    @staticmethod
    def _quant(detail: dict[str, Any]) -> tuple[float, int] | None:
        scale, zp = detail.get("quantization", (0.0, 0))
        return (float(scale), int(zp)) if scale else None

    def _detect_delegate(self) -> str:
        """Name what runs the graph: LiteRT/TF apply XNNPACK by default on CPU, visible as DELEGATE ops."""
        try:
            ops = self._interp._get_ops_details()  # the only way to see delegation
        except Exception:
            return "unknown"
        parts = sum(1 for op in ops if op.get("op_name") == "DELEGATE")
        if parts == 0:
            return "none (builtin kernels)"
        # XNNPACK is the only delegate these runtimes apply by default on CPU; we never add another one.
        # Several partitions mean some ops fell back to builtin kernels (e.g. dynamic-range hybrid ops).
        return "XNNPACK" if parts == 1 else f"XNNPACK ({parts} partitions, rest on builtin kernels)"

    def _to_input(self, rgb: np.ndarray) -> np.ndarray:
        if self.input_dtype == np.float32:
            return rgb.astype(np.float32)[None]
        if self.input_quant is None or self.input_quant == (1.0, 0) and self.input_dtype == np.uint8:
            return rgb[None].astype(self.input_dtype, copy=False)
        scale, zp = self.input_quant
        info = np.iinfo(self.input_dtype)
        q = np.round(rgb.astype(np.float32) / scale + zp)
        return np.clip(q, info.min, info.max).astype(self.input_dtype)[None]

    def set_input(self, rgb: np.ndarray) -> np.ndarray:
        """Prepare the input tensor value for an RGB image (exposed for benchmarks)."""
        if rgb.shape != (self.height, self.width, 3):
            raise ValueError(f"expected RGB input of shape {(self.height, self.width, 3)}, got {rgb.shape}")
        return self._to_input(rgb)

    def invoke(self, tensor: np.ndarray) -> float:
        """Set the prepared input, invoke, return the dequantised output (thread-safe)."""
        if self._out is self._patches:
            raise ModelError(f"{self.path}: an anomaly model has no score output (its score is computed from the "
                             "patch map: Classifier, edge/judge/anomaly.py)")
        score = self._read(tensor, False, None)[0]
        assert score is not None  # not an anomaly model: it has a score output
        return score

    def invoke_only(self, tensor: np.ndarray) -> None:
        """Set the prepared input and invoke, reading no output: the model's own time, for any kind of model
        (a score output or an anomaly patch map; thread-safe)."""
        with self._lock:
            self._interp.set_tensor(self._in["index"], tensor)
            self._interp.invoke()

    def run_patches(self, rgb: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """An anomaly model's (pooled features (D,) or None, patch map (H, W, C) float32) for an RGB input, one
        invoke (thread-safe)."""
        if self._patches is None:
            raise ModelError(f"{self.path}: the model has no patch-map output")
        _, feat, patches = self.run_outputs(rgb, self.patches_position)
        assert patches is not None
        return feat, patches

    @property
    def map_positions(self) -> list[int]:
        """Positions (among the interpreter's outputs) of the map outputs, coarsest grid first."""
        return sorted(self._maps, key=lambda i: int(self._maps[i]["shape"][1] * self._maps[i]["shape"][2]))

    def map_detail(self, position: int) -> tuple[str, tuple[int, int, int], np.dtype, tuple[float, int] | None] | None:
        """(name, (H, W, C), dtype, quantisation) of the map output at ``position``; None: no map output there."""
        o = self._maps.get(position)
        if o is None:
            return None
        h, w, c = (int(v) for v in o["shape"][1:])
        return str(o["name"]), (h, w, c), np.dtype(o["dtype"]), self._quant(o)

    def run_outputs(self, rgb: np.ndarray, map_position: int | None = None
                    ) -> tuple[float | None, np.ndarray | None, np.ndarray | None]:
        """(score or None for a model without a score output, pooled features (D,) or None, the map output at
        ``map_position`` (H, W, C) or None), dequantised float, from one invoke of an RGB input (thread-safe)."""
        return self._read(self.set_input(rgb), True, map_position)

    def _read(self, tensor: np.ndarray, features: bool, map_position: int | None
              ) -> tuple[float | None, np.ndarray | None, np.ndarray | None]:
        """Set the prepared input, invoke, and read (dequantised) the score (None: the model has no score output),
        the features when asked and the model has them, and the map output at ``map_position`` (thread-safe): every
        reader of outputs goes through here."""
        has_score = self._out is not self._patches
        fmap_out = self._maps.get(map_position) if map_position is not None else None
        with self._lock:
            self._interp.set_tensor(self._in["index"], tensor)
            self._interp.invoke()
            out = self._interp.get_tensor(self._out["index"]).reshape(-1) if has_score else None
            feat = (self._dequant(self._interp.get_tensor(self._feat["index"]).reshape(-1), self._feat)
                    if features and self._feat is not None else None)
            fmap = (self._dequant(self._interp.get_tensor(fmap_out["index"])[0], fmap_out)
                    if fmap_out is not None else None)
        return (None if out is None else self._score_of(out)), feat, fmap

    def _dequant(self, raw: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
        q = self._quant(detail)
        if q is None or raw.dtype == np.float32:
            return np.array(raw, np.float32)  # a copy: the interpreter reuses its buffers
        return np.asarray((raw.astype(np.float32) - np.float32(q[1])) * np.float32(q[0]), np.float32)

    def run(self, rgb: np.ndarray) -> float:
        return self.invoke(self.set_input(rgb))

    def invoke_features(self, tensor: np.ndarray) -> tuple[float, np.ndarray | None]:
        """Like :meth:`invoke`, and also the dequantised features output (float32 (D,); None if the model has
        none), from the same invoke."""
        score, feat, _ = self._read(tensor, True, None)
        if score is None:
            raise ModelError(f"{self.path}: an anomaly model has no score output")
        return score, feat

    def _score_of(self, out: np.ndarray) -> float:
        """The dequantised value of the score output's tensor."""
        if out.size != 1:
            raise ModelError(f"{self.path}: expected one output value, got {out.size}")
        value = float(out[0])
        if self.output_quant is not None and self.output_dtype != np.float32:
            scale, zp = self.output_quant
            value = (value - zp) * scale
        return value

    def run_features(self, rgb: np.ndarray) -> tuple[float, np.ndarray | None]:
        return self.invoke_features(self.set_input(rgb))


class Classifier:
    """A verified model package ready to score frames. Build it with :meth:`load`."""

    def __init__(self, path: Path, metadata: ModelMetadata, runner: Runner):
        self.path = path
        self.metadata = metadata
        self.runner = runner
        self.threshold: float = metadata.threshold
        self.model_id = metadata.model_id  # covers the .tflite and the sidecar (edge/judge/model_package.py)
        # head-only package: a numpy head on the features output replaces the score output
        self._head = metadata.head.folded() if metadata.head is not None else None
        # median invoke time of the last self-test's timed passes (seconds): the model's speed on this machine,
        # as loaded (a runtime without XNNPACK, e.g. under a sandbox that hides /proc/cpuinfo, shows here)
        self.self_test_invoke_p50_s: float | None = None
        # anomaly package: its patch map scored against the bank of good parts (edge/judge/anomaly.py)
        self.anomaly: AnomalyScorer | None = None
        # the learned box finder the package carries (train --finder): its box first, the crop search where it finds none
        self.finder: BoxFinder | None = None
        # supervised package with a map output: the head its cells are scored with (edge/judge/head_map.py)
        self._cells_head: tuple[np.ndarray, float] | None = None
        if metadata.cells is not None and (self._head is not None or metadata.cells.weights):
            self._cells_head = self._head or (np.asarray(metadata.cells.weights, np.float64), metadata.cells.bias)

    @property
    def runtime_name(self) -> str:
        return self.runner.runtime_name

    @property
    def delegate(self) -> str:
        return self.runner.delegate

    @classmethod
    def load(
        cls, path: str | Path, num_threads: int = 2, runtime: str = "auto", verify_hash: bool = True
    ) -> Classifier:
        """Load ``path`` (.tflite; its sidecar ``<path>.json`` beside it). Raises ModelError (one line)."""
        p = Path(path)
        if p.suffix == ".json" and p.name.endswith(".tflite.json"):
            p = p.with_name(p.name[: -len(".json")])
        try:
            meta = verify_package(p, verify_hash=verify_hash)
        except PackageError as e:
            raise ModelError(str(e)) from e
        runner = Runner(p, num_threads=num_threads, runtime=runtime)
        if (runner.height, runner.width) != (meta.input.height, meta.input.width):
            raise ModelError(
                f"{p}: input size {runner.height}x{runner.width} does not match metadata "
                f"{meta.input.height}x{meta.input.width}"
            )
        if str(runner.input_dtype) != meta.input.dtype:
            raise ModelError(f"{p}: input dtype {runner.input_dtype} does not match metadata {meta.input.dtype}")
        if meta.features is not None and (runner.features_dim != meta.features.dim
                                          or runner.features_position != meta.features.output_position):
            raise ModelError(f"{p}: features output (position {runner.features_position}, {runner.features_dim} "
                             f"values) does not match metadata (position {meta.features.output_position}, "
                             f"{meta.features.dim} values)")
        clf = cls(p, meta, runner)
        if meta.anomaly is not None:
            if runner.patches_position != meta.anomaly.patches_output_position:
                raise ModelError(f"{p}: no patch-map output at position {meta.anomaly.patches_output_position}")
            try:
                clf.anomaly = load_package_scorer(p, meta.anomaly, verify_hash)
            except ValueError as e:
                raise ModelError(str(e)) from e
        if meta.cells is not None:
            _check_cells(p, meta, runner)
        if meta.finder is not None:
            clf.finder = load_package_finder(p, meta.finder, verify_hash, num_threads, runtime)
        log.info(
            "loaded %s (%s, input %dx%d %s, threshold %.3f%s%s) runtime=%s delegate=%s threads=%d",
            clf.model_id, meta.format, runner.width, runner.height, meta.input.dtype, clf.threshold,
            (f", head-only on {meta.head.parent_model_id or 'its backbone'}" if meta.head is not None
             else ", features output" if meta.features is not None else ""),
            f", learned box finder {meta.finder.file} first" if meta.finder is not None else "",
            clf.runtime_name, clf.delegate, num_threads,
        )
        return clf

    def preprocess(self, bgr: np.ndarray, located: Located | None = None,
                   background: np.ndarray | None = None) -> np.ndarray:
        """The model input for a BGR image: the package's crop (``metadata.crop``; its learned box finder's box
        first, when it carries one), then resize to the input."""
        m = self.metadata.input
        if located is None and self.finder is not None and self.metadata.crop.method != "none":
            located = locate_still(bgr, self.metadata.crop, background, finder=self.finder, remember=False)
        return model_input(bgr, self.metadata.crop, m.height, m.width, m.resize, background=background,
                           located=located)

    def score(self, bgr: np.ndarray, located: Located | None = None, view: str | None = None) -> float:
        """P(positive class) for a BGR uint8 image of any size (OpenCV order), cropped as the package says
        (at ``located`` if given, else wherever the localiser finds the box, else the whole image). ``view``: the
        camera/view that saw it (an anomaly package with one bank per view scores it by that view's bank)."""
        if self._head is not None or self.anomaly is not None:
            return self.score_features(bgr, located, view)[0]
        return self.runner.run(self.preprocess(bgr, located))

    @property
    def map_kind(self) -> MapKind | None:
        """What :meth:`score_all` maps: an anomaly package's distances, a supervised one's cell logits, or None."""
        return MapKind.ANOMALY if self.anomaly is not None else MapKind.HEAD if self._cells_head else None

    def score_all(self, bgr: np.ndarray, located: Located | None = None, view: str | None = None) -> Scored:
        """The score (as :meth:`score`), pooled features and map of a BGR image, one invoke."""
        return self.score_all_rgb(self.preprocess(bgr, located), view)

    def score_all_rgb(self, rgb: np.ndarray, view: str | None = None) -> Scored:
        """:meth:`score_all` for an RGB image already at the model input size."""
        kind = self.map_kind
        if kind is MapKind.ANOMALY:
            assert self.anomaly is not None
            feat, patches = self.runner.run_patches(rgb)
            s, cells = self.anomaly.score_map(patches, view)
            return Scored(s, feat, cells, kind, rgb)
        if kind is None:
            s, feat = self.score_features_rgb(rgb, view)
            return Scored(s, feat, None, None, rgb)
        assert self._cells_head is not None
        assert self.metadata.cells is not None
        out, feat, fmap = self.runner.run_outputs(rgb, self.metadata.cells.output_position)
        if feat is None or fmap is None:
            raise ModelError(f"{self.model_id}: the map needs the features and cells outputs")
        score = self.head_score(feat) if self._head is not None else out
        if score is None:
            raise ModelError(f"{self.model_id}: no score output and no head")
        return Scored(score, feat, cell_logits(fmap, self._cells_head[0], score), kind, rgb)

    @property
    def has_features(self) -> bool:
        """The package exports the backbone's pooled features (``score_features`` returns them)."""
        return self.metadata.features is not None

    @property
    def backbone_sha256(self) -> str | None:
        """Equal for two packages whose features are identical (edge/judge/backbone.py); None without features."""
        return self.metadata.backbone_sha256

    def head_score(self, features: np.ndarray) -> float:
        """This package's score for a feature vector of a package with the same ``backbone_sha256``: its head
        if it is head-only; ValueError for a package whose score is the .tflite's own output."""
        if self._head is None:
            raise ValueError(f"{self.model_id} has no numpy head: its score is the .tflite output")
        w, b = self._head
        z = float(np.dot(np.asarray(features, np.float64), w) + b)
        return 1.0 / (1.0 + float(np.exp(-min(max(z, -500.0), 500.0))))

    def score_features(self, bgr: np.ndarray, located: Located | None = None,
                       view: str | None = None) -> tuple[float, np.ndarray | None]:
        """(score, pooled features float32 (D,) or None) for a BGR image, from ONE invoke; the score is what
        :meth:`score` returns (the head's for a head-only package)."""
        return self.score_features_rgb(self.preprocess(bgr, located), view)

    def score_features_rgb(self, rgb: np.ndarray, view: str | None = None) -> tuple[float, np.ndarray | None]:
        """:meth:`score_features` for an RGB image already at the model input size."""
        if self.anomaly is not None:
            feat, patches = self.runner.run_patches(rgb)
            return self.anomaly.score_map(patches, view)[0], feat
        if self._head is not None:  # on any .tflite with features (an anomaly package's too: it has no score output)
            feat = self.runner.run_outputs(rgb)[1]
            if feat is None:
                raise ModelError(f"{self.model_id}: a head-only package needs the features output")
            return self.head_score(feat), feat
        return self.runner.run_features(rgb)

    def score_rgb(self, rgb: np.ndarray, view: str | None = None) -> float:
        """Score an RGB image already at the model input size (golden samples, convert's evaluation)."""
        if self._head is not None or self.anomaly is not None:
            return self.score_features_rgb(rgb, view)[0]
        return self.runner.run(rgb)

    def predict(self, bgr: np.ndarray, threshold: float | None = None, view: str | None = None,
                located: Located | None = None) -> Prediction:
        """The verdict for one image (``located``: where its box is, e.g. ``already_cropped`` for a kept crop)."""
        thr = effective_threshold(self.threshold, threshold)
        t0 = time.perf_counter()
        s = self.score(bgr, located, view=view)
        latency = (time.perf_counter() - t0) * 1000.0
        label, defect = verdict(s, thr, (self.metadata.negative_class, self.metadata.positive_class))
        return Prediction(label=label, score=s, is_defect=defect, latency_ms=latency)

    def self_test(self) -> list[str]:
        """Run the golden samples; return one message per failure ([] = pass)."""
        meta = self.metadata
        if not meta.golden:
            return ["model package has no golden samples"]
        tol = meta.golden_tolerance
        failures = []
        images = []
        for i, g in enumerate(meta.golden):
            try:
                images.append(decode_golden(g.png_b64))
                got = self.score_rgb(images[-1], part_and_view(g.name)[1])  # per-view banks: the sample's view
            except Exception as e:
                failures.append(f"golden[{i}] {g.name}: could not run ({_one_line(e)})")
                continue
            if not np.isfinite(got) or abs(got - g.expected_score) > tol:
                failures.append(
                    f"golden[{i}] {g.name}: score {got:.4f}, expected {g.expected_score:.4f} +/- {tol:g}"
                )
        if not any("could not run" in f for f in failures):  # every sample ran: time them again
            self.self_test_invoke_p50_s = self._time_invokes(images)
        finder_golden = meta.finder.golden if self.finder is not None and meta.finder is not None else []
        if self.finder is not None:  # the learned box finder finds its boxes again
            failures += golden_failures(self.finder, finder_golden)
        speed = ("" if self.self_test_invoke_p50_s is None else
                 f" (invoke p50 {self.self_test_invoke_p50_s * 1000:.2f} ms, delegate {self.delegate})")
        n = len(meta.golden) + len(finder_golden)
        if failures:
            log.warning("self-test of %s: %d/%d golden samples failed%s", self.model_id, len(failures), n, speed)
        else:
            log.info("self-test of %s: %d golden samples pass%s", self.model_id, n, speed)
        return failures

    def _time_invokes(self, images: list[np.ndarray], passes: int = SELF_TEST_TIMED_PASSES) -> float:
        """Median seconds of one invoke over ``passes`` more runs of the golden images (the first run above
        warmed the interpreter up)."""
        times = []
        for _ in range(passes):
            for rgb in images:
                tensor = self.runner.set_input(rgb)
                t0 = time.perf_counter()
                self.runner.invoke_only(tensor)  # any package kind (an anomaly model has no score output)
                times.append(time.perf_counter() - t0)
        return float(np.median(times))
