"""Find the box in a frame and crop it for the model: one implementation for training and the edge.

A camera over a line sees mostly belt; a classifier fed the whole frame learns the belt. This module finds the
box and cuts out a square around it, and it is the only place that does, so training (``training/data.py``),
``convert`` (calibration, the accuracy gate, golden samples), ``predict`` and the daemon crop exactly alike.
Which method and parameters were used is a :class:`CropSpec`, recorded in the run's ``train_config.json``
and in the model sidecar.

Methods (``CropSpec.method``):

* ``background``: the difference against an empty-belt reference. The daemon passes the background its MOG2
  subtractor keeps; for still images it is a reference photo (``--background FILE``).
* ``salient``: no reference. The belt is what the frame's border shows: a Gaussian model of the border's
  colour (Lab) and local texture; the box is the largest connected region that the model calls unlikely.
* ``texture`` (issue 25): no reference, for patterned belts (slats, rollers, ribs), guide rails and shadows: a
  median filter removes the belt's fine periodic pattern, a two-way median polish removes what is constant along
  rows or columns (rails, slats, light gradients), and the rest is scored against its own robust spread; shadows,
  line-shaped regions and regions on the frame's edges are not boxes (docs/RESULTS.md, "Patterned belts").
* ``auto`` (default): ``background`` when a reference is given (and, when the difference spans the frame, as on
  a moving patterned belt, what follows), else ``salient``, with the ``texture`` box where salient finds nothing,
  calls the scene cluttered, finds only a piece of the box, or sees a "box" that is the belt's rails around it
  (the texture box must stand out clearly: box-centred photos keep salient's answer); then a plausibility check,
  so photos that are already box-centred are not hurt: a region whose bounding box spans more than
  ``max_area`` of the frame, or that touches three or four of its edges, means the box fills the frame, and
  a scene where much else stands out besides the region (``max_clutter``: several boxes, clutter) is not a
  belt; in both cases the crop is the whole image. For stills a region too small to be a box also gives the
  whole image; the daemon instead reports "no box" and never classifies the belt.
* ``none``: the whole image (the model input is the stretched frame, as before crops existed).

With a learned empty-belt model of the camera (:class:`edge.judge.beltmodel.BeltModel`, issue 25: the daemon learns
one per view from frames with no box; stills get one from ``CropSpec.empty_belt``), ``auto`` asks it first
(``Located.method`` ``belt``): what lies outside the belt's per-pixel range is the box (with what touches it at half
that distance and is not a shadow: its shaded faces), and nothing outside it is "no box"; only a model that sees the
whole frame changed hands over to the methods above. ``CropSpec.empty_belt`` may hold several cameras
(:class:`edge.judge.beltmodel.BeltSet`): a still goes to the one whose empty belt it matches best.

Crop: the region's bounding box (axis-aligned, or the minimum-area rotated rectangle turned upright with
``rotated=True``), grown by ``margin`` of its longer side on every side, made square around its centre
(``square=True``; pixels beyond the frame repeat the edge), then resized to the model input by the caller
(``edge.judge.model_package.model_input``). Only OpenCV and numpy: no TensorFlow on the edge.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge.judge.beltmodel import MIN_FRAMES, BeltModel, BeltSet
from edge.judge.images import IMAGE_EXTS

log = logging.getLogger(__name__)

CropMethod = Literal["auto", "background", "texture", "salient", "none"]
CROP_METHODS: tuple[str, ...] = ("auto", "background", "texture", "salient", "none")
# a data set's folder of empty-belt frames, one sub-folder per camera (<line>/<view>/, as synth --scenes belt
# writes it): not a class (no images directly in it); `localize DATA` does not search it
EMPTY_DIR = "empty"
# the localiser's version: part of the training feature cache key (a changed localiser makes new crops)
LOCALIZER_VERSION = 7


class CropSpec(BaseModel):
    """How a frame becomes the model's input crop (recorded in train_config.json and the model sidecar)."""

    model_config = ConfigDict(extra="forbid")

    method: CropMethod = "auto"
    margin: float = Field(default=0.08, ge=0.0, le=1.0)  # added on each side, share of the box's longer side
    square: bool = True  # pad the crop to a square around the box centre (no aspect distortion)
    rotated: bool = False  # turn the box's minimum-area rectangle upright before cropping
    work_size: int = Field(default=256, ge=64, le=1024)  # longer side of the image the search runs on
    min_area: float = Field(default=0.005, gt=0.0, lt=1.0)  # a smaller region is no box (share of the frame)
    max_area: float = Field(default=0.7, gt=0.0, le=1.0)  # auto: a region whose bounding box spans more of the
    # frame than this means the box fills the frame (a box-centred photo): the crop is the whole image
    max_clutter: float = Field(default=0.25, ge=0.0)  # auto: other salient area, share of the box's, above
    # which the scene is cluttered (several things stand out) and the crop is the whole image
    min_contrast: float = Field(default=1.5, gt=0.0)  # salient: the region's median distance from the belt
    # model, in multiples of the detection bar; fainter regions are belt wear, not boxes
    diff_threshold: float = Field(default=14.0, gt=0.0)  # background: Lab distance that counts as "changed"
    salient_sigma: float = Field(default=4.0, gt=0.0)  # salient: Mahalanobis distance from the border's model
    texture_z: float = Field(default=6.0, gt=0.0)  # texture: robust z-score (median + z * MAD) of "stands out"
    texture_clutter: float = Field(default=1.0, ge=0.0)  # texture: max_clutter for the texture search (its mask
    # has no belt pattern left, so what else stands out must be as big as the box to call the scene cluttered)
    background_file: str | None = None  # stills: the empty-belt reference image used for "background"
    empty_belt: str | None = None  # stills: a folder of >= 8 frames of the empty belt from the same camera (the
    # belt moving between them), or one sub-folder of such frames per camera (DIR/<line>/<view>/, as synth
    # --scenes belt writes DATA/empty/): learned BeltModels, used first by auto (what the daemon learns on the line)
    belt_threshold: float = Field(default=12.0, gt=0.0)  # belt model: weighted Lab distance outside the learned
    # empty belt's per-pixel range that counts as "not belt" (edge/judge/beltmodel.py)

    def describe(self) -> str:
        if self.method == "none":
            return "none (whole image)"
        extra = f", background {self.background_file}" if self.background_file else ""
        extra += f", empty belt {self.empty_belt}" if self.empty_belt else ""
        return (f"{self.method} (margin {self.margin:g}, {'square' if self.square else 'tight'}"
                f"{', rotated' if self.rotated else ''}{extra})")


NO_CROP = CropSpec(method="none")

# The crop's shape around a located box. "square": the box's bounding box, margin 0.08, padded to a square (the
# linear recipe's crop before 2026-12-07). "aligned": the box's minimum-area rectangle turned upright (long side
# horizontal) and cut tight (margin 0.02), stretched to the input: every crop shows the box at one orientation and
# scale (the anomaly recipe's crop; the linear recipe's default since docs/RESULTS.md "An upright crop for the
# linear head"). A whole frame is the same either way.
CropShape = Literal["square", "aligned"]
CROP_SHAPES: tuple[CropShape, ...] = ("square", "aligned")
ALIGNED_MARGIN = 0.02
# --crop-shape of `train` / `cv` (the linear recipe) and `localize`: chosen on four dev sets and confirmed once on the
# held-out scenes (docs/RESULTS.md "An upright crop for the linear head"); the Python API's CropSpec stays square
DEFAULT_SHAPE: CropShape = "aligned"


def shaped(spec: CropSpec, shape: CropShape) -> CropSpec:
    """``spec`` cut in ``shape``: "aligned" turns it upright and tight (margin :data:`ALIGNED_MARGIN` when ``spec``
    kept the default margin); "square" and ``none`` leave it as it is."""
    if shape == "square" or spec.method == "none":
        return spec
    margin = ALIGNED_MARGIN if spec.margin == CropSpec().margin else spec.margin
    return spec.model_copy(update={"rotated": True, "square": False, "margin": margin})


def shape_of(spec: CropSpec) -> CropShape:
    """The shape a crop spec cuts (the inverse of :func:`shaped` for its two shapes)."""
    return "aligned" if spec.rotated and not spec.square else "square"


@dataclass
class Located:
    """Where the box is. ``found`` False means no box (``bbox`` None); ``whole`` means the crop is the frame."""

    found: bool
    method: str  # what decided: background, salient, whole (auto fallback or method none), none
    bbox: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 in frame pixels (x1, y1 exclusive)
    rotated: tuple[tuple[float, float], tuple[float, float], float] | None = None  # cv2.minAreaRect, frame px
    area_frac: float = 0.0  # the region's share of the frame
    reason: str = ""  # why no box / why the whole image
    contrast: float = 0.0  # salient, texture: the region's median strength, in multiples of the detection bar
    others: float = 0.0  # what else stands out in the frame (any size), as a share of the region's area

    @property
    def whole(self) -> bool:
        return self.method == "whole"


def _work_scale(shape: tuple[int, ...], work_size: int) -> float:
    return min(1.0, work_size / max(shape[0], shape[1]))


def _lab(bgr: np.ndarray, scale: float) -> np.ndarray:
    small = bgr if scale == 1.0 else cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), 1.0)
    return cv2.cvtColor(small, cv2.COLOR_BGR2LAB).astype(np.float32)


def _largest_region(mask: np.ndarray) -> np.ndarray | None:
    """The largest 8-connected component of a uint8 mask, joined with the sizeable components right next to it
    (a dark tape or seam can cut a box in two), holes filled; or None."""
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return None
    areas = stats[1:, cv2.CC_STAT_AREA]
    i = 1 + int(np.argmax(areas))
    comp = (lab == i).astype(np.uint8)
    k = max(3, int(round(max(mask.shape) / 24)) | 1)
    # cut thin bridges to belt specks next to the box
    comp = cv2.morphologyEx(comp, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k // 2 | 1,) * 2))
    if not comp.any():
        comp = (lab == i).astype(np.uint8)
    near = cv2.dilate(comp, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    for j in np.unique(lab[(near > 0) & (lab > 0)]):
        if j != i and areas[j - 1] >= 0.05 * areas[i - 1]:
            comp[lab == j] = 1
    comp = cv2.morphologyEx(comp, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    contours, _ = cv2.findContours(comp, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(comp)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled


def _other_area(mask: np.ndarray, box_px: float) -> float:
    """Pixels of the regions in ``mask`` of ``box_px`` pixels or more (a quarter of the box: big enough to be
    another box): specks, bolts and belt wear are not clutter."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA] if n > 1 else np.zeros(0, np.int32)
    return float(areas[areas >= box_px].sum())


def _clean(mask: np.ndarray) -> np.ndarray:
    """Close small gaps inside the box, then remove speckle the belt texture leaves."""
    side = max(mask.shape)
    k = max(3, int(round(side / 64)) | 1)
    ker = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, ker)
    return cv2.morphologyEx(mask, cv2.MORPH_OPEN, ker)


def _features(lab: np.ndarray) -> np.ndarray:
    """Per pixel: L, a, b and the local contrast of L (texture), shape (h, w, 4)."""
    L = lab[..., 0]
    k = (5, 5)
    mean = cv2.blur(L, k)
    sd = np.sqrt(np.maximum(cv2.blur(L * L, k) - mean * mean, 0.0))
    return np.dstack([lab, sd]).astype(np.float32)


def salient_mask(bgr: np.ndarray, spec: CropSpec) -> tuple[np.ndarray, float]:
    """Pixels unlike the frame's border (the belt): mask at work scale (uint8 0/1) and that scale."""
    scale = _work_scale(bgr.shape, spec.work_size)
    f = _features(_lab(bgr, scale))
    h, w = f.shape[:2]
    b = max(2, int(round(0.05 * min(h, w))))
    border = np.concatenate([f[:b].reshape(-1, 4), f[-b:].reshape(-1, 4), f[b:-b, :b].reshape(-1, 4),
                             f[b:-b, -b:].reshape(-1, 4)])
    # a box touching the frame edge is part of the border: fit, drop the border's least belt-like quarter, refit
    keep = border
    for _ in range(2):
        mu = keep.mean(0)
        cov = np.cov(keep, rowvar=False) + np.eye(4) * 4.0  # floor: a flat belt is not infinitely sure
        inv = np.linalg.inv(cov).astype(np.float32)
        e = border - mu.astype(np.float32)
        bd = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", e, inv, e), 0.0))
        keep = border[bd <= np.percentile(bd, 75)]
    d = f.reshape(-1, 4) - mu.astype(np.float32)
    dist = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, inv, d), 0.0)).reshape(h, w)
    # the belt's own spread sets the bar too: a texture that is not Gaussian has a long tail
    bar = max(spec.salient_sigma, float(np.percentile(bd[bd <= np.percentile(bd, 75)], 99.0)) * 1.5)
    mask = (cv2.GaussianBlur(dist, (0, 0), 1.0) > bar).astype(np.uint8)
    _LAST.strength = dist / bar  # how far beyond the bar each pixel is (the region's contrast is checked)
    return _clean(mask), scale


# the last mask's per-pixel strength, per thread: the daemon's loop and the API's /predict locate at once
_LAST = threading.local()
_TEXTURE_DARK = 0.45  # texture: weight of a darkening (shadows) against a brightening


def _profile(r: np.ndarray, keep: np.ndarray | None, axis: int) -> np.ndarray:
    """The median of ``r`` along ``axis`` over the ``keep`` pixels; where too few are kept (a box covers most of
    that row or column) the profile is interpolated from the neighbouring rows or columns. Only rows or columns
    with enough kept pixels are reduced, so no all-NaN slice reaches ``nanmedian`` and no warning needs silencing
    (``warnings.catch_warnings`` changes the whole process's filters: not safe with the daemon's two threads)."""
    if keep is None:
        return np.asarray(np.median(r, axis=axis, keepdims=True), np.float32)
    good = keep.sum(axis=axis) >= max(1.0, 0.3 * r.shape[axis])
    if not good.any():
        return np.expand_dims(np.median(r, axis=axis), axis)
    idx = np.arange(good.size)
    kept = np.take(np.where(keep, r, np.nan), idx[good], axis=1 - axis)
    prof = np.zeros(good.size, kept.dtype)
    prof[good] = np.nanmedian(kept, axis=axis)
    if not good.all():
        prof = np.interp(idx, idx[good], prof[good])
    return np.expand_dims(prof, axis)


def _polish(x: np.ndarray, keep: np.ndarray | None = None, rounds: int = 2) -> np.ndarray:
    """Two-way median polish: ``x`` minus its row and column profiles, taken over the ``keep`` pixels only
    (what the previous pass called belt), so a box covering most of a column does not erase itself."""
    r = x.copy()
    for _ in range(rounds):
        r -= _profile(r, keep, 1)
        r -= _profile(r, keep, 0)
    return np.asarray(r, np.float32)


def _texture_dist(med: np.ndarray, keep: np.ndarray | None, dark: float) -> np.ndarray:
    """How far each pixel of the median-filtered BGR image ``med`` is from the belt the polish leaves behind
    (its row and column profiles), in Lab; a darkening counts ``dark``, and a shadow (the belt darker by the
    same factor in every channel) counts little."""
    bg = med - np.dstack([_polish(med[..., c], keep) for c in range(3)])
    bg = np.clip(bg, 0.0, 255.0)
    d = (cv2.cvtColor(med / 255.0, cv2.COLOR_BGR2LAB) - cv2.cvtColor(bg / 255.0, cv2.COLOR_BGR2LAB)).astype(np.float32)
    ratio = med / np.maximum(bg, 12.0)
    rmax, rmin = ratio.max(axis=2), ratio.min(axis=2)
    shadow = (rmax < 0.97) & (rmax - rmin < _SHADOW_SPREAD * rmax)
    dl = d[..., 0]
    d[..., 0] = np.where(dl > 0, 0.7 * dl, np.where(shadow, _SHADOW_WEIGHT, dark) * dl)
    d[..., 1:] *= np.where(shadow, _SHADOW_WEIGHT, 1.0)[..., None]
    return np.asarray(cv2.GaussianBlur(np.sqrt((d * d).sum(axis=2)), (0, 0), 1.0), np.float32)


_SHADOW_SPREAD = 0.15  # texture: channel ratios within this share of each other are a shadow's uniform darkening
_SHADOW_WEIGHT = 0.15  # texture: what a shadow-like darkening counts


def texture_mask(bgr: np.ndarray, spec: CropSpec) -> tuple[np.ndarray, float]:
    """Pixels unlike the belt, where the belt is periodic or striped (slats, rollers, ribs) and has rails.

    A median filter wider than the belt's gaps removes its fine periodic pattern; a two-way median polish
    removes what is constant along rows or columns (rails, slats across the travel, a lighting gradient
    across the belt); what is left is scored against its own robust spread (median + ``texture_z`` * MAD),
    and a darkening counts less than a brightening or a colour change (shadows are not boxes). Mask at work
    scale (uint8 0/1) and that scale."""
    scale = _work_scale(bgr.shape, spec.work_size)
    small = bgr if scale == 1.0 else cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    k = max(3, int(round(max(small.shape[:2]) / 40)) | 1)
    med_img = cv2.medianBlur(small, k).astype(np.float32)
    keep = None
    for _ in range(2):  # the second pass takes the belt's profiles without what the first found
        dist = _texture_dist(med_img, keep, _TEXTURE_DARK)
        med = float(np.median(dist))
        mad = max(0.5, 1.4826 * float(np.median(np.abs(dist - med))))
        bar = med + spec.texture_z * mad
        keep = dist < med + 3.0 * mad
    _LAST.strength = dist / bar
    return _drop_lines(_clean((dist > bar).astype(np.uint8))), scale


def _drop_lines(mask: np.ndarray) -> np.ndarray:
    """Remove the regions shaped like lines, not boxes: rails, belt edges and seams seen in perspective (a
    minimum-area rectangle longer than ``_LINE_ASPECT`` times its width, or filled less than a third), and
    what touches two or more edges of the frame (the floor beyond the belt, a rail): a box lies on the belt."""
    mask = _cut_from_edges(mask)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    out = mask.copy()
    h, w = mask.shape
    at_edges = [_touches(st, h, w) >= _EDGE_TOUCH for st in stats]
    inside = any(not at_edges[i] and stats[i, cv2.CC_STAT_AREA] >= 0.005 * h * w for i in range(1, n))
    for i in range(1, n):
        if stats[i, cv2.CC_STAT_AREA] < 4:
            continue
        if at_edges[i] and inside:  # keep it only when nothing box-sized lies clear of the edges
            out[lab == i] = 0
            continue
        pts = cv2.findNonZero((lab == i).astype(np.uint8))
        (_, _), (rw, rh), _ = cv2.minAreaRect(pts)
        long, short = max(rw, rh), max(1.0, min(rw, rh))
        if long / short > _LINE_ASPECT or stats[i, cv2.CC_STAT_AREA] < 0.33 * long * short:
            out[lab == i] = 0
    return np.asarray(out, np.uint8)


_LINE_ASPECT = 3.0
_EDGE_TOUCH = 1  # texture: a region touching this many frame edges is structure when a box-sized one lies inside
_CUT = 0.035  # texture: the disc that cuts a box from a rail or the floor it touches, share of the work size


def _touches(stat: np.ndarray, h: int, w: int) -> int:
    x, y, bw, bh = (int(v) for v in stat[:4])
    return int(x <= 0) + int(y <= 0) + int(x + bw >= w) + int(y + bh >= h)


def _cut_from_edges(mask: np.ndarray) -> np.ndarray:
    """A box touching a guide rail joins the rail's region: open each region that touches two or more frame
    edges with a disc wider than a rail, so a box-sized blob comes apart from the thin strip it touched."""
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    h, w = mask.shape
    k = max(5, int(round(_CUT * max(h, w))) | 1)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    out = mask.copy()
    for i in range(1, n):
        if _touches(stats[i], h, w) >= 2:
            comp = (lab == i).astype(np.uint8)
            out[lab == i] = 0
            out |= cv2.morphologyEx(comp, cv2.MORPH_OPEN, disc)
    return np.asarray(out, np.uint8)


_reference_memo: list[tuple[np.ndarray, tuple[int, int], float, np.ndarray] | None] = [None]


def _reference_lab(background: np.ndarray, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """The empty-belt reference at the frame's size and work scale, in Lab. The daemon passes the SAME array for
    every scored frame while its background model is frozen (a box in view), so the last one is remembered
    (by identity: a caller must not modify a reference it passes again) and a box's frames convert it once."""
    memo = _reference_memo[0]
    if memo is not None and memo[0] is background and memo[1] == tuple(shape[:2]) and memo[2] == scale:
        return memo[3]
    ref = background
    if ref.shape[:2] != tuple(shape[:2]):
        ref = cv2.resize(ref, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    if ref.ndim == 2:
        ref = cv2.cvtColor(ref, cv2.COLOR_GRAY2BGR)
    lab = _lab(ref, scale)
    _reference_memo[0] = (background, (int(shape[0]), int(shape[1])), scale, lab)
    return lab


def background_mask(bgr: np.ndarray, background: np.ndarray, spec: CropSpec) -> tuple[np.ndarray, float]:
    """Pixels that differ from the empty-belt reference: mask at work scale (uint8 0/1) and that scale."""
    scale = _work_scale(bgr.shape, spec.work_size)
    a, r = _lab(bgr, scale), _reference_lab(background, bgr.shape, scale)
    d = a - r
    d[..., 0] *= 0.7  # lightness counts less: soft shadows and light changes are not boxes
    dist = np.sqrt((d * d).sum(axis=2))
    mask = (cv2.GaussianBlur(dist, (0, 0), 1.5) > spec.diff_threshold).astype(np.uint8)
    return _clean(mask), scale


def locate(bgr: np.ndarray, spec: CropSpec, background: np.ndarray | None = None,
           belt: BeltModel | None = None) -> Located:
    """Find the box in a BGR uint8 frame. Never falls back: ``found`` is False when no region qualifies.

    With a learned empty-belt model of this camera (``belt``, method ``auto``) what lies outside the belt's
    per-pixel range is the box, and nothing outside it is an empty belt (``found`` False); only when the
    model sees the whole frame changed (light, a moved camera) do the other methods decide.

    ``auto`` with a region covering more than ``max_area`` (or touching 3-4 frame edges) returns
    ``method="whole"``: the box fills the frame. ``auto`` without a reference (or with one that differs from
    the whole frame) combines ``salient`` and ``texture`` (:func:`_reference_free`)."""
    if spec.method == "none":
        return Located(True, "whole", (0, 0, bgr.shape[1], bgr.shape[0]), None, 1.0, "crop method none")
    if belt is not None and spec.method == "auto" and belt.fits(bgr):
        learned = _locate_with(bgr, spec, "belt", belt=belt)
        if not learned.whole:  # a box, or the empty belt
            return learned
    if spec.method == "background" or (spec.method == "auto" and background is not None):
        if background is None:
            raise ValueError("crop method 'background' needs an empty-belt reference image (--background FILE)")
        diff = _locate_with(bgr, spec, "background", background)
        if spec.method == "background" or not diff.whole:  # a box, or the empty belt (nothing differs)
            return diff
        # auto: a moving patterned belt differs from any still reference everywhere (slats never line up
        # twice): then the reference-free search below decides, as it does for the training photos
    return _reference_free(bgr, spec)


def _reference_free(bgr: np.ndarray, spec: CropSpec) -> Located:
    """``salient``, ``texture``, or for ``auto`` the two combined (see :func:`locate`)."""
    if spec.method in ("salient", "texture"):
        return _locate_with(bgr, spec, spec.method)
    first = _locate_with(bgr, spec, "salient")
    second = _locate_with(bgr, spec, "texture")
    if first.found and first.whole and "fills the frame" in first.reason:
        # a box-centred photo, unless the texture search sees a small box clear of the frame's edges (the
        # salient region that spans the frame was the belt's rails and edges around it)
        return second if _small_inside(second, bgr.shape) else first
    if first.found and not first.whole:
        return second if _part_of(first, second) and confident(second) else first
    if confident(second, _GUESS_CONTRAST if not first.found else _OVERRIDE_CONTRAST):
        return second
    if first.found:  # salient called the scene cluttered and the texture search is not sure either
        return first
    return Located(False, "texture", area_frac=second.area_frac, reason=f"{first.reason}; texture: {second.reason}")


def confident(loc: Located, contrast: float = 0.0) -> bool:
    """A texture box that stands out strongly (``contrast``, default ``_OVERRIDE_CONTRAST``) with little else
    standing out."""
    return loc.found and not loc.whole and loc.bbox is not None and loc.others <= 0.5 \
        and loc.contrast >= (contrast or _OVERRIDE_CONTRAST)


def _small_inside(loc: Located, shape: tuple[int, ...]) -> bool:
    """A box found well inside the frame (no edge within 2% of it) and smaller than a quarter of it, that stands
    out strongly (``_OVERRIDE_CONTRAST``) with little else standing out: what a box on a belt between rails looks
    like to the texture search, and what a box-centred photo's labels and prints do not."""
    if not confident(loc) or loc.bbox is None:
        return False
    h, w = shape[:2]
    x0, y0, x1, y1 = loc.bbox
    m = 0.02 * max(h, w)
    return x0 > m and y0 > m and x1 < w - m and y1 < h - m and (x1 - x0) * (y1 - y0) < 0.25 * h * w


def _part_of(small: Located, big: Located) -> bool:
    """``small`` (salient) found only a piece of what ``big`` (texture) found: a coloured band or a label on
    a box that matches the belt; then the texture box is the box."""
    if small.bbox is None or big.bbox is None or big.whole or not big.found:
        return False
    a, b = small.bbox, big.bbox
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return area_b > _PART_RATIO * area_a and inter >= 0.7 * area_a


_PART_RATIO = 1.6
_BELT_LOW = 0.5  # belt model: what lies this far outside the range (times the threshold) and is not a shadow
# is box where it touches what lies beyond the threshold (a box's shaded faces, a grey face beside its band)
_BELT_JOIN = 20  # belt model: pieces closer than the work size / this are one box
_OTHERS_MIN = 0.1  # what else stands out counts from regions of a tenth of the box up (not bolts, specks)
_OVERRIDE_CONTRAST = 3.3  # auto: a texture box replaces salient's "fills the frame" / "cluttered" only above this
_GUESS_CONTRAST = 1.5  # auto: where salient finds nothing, a texture box above this is the box


def _grow(seeds: np.ndarray, low: np.ndarray) -> np.ndarray:
    """Hysteresis: the ``seeds`` mask (uint8 0/1) and every 8-connected piece of ``low`` (bool) that touches it."""
    if not seeds.any():
        return seeds
    _, lab = cv2.connectedComponents(low.astype(np.uint8), connectivity=8)
    keep = np.unique(lab[seeds > 0])
    return (np.isin(lab, keep[keep > 0]) | (seeds > 0)).astype(np.uint8)


def _locate_with(bgr: np.ndarray, spec: CropSpec, method: str, background: np.ndarray | None = None,
                 checks: bool | None = None, belt: BeltModel | None = None) -> Located:
    """One method's answer with the plausibility checks (``checks``, default: ``auto`` and ``texture``)."""
    checks = spec.method in ("auto", "texture") if checks is None else checks
    if method == "belt":
        assert belt is not None
        dist, shadow, scale = belt.distance_and_shadow(bgr)
        mask = _grow(_clean((dist > spec.belt_threshold).astype(np.uint8)),
                     (dist > _BELT_LOW * spec.belt_threshold) & ~shadow)
        # the learned belt leaves little but the box: join its pieces (faces split by a seam, a tape, a band
        # that matches the belt) before the largest region is taken
        k = max(5, int(round(max(mask.shape) / _BELT_JOIN)) | 1)
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        mask = np.asarray(cv2.morphologyEx(mask, cv2.MORPH_CLOSE, disc), np.uint8)
        _LAST.strength = dist / spec.belt_threshold
    elif method == "background":
        assert background is not None
        mask, scale = background_mask(bgr, background, spec)
    elif method == "salient":
        mask, scale = salient_mask(bgr, spec)
    else:
        mask, scale = texture_mask(bgr, spec)
    strength = getattr(_LAST, "strength", None) if method in ("salient", "texture", "belt") else None
    region = _largest_region(mask)
    h, w = mask.shape
    if region is None:
        return Located(False, method, reason="nothing differs from the line's learned empty belt" if method == "belt"
                       else "nothing stands out from the belt")
    area = float(region.sum()) / (h * w)
    x, y, bw, bh = cv2.boundingRect(region)
    edges = int(x <= 1) + int(y <= 1) + int(x + bw >= w - 1) + int(y + bh >= h - 1)
    span = bw * bh / (h * w)  # what the crop would keep: a box whose bounding box spans the frame fills it
    whole = (0, 0, bgr.shape[1], bgr.shape[0])
    contrast = float(np.median(strength[region > 0])) if strength is not None and region.any() else 0.0
    others = _other_area(mask & (1 - region), _OTHERS_MIN * float(region.sum())) / max(1.0, float(region.sum()))
    if method == "salient":
        if contrast < spec.min_contrast:  # a wear mark or a light patch on the belt, not a box
            return Located(False, method, area_frac=area,
                           reason=f"the region stands out only {contrast:.2f}x the belt's own spread")
    if area < spec.min_area:
        return Located(False, method, area_frac=area, reason=f"largest region {area:.1%} < min_area {spec.min_area:g}")
    if checks and (span > spec.max_area or edges >= 3):
        return Located(True, "whole", whole, None, area,
                       f"region spans {span:.0%} of the frame / touches {edges} edges: the box fills the frame")
    if checks:
        # a belt shows one box and little else; a scene where much else stands out (several boxes, clutter)
        # is not one the localiser understands: keep the whole image rather than guess a piece of it
        k = max(3, int(round(max(h, w) / 16)) | 1)
        near = cv2.dilate(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
        other = _other_area(mask & (1 - near), 0.25 * float(region.sum())) / (h * w)
        if other > (spec.texture_clutter if method in ("texture", "belt") else spec.max_clutter) * area:
            return Located(True, "whole", whole, None, area,
                           f"{other:.1%} of the frame stands out besides the box ({area:.1%}): cluttered scene")
    inv = 1.0 / scale
    fh, fw = bgr.shape[:2]
    bbox = (max(0, int(np.floor(x * inv))), max(0, int(np.floor(y * inv))),
            min(fw, int(np.ceil((x + bw) * inv))), min(fh, int(np.ceil((y + bh) * inv))))
    pts = cv2.findNonZero(region).astype(np.float32) * inv
    (cx, cy), (rw, rh), ang = cv2.minAreaRect(pts)
    return Located(True, method, bbox, ((cx, cy), (rw + inv, rh + inv), ang), area, contrast=contrast, others=others)


def locate_for_still(bgr: np.ndarray, spec: CropSpec, background: np.ndarray | None = None,
                     belt: BeltModel | BeltSet | None = None) -> Located:
    """:func:`locate` for still images (training, convert, predict): when no box is found the crop is the
    whole image, so every photo still gets a score (the daemon uses :func:`locate` and says "no box").
    ``belt`` (or ``spec.empty_belt``) may hold several cameras: the one the frame matches is used."""
    if spec.method in ("background", "auto") and background is None and spec.background_file:
        background = load_background(spec.background_file)
    if spec.method == "auto" and belt is None and spec.empty_belt:
        belt = _still_belt(spec)
    if isinstance(belt, BeltSet):
        belt = belt.pick(bgr)
    if _STILLS and spec.method == "auto" and belt is None and background is None:
        known = _STILLS.get(_still_key(bgr, spec))
        if known is not None:  # located beforehand with its data set's own belt (edge/judge/selfbelt.py)
            return known
    loc = locate(bgr, spec, background, belt)
    if not loc.found:
        return Located(True, "whole", (0, 0, bgr.shape[1], bgr.shape[0]), None, 1.0, loc.reason)
    return loc


def _still_belt(spec: CropSpec) -> BeltSet | None:
    """The recorded ``empty_belt`` folder's models; where it is missing (a package taken to another machine:
    predict, convert elsewhere) a warning once and no model, so the reference-free search crops."""
    assert spec.empty_belt is not None
    if not Path(spec.empty_belt).is_dir():
        if spec.empty_belt not in _MISSING_BELTS:
            _MISSING_BELTS.add(spec.empty_belt)
            log.warning("empty belt %s (recorded in the crop) is not here: cropping without the learned belt",
                        spec.empty_belt)
        return None
    return load_belt(spec.empty_belt, spec.work_size)


_MISSING_BELTS: set[str] = set()


_STILLS: dict[str, Located] = {}  # photo (content + search settings) -> where it was located beforehand


def _still_key(bgr: np.ndarray, spec: CropSpec) -> str:
    search = spec.model_dump_json(exclude={"margin", "square", "rotated"})
    return hashlib.blake2b(bgr.tobytes() + str(bgr.shape).encode() + search.encode(), digest_size=16).hexdigest()


def remember_still(bgr: np.ndarray, spec: CropSpec, loc: Located) -> None:
    """From now on :func:`locate_for_still` answers ``loc`` for this exact photo (``auto``, no reference given):
    edge/judge/selfbelt.py locates a data set's photos with a belt learned from the data set itself, once, and
    training, cv and ``localize`` then crop them so wherever they read them."""
    _STILLS[_still_key(bgr, spec)] = loc


def forget_stills() -> None:
    """Drop every photo :func:`remember_still` recorded."""
    _STILLS.clear()


def stills_tag() -> str:
    """A short digest of what :func:`remember_still` recorded ("" when nothing): part of a feature cache key, so
    crops made with a data set's own belt are not mixed with crops made without it."""
    if not _STILLS:
        return ""
    raw = "|".join(f"{k}:{v.bbox}:{v.method}" for k, v in sorted(_STILLS.items()))
    return hashlib.blake2b(raw.encode(), digest_size=8).hexdigest()


_BACKGROUNDS: dict[str, np.ndarray] = {}


def load_background(path: str | Path) -> np.ndarray:
    """Read (once per process) the empty-belt reference image of a CropSpec."""
    key = str(path)
    if key not in _BACKGROUNDS:
        img = cv2.imread(key, cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"background reference {path} is not a readable image")
        _BACKGROUNDS[key] = img
    return _BACKGROUNDS[key]


_BELTS: dict[tuple[str, int], BeltSet] = {}


def empty_belt_folders(folder: str | Path) -> dict[str, list[Path]]:
    """The cameras of an ``empty_belt`` folder: every folder in it (itself included) that holds images directly
    is one camera (e.g. ``DIR/*.png`` for one camera; ``DIR/<line>/<view>/*.png`` as ``synth --scenes belt``
    writes them), by its path relative to ``folder`` ("." for ``folder`` itself)."""
    d = Path(folder)
    groups: dict[str, list[Path]] = {}
    if d.is_dir():
        for p in sorted(d.rglob("*")):
            if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."):
                groups.setdefault(p.parent.relative_to(d).as_posix(), []).append(p)
    return groups


def load_belt(folder: str | Path, work_size: int = 256) -> BeltSet:
    """Learn (once per process) the empty-belt models of a CropSpec's ``empty_belt`` folder: one per camera
    folder (:func:`empty_belt_folders`), each from >= ``MIN_FRAMES`` frames of one size."""
    key = (str(folder), work_size)
    if key not in _BELTS:
        groups = empty_belt_folders(folder)
        if not groups:
            raise ValueError(f"empty belt {folder}: a belt model needs at least {MIN_FRAMES} frames of one camera, "
                             "got 0")
        models: dict[str, BeltModel] = {}
        for name, paths in groups.items():
            frames = [f for f in (cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths) if f is not None]
            try:
                models[name] = BeltModel.fit(frames, work_size)
            except ValueError as e:
                raise ValueError(f"empty belt {Path(folder) / name}: {e}") from e
        _BELTS[key] = BeltSet(models)
        log.info("belt models of %d camera(s) from %d empty-belt frames in %s", len(models),
                 sum(len(p) for p in groups.values()), folder)
    return _BELTS[key]


def already_cropped(bgr: np.ndarray) -> Located:
    """An image that is already the model's crop (the daemon's evidence ``_crop.png``, a feedback crop): taken
    whole, no box search. A crop searched again can give a crop of the crop (a finder or the search boxes a part
    of it), so what re-scores a kept crop passes this."""
    return Located(True, "whole", (0, 0, bgr.shape[1], bgr.shape[0]), None, 1.0, "already the model's crop")


def grown(x0: float, y0: float, x1: float, y1: float, spec: CropSpec) -> tuple[float, float, float, float]:
    """A box grown to its crop window: ``spec.margin`` of its longer side on every side, squared around its centre
    when ``spec.square`` (what :func:`crop` cuts, before the frame's edge is padded)."""
    bw, bh = x1 - x0, y1 - y0
    m = spec.margin * max(bw, bh)
    if spec.square:
        side = max(bw, bh) + 2 * m
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2
    return x0 - m, y0 - m, x1 + m, y1 + m


def crop(bgr: np.ndarray, loc: Located, spec: CropSpec) -> np.ndarray:
    """The BGR crop around a located box (margin, square, optionally upright); the frame if ``loc.whole``."""
    if loc.whole or loc.bbox is None:
        return bgr
    if spec.rotated and loc.rotated is not None:
        (cx, cy), (rw, rh), ang = loc.rotated
        if rw < rh:  # keep the long side horizontal, the smallest turn that does so
            rw, rh, ang = rh, rw, ang - 90.0
        M = cv2.getRotationMatrix2D((cx, cy), ang, 1.0)
        bgr = cv2.warpAffine(bgr, M, (bgr.shape[1], bgr.shape[0]), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
        x0, y0, x1, y1 = cx - rw / 2, cy - rh / 2, cx + rw / 2, cy + rh / 2
    else:
        x0, y0, x1, y1 = (float(v) for v in loc.bbox)
    x0, y0, x1, y1 = grown(x0, y0, x1, y1, spec)
    ix0, iy0 = int(round(x0)), int(round(y0))
    ix1, iy1 = ix0 + max(1, int(round(x1 - x0))), iy0 + max(1, int(round(y1 - y0)))  # square stays square
    h, w = bgr.shape[:2]
    pad = (max(0, -iy0), max(0, iy1 - h), max(0, -ix0), max(0, ix1 - w))
    if any(pad):
        bgr = cv2.copyMakeBorder(bgr, *pad, cv2.BORDER_REPLICATE)
        ix0, ix1, iy0, iy1 = ix0 + pad[2], ix1 + pad[2], iy0 + pad[0], iy1 + pad[0]
    return bgr[iy0:iy1, ix0:ix1]


def iou(a: tuple[int, int, int, int] | list[int], b: tuple[int, int, int, int] | list[int]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def crop_from_config(cfg: dict[str, Any]) -> CropSpec:
    """The crop recorded in a run's train_config.json (runs made before crops existed: none)."""
    raw = cfg.get("crop")
    return NO_CROP if raw is None else CropSpec.model_validate(raw)
