"""A learned box finder (issue 25): one LiteRT model gives a box-probability grid for the whole frame.

The model (built by ``boxinspect boxfinder build``, training/boxfinder.py) is the frozen MobileNetV2 alpha 0.35 on
the whole frame, three of its intermediate maps on one stride-8 grid, their 5x5-cell mean, and a small MLP head as
1x1 convolutions ending in a sigmoid: output (1, H/8, W/8, 1), P(the cell's centre lies on the box). Its input is
RGB float32 in [-1, 1]. A model exported with a dynamic input (shape signature (1, -1, -1, 3), the default) sees
the frame resized to a long side of :data:`LONG_SIDE` px (a smaller frame keeps its own size) with both sides
rounded to multiples of :data:`STRIDE_ROUND` (640x352 for 16:9, 640x480 for 4:3: exactly what the study
``studies/learned_box.py`` measured); a model with a
fixed input sees the frame resized to that input.

Decoding is numpy/OpenCV (:func:`decode`): the grid resized bilinearly to the frame, thresholded at
:data:`THRESHOLD`, the 8-connected component with the largest probability mass is the box and its bounding box the
answer; nothing above the threshold, or a best component under :data:`MIN_AREA` of the frame, is "no box"
(``box`` None, with the reason). No TensorFlow here (tests/test_layering.py).
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.judge.interpreter import ModelError, check_tflite, interpreter_class
from edge.judge.localize import iou
from edge.judge.model_package import (
    FINDER_GOLDEN_IOU,
    FinderGolden,
    FinderSpec,
    PackageError,
    companion_file,
    decode_golden,
)

log = logging.getLogger(__name__)

LONG_SIDE = 640  # px: the long side of the frame the backbone sees (dynamic-input models)
STRIDE_ROUND = 32  # both sides of the model input are multiples of the backbone's stride
DEFAULT_INPUT = (352, 640)  # (h, w) a dynamic-input model is first allocated at (a 16:9 frame's input)
GRID_STRIDE = 8  # px of model input per cell of the probability grid
THRESHOLD = 0.85  # a frame pixel is "box" when its (bilinearly resized) probability is at least this;
# the study's frozen threshold for its MLP + 5x5-mean head (docs/RESULTS.md "A learned box finder")
MIN_AREA = 0.004  # share of the frame: a smaller best component is "no box" (the smallest synth box is ~2%)
BUILTIN = Path(__file__).resolve().parents[1] / "assets" / "boxfinder.tflite"  # the finder `train`, `cv` and
# `localize` use with --crop auto unless told otherwise (--finder none / F.tflite): built by `boxinspect boxfinder
# build` with its defaults; its build record (seeds, sizes, sha256) is boxfinder.tflite.json beside it
# (edge/assets/README.md; docs/RESULTS.md "The built-in learned box finder")


@dataclass(frozen=True)
class FoundBox:
    """One frame's answer. ``box`` is (x0, y0, x1, y1) in frame pixels (x1/y1 exclusive) or None for "no box";
    ``mass`` the summed probability of the chosen component (frame pixels), ``confidence`` its mean probability;
    ``reason`` says why there is no box ("" when there is one)."""

    box: tuple[int, int, int, int] | None
    mass: float
    confidence: float
    reason: str
    # the chosen component's minimum-area rectangle (cv2.minAreaRect, frame px): an upright crop turns by it
    rotated: tuple[tuple[float, float], tuple[float, float], float] | None = None

    @property
    def found(self) -> bool:
        return self.box is not None


def input_size(h: int, w: int, long: int = LONG_SIDE) -> tuple[int, int]:
    """(height, width) a dynamic-input model sees for an ``h`` x ``w`` frame: long side ``long``, or the frame's
    own long side when that is smaller (a frame is never enlarged: a daemon ROI of 200-544 px, the box 16-50% of
    it, is boxed at IoU >= 0.8 on 95-98% at its own size against 86-94% enlarged to 640, and 1.5-9x faster; dev,
    docs/RESULTS.md "The built-in learned box finder"); both sides rounded to multiples of :data:`STRIDE_ROUND`
    (at least one stride)."""
    s = min(long, max(h, w)) / max(h, w)
    r = STRIDE_ROUND
    return max(r, round(h * s / r) * r), max(r, round(w * s / r) * r)


def model_input(bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The model's input for a BGR frame: resized (area) to ``size`` (h, w), RGB, float32 in [-1, 1], batch 1."""
    small = cv2.resize(bgr, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    x = np.ascontiguousarray(small[:, :, ::-1], dtype=np.float32)[None]
    return np.asarray(x / np.float32(127.5) - np.float32(1.0), np.float32)


def decode(prob: np.ndarray, frame: tuple[int, int], threshold: float = THRESHOLD,
           min_area: float = MIN_AREA) -> FoundBox:
    """Probability grid (gh, gw) -> the box in a frame of ``frame`` = (height, width) pixels (module docstring)."""
    fh, fw = frame
    big = cv2.resize(np.asarray(prob, np.float32), (fw, fh), interpolation=cv2.INTER_LINEAR)
    n, lab, stats, _ = cv2.connectedComponentsWithStats((big >= threshold).astype(np.uint8), connectivity=8)
    if n <= 1:
        return FoundBox(None, 0.0, 0.0, f"nothing above the threshold {threshold:g} (max {float(big.max()):.2f})")
    mass = np.bincount(lab.reshape(-1), weights=big.reshape(-1), minlength=n)[1:]
    best = int(np.argmax(mass)) + 1
    x, y, w, h, area = (int(v) for v in stats[best])
    if area < min_area * fh * fw:
        return FoundBox(None, float(mass[best - 1]), float(mass[best - 1] / area),
                        f"best component {area / (fh * fw):.2%} of the frame < min_area {min_area:.1%}")
    # the component's pixels inside its own bounding box (not a whole-frame pass: decode runs per scored frame)
    (cx, cy), (rw, rh), ang = cv2.minAreaRect(cv2.findNonZero((lab[y:y + h, x:x + w] == best).astype(np.uint8)))
    return FoundBox((x, y, x + w, y + h), float(mass[best - 1]), float(mass[best - 1] / area), "",
                    ((float(cx + x), float(cy + y)), (float(rw), float(rh)), float(ang)))


class BoxFinder:
    """A box-finder .tflite ready to run on BGR frames (thread-safe). ModelError when the file is not one."""

    def __init__(self, path: str | Path, num_threads: int = 2, runtime: str = "auto",
                 threshold: float = THRESHOLD, min_area: float = MIN_AREA):
        self.path = Path(path)
        self.threshold, self.min_area = float(threshold), float(min_area)
        self.runtime_name, cls = interpreter_class(runtime)
        check_tflite(self.path)
        try:
            self._interp: Any = cls(model_path=str(self.path), num_threads=int(num_threads))
            ins, outs = self._interp.get_input_details(), self._interp.get_output_details()
            if len(ins) != 1 or len(outs) != 1 or len(ins[0]["shape"]) != 4 or len(outs[0]["shape"]) != 4:
                raise ModelError(f"{self.path}: not a box finder (expected one (1, H, W, 3) input and one "
                                 f"(1, h, w, 1) output, got {len(ins)} input(s) and {len(outs)} output(s))")
            sig = [int(v) for v in ins[0].get("shape_signature", ins[0]["shape"])]
            self.dynamic = sig[1] < 0 or sig[2] < 0
            if self.dynamic:  # stored as (1, 1, 1, 3), too small for the backbone's strides
                self._interp.resize_tensor_input(ins[0]["index"], [1, *DEFAULT_INPUT, 3])
            self._interp.allocate_tensors()
        except ModelError:
            raise
        except Exception as e:
            raise ModelError(f"{self.path}: corrupt or unsupported .tflite ({type(e).__name__}: {e})") from e
        self._in, self._out = self._interp.get_input_details()[0], self._interp.get_output_details()[0]
        self._shape: tuple[int, int] = (int(self._in["shape"][1]), int(self._in["shape"][2]))
        self._lock = threading.Lock()

    def size_for(self, frame: tuple[int, int]) -> tuple[int, int]:
        """The model input (h, w) for a frame of (height, width)."""
        return input_size(*frame) if self.dynamic else self._shape

    def probabilities(self, bgr: np.ndarray) -> np.ndarray:
        """The (gh, gw) float32 probability grid of one BGR frame."""
        size = self.size_for(bgr.shape[:2])
        x = model_input(bgr, size)
        with self._lock:
            if size != self._shape:
                self._interp.resize_tensor_input(self._in["index"], [1, size[0], size[1], 3])
                self._interp.allocate_tensors()
                self._shape = size
            self._interp.set_tensor(self._in["index"], x)
            self._interp.invoke()
            out = np.array(self._interp.get_tensor(self._out["index"]), np.float32)
        return out[0, :, :, 0]

    def find(self, bgr: np.ndarray) -> FoundBox:
        """The box in one BGR frame, or None with the reason (:func:`decode`)."""
        return decode(self.probabilities(bgr), bgr.shape[:2], self.threshold, self.min_area)


# loaded package finders by content and settings: the live model and a shadow candidate that carries the same finder
# (retrain links the parent's) share one interpreter (its tensors are tens of MB at a 640 px frame) while both live
_SHARED: weakref.WeakValueDictionary[tuple[str, float, float, int, str], BoxFinder] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


def load_package_finder(model_path: str | Path, spec: FinderSpec, verify_hash: bool = True, num_threads: int = 2,
                        runtime: str = "auto") -> BoxFinder:
    """The box finder a package names (its sidecar's ``finder``), beside the .tflite, checked against its sha256 and
    run with the package's decode constants. ModelError (one line) when it is missing, altered or not a finder.
    Packages whose finders have the same sha256 and settings get the same (thread-safe) instance while one is
    alive (verified packages only: the file's content is then the sha256)."""
    try:
        path = companion_file(model_path, spec.file, spec.sha256, "learned box finder", verify_hash)
    except PackageError as e:
        raise ModelError(str(e)) from e
    if not verify_hash:
        return BoxFinder(path, num_threads, runtime, threshold=spec.threshold, min_area=spec.min_area)
    key = (spec.sha256, float(spec.threshold), float(spec.min_area), int(num_threads), runtime)
    with _SHARED_LOCK:
        finder = _SHARED.get(key)
        if finder is None:
            finder = BoxFinder(path, num_threads, runtime, threshold=spec.threshold, min_area=spec.min_area)
            _SHARED[key] = finder
    return finder


GOLDEN_SIDE = 256  # px: the longest side of a finder golden sample (a region around the box, like a daemon ROI)


def golden_region(bgr: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """A finder golden sample's image: the square around ``box`` twice its longer side (clipped to the frame),
    shrunk to at most :data:`GOLDEN_SIDE` px."""
    x0, y0, x1, y1 = box
    h, w = bgr.shape[:2]
    side = min(2 * max(x1 - x0, y1 - y0), h, w)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    rx, ry = int(np.clip(cx - side // 2, 0, w - side)), int(np.clip(cy - side // 2, 0, h - side))
    region = bgr[ry:ry + side, rx:rx + side]
    if side > GOLDEN_SIDE:
        region = cv2.resize(region, (GOLDEN_SIDE, GOLDEN_SIDE), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(region)


def golden_failures(finder: BoxFinder, golden: list[FinderGolden]) -> list[str]:
    """The finder's self-test: one message per golden sample whose box it no longer finds ([] = pass)."""
    out = []
    for i, g in enumerate(golden):
        try:
            got = finder.find(np.ascontiguousarray(decode_golden(g.png_b64)[:, :, ::-1])).box  # RGB -> BGR
        except Exception as e:  # a corrupt sample or a finder that cannot run: said, not raised
            out.append(f"finder golden[{i}] {g.name}: could not run ({type(e).__name__}: {e})")
            continue
        if (got is None) != (g.box is None) or (got is not None and g.box is not None
                                                 and iou(got, g.box) < FINDER_GOLDEN_IOU):
            out.append(f"finder golden[{i}] {g.name}: box {got}, expected {g.box} (IoU >= {FINDER_GOLDEN_IOU:g})")
    return out
