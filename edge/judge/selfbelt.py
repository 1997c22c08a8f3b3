"""Empty-belt models learned from a data set's own photos (issue 25): every photo holds a box, none is empty.

A fixed camera over a moving patterned belt sees the belt in many phases across its photos. A box covers a few
per cent of each photo, somewhere else each time, so at any one pixel most photos show belt. Two steps turn a
folder of still photos into :class:`~edge.judge.beltmodel.BeltModel` per camera:

1. **Which photos share a camera** (:func:`group_cameras`): real data sets say nothing about it. Photos of one
   size are compared by a small blurred Lab thumbnail (the belt's pattern blurs away, the belt's colour, rails and
   perspective stay); the distance of two photos is the median over the thumbnail's pixels (a box changes a few
   of them), and average-linkage clustering joins photos closer than ``CAMERA_DISTANCE``.
2. **The belt without the boxes** (:func:`fit_self_belt`): each photo's box is first found by the reference-free
   search (``auto`` without a model), grown generously (its shadow, a box found only in part) and masked; the
   per-pixel envelope is taken over the photos where that pixel was not masked (:func:`masked_envelope`). Then
   once more: every photo is located with that first model, the union of both boxes masked, and the envelope
   refitted. A pixel masked in too many photos takes the trimmed range over all of them.

A camera with fewer than ``MIN_PHOTOS`` photos gets no model (the reference-free search decides there).
numpy and OpenCV only (the edge has no TensorFlow). docs/RESULTS.md, "Belt models from a data set's own photos".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge.judge.beltmodel import BeltModel, work_features
from edge.judge.images import IMAGE_EXTS, read_bgr
from edge.judge.localize import (
    EMPTY_DIR,
    CropSpec,
    Located,
    locate_for_still,
    remember_still,
    stills_tag,
)

log = logging.getLogger(__name__)

MIN_PHOTOS = 8  # fewer photos of one camera: no model (too few belt phases at each pixel once boxes are masked)
CAMERA_DISTANCE = 12.0  # Lab units: median thumbnail distance below which two photos are one camera
THUMB = 32  # px: the thumbnail's long side
GROW = 0.35  # the mask grows the found box by this share of its long side on every side
MIN_VALID = 5  # a pixel unmasked in fewer photos takes the trimmed range over all photos
TRIM = 0.05  # share of each pixel's unmasked values dropped at both ends (a box both searches missed)
ALL_TRIM = 0.25  # the trim where a pixel has too few unmasked photos and no pixel near has enough
FILL_SIGMAS = (4.0, 8.0, 16.0, 32.0)  # px at work scale: how far a pixel under many boxes looks for belt
MAX_PHOTOS = 64  # photos per camera used for the fit (evenly spaced): more add little and cost memory


def thumbnail(bgr: np.ndarray) -> np.ndarray:
    """A small blurred Lab thumbnail (float32, long side ``THUMB``): the camera's view without the belt's
    fine pattern."""
    h, w = bgr.shape[:2]
    s = THUMB / max(h, w)
    mid = cv2.resize(bgr, (max(1, round(w * 4 * s)), max(1, round(h * 4 * s))), interpolation=cv2.INTER_AREA)
    small = cv2.resize(cv2.GaussianBlur(mid, (0, 0), 8.0), (max(1, round(w * s)), max(1, round(h * s))),
                       interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2LAB).astype(np.float32)


def thumbnail_distances(thumbs: np.ndarray) -> np.ndarray:
    """Pairwise median per-pixel Lab distance of (n, h, w, 3) thumbnails: (n, n) float32."""
    n = len(thumbs)
    flat = thumbs.reshape(n, -1, 3)
    d = np.zeros((n, n), np.float32)
    for i in range(n):
        diff = np.sqrt(((flat[i + 1:] - flat[i]) ** 2).sum(axis=2))
        d[i, i + 1:] = np.median(diff, axis=1)
        d[i + 1:, i] = d[i, i + 1:]
    return d


def _average_linkage(d: np.ndarray, threshold: float) -> list[list[int]]:
    """Average-linkage clusters of a distance matrix, joined while the closest two are below ``threshold``."""
    n = len(d)
    members: list[list[int]] = [[i] for i in range(n)]
    dist = d.astype(np.float64).copy()
    np.fill_diagonal(dist, np.inf)
    alive = np.ones(n, bool)
    while alive.sum() > 1:
        flat = int(np.argmin(dist))
        a, b = divmod(flat, n)
        if dist[a, b] >= threshold:
            break
        na, nb = len(members[a]), len(members[b])
        merged = (dist[a] * na + dist[b] * nb) / (na + nb)
        merged[a] = np.inf
        dist[a], dist[:, a] = merged, merged
        dist[b], dist[:, b] = np.inf, np.inf
        alive[b] = False
        members[a] = members[a] + members[b]
        members[b] = []
    return [sorted(m) for m, ok in zip(members, alive, strict=True) if ok]


def group_cameras(thumbs: Sequence[np.ndarray], shapes: Sequence[tuple[int, int]],
                  threshold: float = CAMERA_DISTANCE) -> list[list[int]]:
    """Indices of the photos that share a camera: same frame size and thumbnails closer than ``threshold``
    (see :func:`thumbnail`); the largest group first."""
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, s in enumerate(shapes):
        by_size.setdefault((int(s[0]), int(s[1])), []).append(i)
    groups: list[list[int]] = []
    for idx in by_size.values():
        t = np.stack([thumbs[i] for i in idx])
        for g in _average_linkage(thumbnail_distances(t), threshold):
            groups.append([idx[k] for k in g])
    return sorted(groups, key=lambda g: (-len(g), g[0]))


class MaskedStack:
    """Work-scale features of one camera's photos and, per photo, the pixels masked as box: per-pixel trimmed
    envelopes over the unmasked photos, of all of them or of all but one (leave-one-out: a photo's own box,
    missed by its mask, does not hide it from itself)."""

    def __init__(self, feats: np.ndarray, masked: np.ndarray, trim: float = TRIM, min_valid: int = MIN_VALID,
                 all_trim: float = ALL_TRIM) -> None:
        self.feats, self.masked = feats, masked
        n = len(feats)
        valid = ~masked
        self.count = valid.sum(axis=0)
        self.k = np.minimum(np.floor(trim * self.count).astype(np.intp), n - 2)[None, :, :, None]
        self.lo_sorted = np.sort(np.where(valid[..., None], feats, np.inf), axis=0)
        self.hi_sorted = np.sort(np.where(valid[..., None], feats, -np.inf), axis=0)
        every = np.sort(feats, axis=0)
        ka = int(all_trim * n)
        self.all_lo, self.all_hi = every[ka], every[n - 1 - ka]
        self.min_valid = min_valid

    def envelope(self, leave_out: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per pixel the low and high trimmed value over the unmasked photos (without photo ``leave_out``);
        where fewer than ``min_valid`` remain, the ``all_trim`` range over every photo."""
        n, k = len(self.feats), self.k
        lo = np.take_along_axis(self.lo_sorted, k, axis=0)[0]
        hi = np.take_along_axis(self.hi_sorted, n - 1 - k, axis=0)[0]
        count = self.count
        if leave_out is not None:  # the k-th smallest without x: the (k+1)-th where x was among the k+1 smallest
            x, own = self.feats[leave_out], ~self.masked[leave_out][..., None]
            lo = np.where(own & (x <= lo), np.take_along_axis(self.lo_sorted, k + 1, axis=0)[0], lo)
            hi = np.where(own & (x >= hi), np.take_along_axis(self.hi_sorted, n - 2 - k, axis=0)[0], hi)
            count = count - own[..., 0]
        few = count < self.min_valid
        return _fill(lo, few, self.all_lo), _fill(hi, few, self.all_hi)


def _fill(env: np.ndarray, few: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """``env`` where a pixel had enough unmasked photos; elsewhere (where most photos had a box: the belt's
    middle under large boxes) a weighted average of the nearby pixels that had (normalised convolution, wider
    until every pixel has support); ``fallback`` where nothing near had."""
    out: np.ndarray = np.array(env, dtype=np.float32)
    if not few.any():
        return out
    w = (~few).astype(np.float32)
    todo = few.copy()
    src = np.where(few[..., None], 0.0, out).astype(np.float32)
    for sigma in FILL_SIGMAS:
        den = cv2.GaussianBlur(w, (0, 0), sigma)
        num = np.dstack([cv2.GaussianBlur(src[..., c], (0, 0), sigma) for c in range(src.shape[2])])
        ok = todo & (den > 0.05)
        out[ok] = (num / np.maximum(den, 1e-6)[..., None])[ok]
        todo &= ~ok
        if not todo.any():
            return out
    out[todo] = fallback[todo]
    return out


def _box_mask(loc: Located, shape: tuple[int, int], scale: float, out: np.ndarray) -> None:
    """Mark (in place, work scale) the located box grown by ``GROW`` of its long side; nothing if whole."""
    if loc.whole or loc.bbox is None or not loc.found:
        return
    x0, y0, x1, y1 = (float(v) for v in loc.bbox)
    g = GROW * max(x1 - x0, y1 - y0)
    h, w = out.shape
    ix0, iy0 = max(0, int((x0 - g) * scale)), max(0, int((y0 - g) * scale))
    ix1, iy1 = min(w, int(np.ceil((x1 + g) * scale))), min(h, int(np.ceil((y1 + g) * scale)))
    out[iy0:iy1, ix0:ix1] = True


@dataclass
class SelfBelt:
    """A camera's belt model learned from its own photos, and how each photo was located while learning it."""

    model: BeltModel
    first: list[Located]  # the reference-free search (the first mask)
    located: list[Located]  # each photo with the last round's model of the other photos (leave-one-out)


def fit_self_belt(photos: Sequence[np.ndarray], spec: CropSpec, rounds: int = 2) -> SelfBelt:
    """Learn one camera's :class:`BeltModel` from ``photos`` (BGR, one size, each may hold a box): mask each
    photo's box (the reference-free search, then each photo located with the model of the others), envelope
    the rest. ``SelfBelt.located`` is each photo located with the final model of the others."""
    if len(photos) < MIN_PHOTOS:
        raise ValueError(f"a belt model from photos needs at least {MIN_PHOTOS} of one camera, got {len(photos)}")
    step = max(1, int(np.ceil(len(photos) / MAX_PHOTOS)))
    use = list(photos[::step])
    shape = (int(use[0].shape[0]), int(use[0].shape[1]))
    feats = np.stack([work_features(p, spec.work_size) for p in use])
    scale = feats.shape[1] / shape[0]
    masked = np.zeros(feats.shape[:3], bool)
    auto = spec.model_copy(update={"method": "auto", "empty_belt": None})
    first = [locate_for_still(p, auto) for p in use]
    for i, loc in enumerate(first):
        _box_mask(loc, shape, scale, masked[i])
    located = first
    for _ in range(rounds):
        stack = MaskedStack(feats, masked.copy())
        located = [locate_for_still(p, auto, belt=_model(stack, i, shape, spec)) for i, p in enumerate(use)]
        for i, loc in enumerate(located):
            _box_mask(loc, shape, scale, masked[i])
    stack = MaskedStack(feats, masked)
    return SelfBelt(_model(stack, None, shape, spec), first, located)


def _model(stack: MaskedStack, leave_out: int | None, shape: tuple[int, int], spec: CropSpec) -> BeltModel:
    n = len(stack.feats) - (leave_out is not None)
    return BeltModel.from_envelope(*stack.envelope(leave_out), shape, spec.work_size, n)


def data_photos(data: Path, skip: Sequence[Path] = ()) -> list[Path]:
    """The photos of a data folder, sorted: every image file under ``data`` (any depth, no hidden files) except
    those under ``data/empty/`` (empty-belt frames are ``--empty``'s input, not the data set's photos) and under
    the folders in ``skip``. What the self-learned belt learns from for train, cv, evaluate and ``localize``
    alike, so every command crops a photo the same way."""
    root = Path(data)
    out = [root / EMPTY_DIR, *(Path(s) for s in skip)]
    skips = [s.resolve() for s in out]
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                  and not p.name.startswith(".") and not any(p.resolve().is_relative_to(s) for s in skips))


@dataclass
class StillsReport:
    """What :func:`learn_stills` did: the camera groups found, which got a belt model, which were too small."""

    cameras: list[int] = field(default_factory=list)  # photos per camera group, largest first
    modelled: int = 0  # photos located with their camera's own belt
    too_few: int = 0  # photos in groups under MIN_PHOTOS (the reference-free search decides for them)
    unreadable: int = 0
    photos: int = 0  # photos given
    digest: str = ""  # localize.stills_tag() after learning: equal digests, equal crops (compare two runs by it)

    def sentence(self) -> str:
        with_model = sum(1 for n in self.cameras if n >= MIN_PHOTOS)
        s = (f"{len(self.cameras)} camera group(s) by frame size and view, {with_model} with >= {MIN_PHOTOS} "
             f"photos: belt learned from the photos themselves for {self.modelled} photo(s)")
        if self.too_few:
            s += (f"; {self.too_few} photo(s) in groups under {MIN_PHOTOS} photos use the reference-free search "
                  "(give more photos of that camera, or --empty DIR)")
        return s + f" (crops digest {self.digest or '-'} of {self.photos} photo(s))"


def learn_stills(paths: Sequence[Path], spec: CropSpec) -> StillsReport:
    """Group a data set's photos by camera, learn each group's belt from its own photos (groups of at least
    ``MIN_PHOTOS``), and have :func:`edge.judge.localize.locate_for_still` answer each of those photos with
    where that belt put its box (the model of the other photos of its camera). Photos are read twice (a
    thumbnail pass, then one camera at a time) so memory stays at one camera's photos. The report's ``digest``
    (:func:`edge.judge.localize.stills_tag`, in the log line) is equal for two runs exactly when they crop alike."""
    thumbs: list[np.ndarray] = []
    shapes: list[tuple[int, int]] = []
    readable: list[Path] = []
    report = StillsReport(photos=len(paths))
    for p in paths:
        bgr = read_bgr(p)
        if bgr is None:
            report.unreadable += 1
            continue
        thumbs.append(thumbnail(bgr))
        shapes.append((int(bgr.shape[0]), int(bgr.shape[1])))
        readable.append(Path(p))
    groups = group_cameras(thumbs, shapes) if readable else []
    report.cameras = [len(g) for g in groups]
    for g in groups:
        if len(g) < MIN_PHOTOS:
            report.too_few += len(g)
            continue
        photos = [np.asarray(read_bgr(readable[i])) for i in g]
        _remember_camera(photos, spec)
        report.modelled += len(g)
    report.digest = stills_tag()
    log.info("self-learned belt: %s", report.sentence())
    return report


def _remember_camera(photos: list[np.ndarray], spec: CropSpec) -> None:
    """Learn one camera's belt from its photos and record where each photo's box is."""
    sb = fit_self_belt(photos, spec)
    step = max(1, int(np.ceil(len(photos) / MAX_PHOTOS)))
    auto = spec.model_copy(update={"method": "auto", "empty_belt": None})
    for i, bgr in enumerate(photos):
        # a photo in the fit: the model of the others; one left out of it (a large camera group): the model
        loc = sb.located[i // step] if i % step == 0 else locate_for_still(bgr, auto, belt=sb.model)
        remember_still(bgr, spec, loc)
