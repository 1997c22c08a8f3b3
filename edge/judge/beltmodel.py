"""A learned empty-belt model for one fixed camera: what the belt under it can look like, pixel by pixel.

A still reference (one photo of the empty belt, or the daemon's MOG2 background) fails on a moving patterned
belt: slats and rollers never line up twice, so the whole frame differs from it. A camera that watches a
moving belt for a while has seen every phase of the pattern at every pixel, though. :class:`BeltModel` keeps,
per pixel (at the localiser's work scale, in Lab), the range the belt took over many frames with no box
(an envelope: a low and a high quantile, widened by a small neighbourhood and a noise floor). A box is what lies
outside that range; a darkening that keeps the colour (the box's own shadow, an overhead shadow) counts little.

Version 7 adds a finer texture scale (:func:`_fine_contrast`: ribs and fine slats the work scale does not resolve)
and says where the frame is shadow-like (``distance_and_shadow``: the localiser's hysteresis does not grow into it);
:class:`BeltSet` holds several cameras' models (``--empty DIR`` with a sub-folder per line and view).

Learn it from frames with no box (``BeltModel.fit(frames)``, the daemon's empty frames through
:class:`BeltLearner`), or from photos of the same line that each hold a box somewhere (``trim``: the box is
at any one pixel in only a few photos, so trimmed quantiles still describe the belt).
:func:`edge.judge.localize.locate` uses it first when one is given (``belt=``) and says "no box" when nothing
lies outside the envelope: the empty-belt answer a reference-free search cannot give on a patterned belt.

numpy and OpenCV only (the edge has no TensorFlow).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

MIN_FRAMES = 8  # fewer frames see too few phases of a belt's pattern to call anything "not belt"
_GROW = 3  # px at work scale: the envelope's neighbourhood (camera shake, the pattern's sub-pixel phase)
_FLOOR = 3.0  # Lab units added on both sides of the envelope (sensor noise, JPEG)
_DARK = 0.35  # weight of a darkening in L (shadows) against a brightening or a colour change
_LIGHT = 0.8  # weight of a brightening in L
_WINDOWS = (9, 17)  # px at work scale: the local contrast's windows (belt periods differ: a window narrower
# than the period finds a smooth stretch of belt, e.g. the middle of a roller, in some phase)
_FINE = 3.0  # the fine contrast is taken at this multiple of the work scale (at most the frame's own): a ribbed
# belt's ribs or a fine slat pattern (a few frame px) are finer than the work scale resolves
_FINE_WINDOW = 5  # px at the fine scale
_C = 3 + len(_WINDOWS) + 1  # where B, G, R start in the features (after L, a, b and the contrasts)
_SMOOTH = 35.0  # Lab units per unit of log(the belt's least local contrast / the pixel's): a smooth box face
# on a belt whose pattern is never smooth there
_SMOOTH_FLOOR = 1.25  # a local contrast down to the belt's least / this is belt
_SHADOW_SPREAD = 0.15  # B, G, R darkened by factors within this share of each other: a shadow
_SHADOW_WEIGHT = 0.15  # what a shadow-like darkening counts


def _work_features(bgr: np.ndarray, work_size: int) -> np.ndarray:
    """Per pixel at work scale: L, a, b, the local contrast (sd / mean of the grey level over a window about
    a belt period wide: a shadow scales both, a box face is smooth where a roller or slat belt is not), the same
    at a finer scale (:func:`_fine_contrast`) and B, G, R (the shadow test); (h, w, 9) float32."""
    scale = min(1.0, work_size / max(bgr.shape[0], bgr.shape[1]))
    small = bgr if scale == 1.0 else cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), 1.0)
    lab = cv2.cvtColor(small, cv2.COLOR_BGR2LAB).astype(np.float32)
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32)
    contrast = []
    for w in _WINDOWS:
        mean = cv2.blur(grey, (w, w))
        sd = np.sqrt(np.maximum(cv2.blur(grey * grey, (w, w)) - mean * mean, 0.0))
        contrast.append(sd / (mean + 8.0))
    contrast.append(_fine_contrast(bgr, scale, (small.shape[1], small.shape[0])))
    return np.dstack([lab, *contrast, small.astype(np.float32)]).astype(np.float32)


def _fine_contrast(bgr: np.ndarray, scale: float, size: tuple[int, int]) -> np.ndarray:
    """The local contrast (sd / mean of the grey level over ``_FINE_WINDOW`` px) at ``_FINE`` x the work scale,
    averaged down to the work size ``size`` (w, h): a ribbed belt's texture, which a box face lacks and a
    shadow on the belt keeps."""
    fine = min(1.0, _FINE * scale)
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    if fine < 1.0:
        grey = cv2.resize(grey, None, fx=fine, fy=fine, interpolation=cv2.INTER_AREA)
    g = grey.astype(np.float32)
    w = _FINE_WINDOW
    mean = cv2.blur(g, (w, w))
    sd = np.sqrt(np.maximum(cv2.blur(g * g, (w, w)) - mean * mean, 0.0))
    return np.asarray(cv2.resize(sd / (mean + 8.0), size, interpolation=cv2.INTER_AREA), np.float32)


work_features = _work_features  # public: edge/judge/selfbelt.py stacks these for many photos of one camera


def _kth_smallest(values: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Per element, the ``k``-th smallest (0: the minimum) of ``values``: a running insertion network over the
    k + 1 smallest (k is small: a few frames trimmed), far cheaper than a partition of the whole stack."""
    low = [np.full_like(values[0], np.inf) for _ in range(k + 1)]
    for x in values:
        for j in range(k, 0, -1):  # the new j-th smallest, from the old (j-1)-th and j-th
            low[j] = np.minimum(low[j], np.maximum(low[j - 1], x))
        low[0] = np.minimum(low[0], x)
    return low[k]


@dataclass
class BeltModel:
    """Per-pixel Lab envelope of an empty belt at ``work_size`` for frames of ``frame_shape`` (h, w)."""

    lo: np.ndarray  # (h, w, 9) float32, work scale (see _work_features)
    hi: np.ndarray
    frame_shape: tuple[int, int]
    work_size: int
    n_frames: int

    @classmethod
    def fit(cls, frames: Iterable[np.ndarray], work_size: int = 256, trim: float = 0.0) -> BeltModel:
        """The envelope of ``frames`` (BGR uint8, one size). ``trim`` > 0 drops that share at both ends of each
        pixel's values (frames that may hold a box); 0 keeps the full range (frames known to be empty)."""
        feats: list[np.ndarray] = []
        shape: tuple[int, int] | None = None
        for f in frames:
            if shape is None:
                shape = (int(f.shape[0]), int(f.shape[1]))
            elif (int(f.shape[0]), int(f.shape[1])) != shape:
                raise ValueError(f"belt model frames must share one size: {f.shape[:2]} != {shape}")
            feats.append(_work_features(f, work_size))
        if shape is None:
            raise ValueError(f"a belt model needs at least {MIN_FRAMES} frames of one camera, got 0")
        return cls.from_features(feats, shape, work_size, trim)

    @classmethod
    def from_features(cls, feats: Sequence[np.ndarray], frame_shape: tuple[int, int], work_size: int,
                      trim: float = 0.0) -> BeltModel:
        """The envelope of frames already turned into :func:`_work_features` (what :class:`BeltLearner` keeps)."""
        n = len(feats)
        if n < MIN_FRAMES:
            raise ValueError(f"a belt model needs at least {MIN_FRAMES} frames of one camera, got {n}")
        if not 0.0 <= trim < 0.5:
            raise ValueError("trim must be in [0, 0.5)")
        k = int(trim * n)
        return cls.from_envelope(_kth_smallest(feats, k), -_kth_smallest([-f for f in feats], k), frame_shape,
                                 work_size, n)

    @classmethod
    def from_envelope(cls, lo: np.ndarray, hi: np.ndarray, frame_shape: tuple[int, int], work_size: int,
                      n: int) -> BeltModel:
        """The model of a per-pixel range of features (low, high), widened by the neighbourhood and noise floor
        (edge/judge/selfbelt.py takes the range over each photo's pixels outside its box)."""
        ker = np.ones((2 * _GROW + 1, 2 * _GROW + 1), np.uint8)
        lo = np.dstack([cv2.erode(lo[..., c].astype(np.float32), ker) for c in range(lo.shape[2])])
        hi = np.dstack([cv2.dilate(hi[..., c].astype(np.float32), ker) for c in range(hi.shape[2])])
        lo[..., :3] -= _FLOOR
        hi[..., :3] += _FLOOR
        return cls(lo.astype(np.float32), hi.astype(np.float32), frame_shape, work_size, n)

    def fits(self, bgr: np.ndarray) -> bool:
        """Whether a frame is from this model's camera (its size)."""
        return (int(bgr.shape[0]), int(bgr.shape[1])) == self.frame_shape

    def distance(self, bgr: np.ndarray) -> tuple[np.ndarray, float]:
        """How far each pixel lies outside the envelope (Lab units, weighted; work scale) and that scale."""
        if not self.fits(bgr):
            raise ValueError(f"frame {bgr.shape[:2]} is not from this belt model's camera {self.frame_shape}")
        d, _, scale = self.distance_and_shadow(bgr)
        return d, scale

    def distance_and_shadow(self, bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """:meth:`distance`, and where the frame is the belt darkened at its own colour ratios (a shadow; bool)."""
        if not self.fits(bgr):
            raise ValueError(f"frame {bgr.shape[:2]} is not from this belt model's camera {self.frame_shape}")
        scale = min(1.0, self.work_size / max(bgr.shape[0], bgr.shape[1]))
        d, shadow = self._distance(_work_features(bgr, self.work_size))
        return d, shadow, scale

    def distance_of(self, x: np.ndarray) -> np.ndarray:
        """:meth:`distance` of a frame already turned into :func:`_work_features` (at this model's work size)."""
        return self._distance(x)[0]

    def _distance(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        below = np.maximum(self.lo[..., :3] - x[..., :3], 0.0)
        above = np.maximum(x[..., :3] - self.hi[..., :3], 0.0)
        ratio = x[..., _C:] / np.maximum(self.lo[..., _C:], 12.0)
        rmax, rmin = ratio.max(axis=2), ratio.min(axis=2)
        shadow = (rmax < 0.97) & (rmax - rmin < _SHADOW_SPREAD * rmax)
        chroma = np.sqrt(below[..., 1] ** 2 + below[..., 2] ** 2 + above[..., 1] ** 2 + above[..., 2] ** 2)
        chroma = np.where(shadow, _SHADOW_WEIGHT * chroma, chroma)
        dl = _LIGHT * above[..., 0] + np.where(shadow, _SHADOW_WEIGHT, _DARK) * below[..., 0]
        drop = np.log((self.lo[..., 3:_C] + 0.01) / (x[..., 3:_C] + 0.01)).max(axis=2)
        smooth = _SMOOTH * np.maximum(drop - np.log(_SMOOTH_FLOOR), 0.0)
        d = np.sqrt(dl * dl + chroma * chroma + smooth * smooth)
        return np.asarray(cv2.GaussianBlur(d, (0, 0), 1.0), np.float32), shadow & (smooth < 1.0)


@dataclass
class BeltSet:
    """The empty belts of several cameras (a data set from several lines and views), by name. A still goes to
    the camera of its size whose empty belt it matches best (the lowest median distance outside the envelope:
    the box covers at most a quarter of the frame, so the median pixel is belt, and another camera's belt
    differs almost everywhere)."""

    models: dict[str, BeltModel]

    def pick(self, bgr: np.ndarray) -> BeltModel | None:
        """The model of ``bgr``'s camera (None: no camera of its size)."""
        same = [m for m in self.models.values() if m.fits(bgr)]
        if len(same) <= 1:
            return same[0] if same else None
        feats: dict[int, np.ndarray] = {}
        best, best_d = same[0], np.inf
        for m in same:
            x = feats.setdefault(m.work_size, _work_features(bgr, m.work_size))
            d = float(np.median(m.distance_of(x)))
            if d < best_d:
                best, best_d = m, d
        return best


class BeltLearner:
    """Learns one camera's :class:`BeltModel` from frames with no box: keeps the features of the last
    ``capacity`` such frames (a bounded ring) and refits every ``refit_every`` new ones once it has
    ``MIN_FRAMES``. The fit is trimmed (``trim``): a frame wrongly taken for empty (a box the presence
    detector missed) widens no pixel's range while it is one of a few."""

    def __init__(self, capacity: int = 48, refit_every: int = 16, work_size: int = 256, trim: float = 0.05) -> None:
        if capacity < MIN_FRAMES or refit_every < 1:
            raise ValueError(f"capacity must be >= {MIN_FRAMES} and refit_every >= 1")
        self._feats: deque[np.ndarray] = deque(maxlen=capacity)
        self._shape: tuple[int, int] | None = None
        self._since = 0
        self._refit_every = refit_every
        self._work_size = work_size
        self._trim = trim
        self.model: BeltModel | None = None

    def observe(self, bgr: np.ndarray) -> BeltModel | None:
        """Add a frame of the empty belt (a new frame size starts over); the current model."""
        shape = (int(bgr.shape[0]), int(bgr.shape[1]))
        if shape != self._shape:
            self._feats.clear()
            self._shape, self.model, self._since = shape, None, 0
        self._feats.append(_work_features(bgr, self._work_size))
        self._since += 1
        if len(self._feats) >= MIN_FRAMES and (self.model is None or self._since >= self._refit_every):
            self.model = BeltModel.from_features(list(self._feats), shape, self._work_size, self._trim)
            self._since = 0
        return self.model


class BeltLearners:
    """One :class:`BeltLearner` per camera view of the daemon (``None``: the single camera), fed every
    ``every``-th frame it offers (frames with no box are many; a few a second are plenty)."""

    def __init__(self, every: int = 5, **learner: Any) -> None:
        self._every = max(1, every)
        self._learner = learner
        self._by_view: dict[str | None, BeltLearner] = {}
        self._offered: dict[str | None, int] = {}

    def offer(self, view: str | None, bgr: np.ndarray) -> None:
        """A frame of ``view`` that shows no box (the presence detector or the localiser says so)."""
        if self.wants(view):
            self.learn(view, bgr)

    def wants(self, view: str | None) -> bool:
        """Count one frame of ``view`` with no box offered; True for every ``every``-th (the one to learn from)."""
        n = self._offered.get(view, 0)
        self._offered[view] = n + 1
        return n % self._every == 0

    def learn(self, view: str | None, bgr: np.ndarray) -> None:
        """Learn from a frame ``wants`` chose (features, and a refit when one is due: run it off the frame loop)."""
        self._by_view.setdefault(view, BeltLearner(**self._learner)).observe(bgr)

    def model(self, view: str | None) -> BeltModel | None:
        """The view's current model (None until it has seen ``MIN_FRAMES`` empty frames)."""
        learner = self._by_view.get(view)
        return learner.model if learner is not None else None
