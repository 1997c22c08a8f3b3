"""Synthetic data: cardboard boxes on a conveyor belt, seen from above.

One renderer makes both the training images and the conveyor video, so a model trained on the images
sees the same thing in the video's region of interest (ROI):

* ``make_dataset`` renders the ROI square of a virtual 640x360 frame with one box at a jittered position
  and rotation, resized to ``size``: ``out/ok/*.jpg``, ``out/defective/*.jpg`` and ``out/manifest.json``.
* ``make_video`` renders boxes riding a belt left to right at constant speed through the same ROI, one box
  in the ROI at a time with empty belt between them, and writes the ground truth beside the video.

Everything is domain-randomised (box size, pose, cardboard colour, tape, printed marks and shipping
labels, lighting gradient, white balance, blur, sensor noise, belt texture) and the defects are the ones
a real line sees: ``dent`` (crushed corner or dented top), ``tear`` (torn or punctured panel), ``open_flap``,
``water_stain``, ``missing_tape`` and ``loose_tape``. ``difficulty="easy"`` makes them large and
high-contrast; ``"hard"`` makes them smaller and subtler and adds clutter. OK boxes never carry a defect.

Only numpy and OpenCV are used (this module is part of the edge install). All randomness comes from
``numpy.random.Generator`` objects seeded from ``seed``, so the same seed gives identical output.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

log = logging.getLogger("boxinspect.synth")

DEFECTS = ("dent", "tear", "open_flap", "water_stain", "missing_tape", "loose_tape")
DIFFICULTIES = ("easy", "hard")
CLASSES = ("defective", "ok")  # folder names; "defective" is the positive class

BASE_ROI = 300  # ROI side in px at which every length below is defined (scaled for other frame sizes)
DATASET_FRAME = (640, 360)  # the virtual frame whose ROI a dataset image is
BELT_SPEED = 90.0  # px per second at BASE_ROI scale (6 px per frame at 15 fps)
MIN_FULL_FRAMES_15FPS = 12  # a box is entirely inside the ROI for at least this many frames at 15 fps
MAX_EXT_X = 216.0  # largest horizontal extent of a box sprite (incl. shadow), px at BASE_ROI scale
MAX_EXT_Y = 270.0
LEAD_FRAMES = 45  # empty belt at the start of a video (background learning)
TAIL_FRAMES = 20


# --------------------------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class Layout:
    """Where things are in a frame: the ROI square over the belt and the rails at top and bottom."""

    width: int
    height: int
    roi_x: int
    roi_y: int
    roi_side: int
    belt_top: int
    belt_bottom: int

    @property
    def scale(self) -> float:
        return self.roi_side / BASE_ROI

    @property
    def roi(self) -> dict[str, int]:
        return {"x": self.roi_x, "y": self.roi_y, "width": self.roi_side, "height": self.roi_side}


def layout_for(frame_size: tuple[int, int]) -> Layout:
    """The frame layout for ``(width, height)``: a centred ROI square of ~83% of the height over the belt."""
    w, h = int(frame_size[0]), int(frame_size[1])
    if w < 64 or h < 64:
        raise ValueError(f"frame_size {frame_size} is too small (at least 64x64)")
    side = min(int(round(h * BASE_ROI / 360)), w - 8)
    rx, ry = (w - side) // 2, (h - side) // 2
    rail = max(0, min(int(round(h * 22 / 360)), ry - 2))
    return Layout(w, h, rx, ry, side, rail, h - rail)


# ----------------------------------------------------------------------------------------- helpers
def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Zero-mean, unit-sd smooth noise with features about ``cell`` px across."""
    gh, gw = max(2, int(h / cell) + 3), max(2, int(w / cell) + 3)
    small = rng.standard_normal((gh, gw)).astype(np.float32)
    big = cv2.resize(small, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    oy = int(rng.integers(0, max(1, big.shape[0] - h)))
    ox = int(rng.integers(0, max(1, big.shape[1] - w)))
    out = big[oy : oy + h, ox : ox + w]
    sd = float(out.std()) or 1.0
    return (out - out.mean()) / sd


def _periodic_noise(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    """Zero-mean unit-sd Gaussian-filtered noise that wraps around in x (and y): FFT low-pass."""
    white = rng.standard_normal((h, w)).astype(np.float32)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    filt = np.exp(-2 * (math.pi * sigma) ** 2 * (fx**2 + fy**2))
    out = np.fft.irfft2(np.fft.rfft2(white) * filt, s=(h, w)).astype(np.float32)
    return (out - out.mean()) / (float(out.std()) or 1.0)


def _poly(points: np.ndarray, shape: tuple[int, int], shift: int = 4) -> np.ndarray:
    """Anti-aliased filled polygon as a float32 mask in [0, 1]."""
    m = np.zeros(shape, np.uint8)
    pts = np.round(np.asarray(points, np.float64) * (1 << shift)).astype(np.int32)
    cv2.fillPoly(m, [pts], 255, cv2.LINE_AA, shift)
    return m.astype(np.float32) / 255.0


def _c3(a: np.ndarray) -> np.ndarray:
    """A 2D array as 3 identical channels (numpy broadcasting over a last axis of 3 is slow)."""
    return cv2.merge([a, a, a])


def _const(shape: tuple[int, ...], colour: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """An image of ``shape[:2]`` filled with a BGR colour."""
    return cv2.merge([np.full(shape[:2], float(c), np.float32) for c in colour])


def _bbox(mask: np.ndarray) -> tuple[slice, slice] | None:
    """Slices of the bounding box of the non-zero pixels of a 2D mask (None if empty)."""
    x, y, w, h = cv2.boundingRect((mask != 0).view(np.uint8))
    if w == 0 or h == 0:
        return None
    return slice(y, y + h), slice(x, x + w)


def _blend(img: np.ndarray, colour: np.ndarray | tuple[float, ...], alpha: np.ndarray) -> None:
    """In place: img = img * (1 - alpha) + colour * alpha (colour a BGR triple or an image)."""
    bb = _bbox(alpha)
    if bb is None:
        return
    a = _c3(alpha[bb])
    col = np.asarray(colour, np.float32)
    reg = img[bb]
    col = col[bb] if col.ndim == 3 else _const(reg.shape, col)
    reg *= 1.0 - a
    reg += col * a


def _shade(img: np.ndarray, factor: np.ndarray | float) -> None:
    """In place multiplicative shading by a per-pixel factor (1 = unchanged)."""
    if isinstance(factor, np.ndarray) and factor.ndim == 2:
        bb = _bbox(factor != 1.0)
        if bb is None:
            return
        img[bb] *= _c3(np.ascontiguousarray(factor[bb], np.float32))
        return
    img *= factor


def _jagged(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float, n: int, rough: float) -> np.ndarray:
    """An irregular closed outline: a few smooth lobes plus fine ragged edges (a tear, not a star)."""
    ang = np.sort(rng.uniform(0, 2 * math.pi, n))
    lobes = sum(rng.uniform(0.05, 0.16) * np.cos(j * ang + rng.uniform(0, 2 * math.pi)) for j in (2, 3, 5))
    rad = 1.0 + lobes + rough * 0.35 * rng.uniform(-1, 1, n)
    return np.stack([cx + rx * rad * np.cos(ang), cy + ry * rad * np.sin(ang)], 1)


def _text(img: np.ndarray, txt: str, org: tuple[float, float], height: float, colour: tuple, thick: int,
          angle: float = 0.0) -> np.ndarray:
    """Draw text of roughly ``height`` px into a mask (returned) at org (left, baseline)."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.15, height / 22.0)
    m = np.zeros(img.shape[:2], np.uint8)
    cv2.putText(m, txt, (int(org[0]), int(org[1])), font, scale, 255, max(1, thick), cv2.LINE_AA)
    if angle:
        (tw, th), _ = cv2.getTextSize(txt, font, scale, max(1, thick))
        c = (org[0] + tw / 2, org[1] - th / 2)
        m = cv2.warpAffine(m, cv2.getRotationMatrix2D(c, angle, 1.0), (m.shape[1], m.shape[0]))
    return m.astype(np.float32) / 255.0


# ------------------------------------------------------------------------------------------ boxes
CARDBOARD = {  # BGR anchors
    "kraft": (92, 145, 190),
    "dark_kraft": (70, 112, 150),
    "light_kraft": (128, 172, 208),
    "white": (212, 220, 224),
    "mottled_white": (190, 204, 212),
}
TAPES = {  # BGR, opacity
    "brown": ((55, 118, 175), 0.88),
    "tan": ((110, 165, 205), 0.85),
    "white": ((236, 238, 238), 0.93),
    "printed": ((225, 240, 242), 0.93),
    "clear": ((235, 235, 235), 0.22),
}
WORDS = ("FRAGILE", "THIS SIDE UP", "HANDLE WITH CARE", "KEEP DRY", "ACME", "NORDPACK", "No. 4417", "BOX 24",
         "MADE IN EU", "RECYCLABLE", "LOT 07", "PARTS")
INKS = ((30, 30, 30), (110, 50, 20), (40, 40, 170), (40, 100, 40), (60, 60, 60))


@dataclass
class Sprite:
    """A rendered box: colour, opacity and drop shadow, with the box centre at ``(cx, cy)`` in sprite px."""

    colour: np.ndarray  # (h, w, 3) float32 BGR
    alpha: np.ndarray  # (h, w) float32
    shadow: np.ndarray  # (h, w) float32, darkening factor 0..1 for what lies under it
    cx: int
    cy: int
    params: dict[str, Any] = field(default_factory=dict)
    keep: np.ndarray = field(init=False, repr=False)  # (h, w, 3): what is left of the background
    premul: np.ndarray = field(init=False, repr=False)  # (h, w, 3): colour * alpha

    def __post_init__(self) -> None:
        a3 = _c3(self.alpha)
        self.keep = _c3(1.0 - self.shadow) * (1.0 - a3)
        self.premul = self.colour * a3

    @property
    def extent(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of every visible pixel (box or shadow), relative to the centre, x1/y1 exclusive."""
        vis = (self.alpha > 0.02) | (self.shadow > 0.02)
        ys, xs = np.nonzero(vis)
        return int(xs.min()) - self.cx, int(ys.min()) - self.cy, int(xs.max()) + 1 - self.cx, int(ys.max()) + 1 - self.cy


@dataclass
class _Box:
    """Working state while a box is drawn in its own (unrotated) frame: x along the length, y across."""

    rng: np.random.Generator
    hard: bool
    k: float  # px per BASE_ROI px
    L: float
    W: float
    pad: int
    colour: np.ndarray
    img: np.ndarray
    alpha: np.ndarray
    params: dict[str, Any]
    _grid: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def x0(self) -> float:
        return float(self.pad)

    @property
    def y0(self) -> float:
        return float(self.pad)

    @property
    def x1(self) -> float:
        return self.pad + self.L

    @property
    def y1(self) -> float:
        return self.pad + self.W

    @property
    def seam(self) -> float:
        return self.pad + self.W / 2

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """(X, Y) pixel coordinate arrays of the canvas."""
        if self._grid is None:
            h, w = self.alpha.shape
            self._grid = (np.tile(np.arange(w, dtype=np.float32), (h, 1)),
                          np.tile(np.arange(h, dtype=np.float32)[:, None], (1, w)))
        return self._grid


def _new_box(rng: np.random.Generator, difficulty: str, scale: float, defect: str | None = None) -> _Box:
    hard = difficulty == "hard"
    k = scale
    L = rng.uniform(150, 192) * k
    W = rng.uniform(128, min(L / k, 168)) * k
    # room around the top for what sticks out: an opened flap, a peeled tape end
    grow = {"open_flap": 0.5 * W, "loose_tape": 0.5 * max(L, W)}.get(defect or "", 0.0)
    pad = int(math.ceil(grow + 6 * k)) + 2
    h, w = int(math.ceil(W)) + 2 * pad, int(math.ceil(L)) + 2 * pad
    kinds = list(CARDBOARD)
    probs = np.array([0.42, 0.2, 0.2, 0.1, 0.08])
    kind = kinds[int(rng.choice(len(kinds), p=probs))]
    base = np.array(CARDBOARD[kind], np.float32) * rng.uniform(0.9, 1.08) + rng.normal(0, 5, 3).astype(np.float32)
    base = np.clip(base, 30, 245)
    img = _const((h, w), base)
    alpha = np.zeros((h, w), np.float32)
    params = {"length": round(L, 1), "width": round(W, 1), "cardboard": kind,
              "colour_bgr": [round(float(c), 1) for c in base]}
    return _Box(rng, hard, k, L, W, pad, base, img, alpha, params)


def _outline(b: _Box, crush: dict | None) -> np.ndarray:
    """The top outline polygon (box frame); a crushed corner pushes one corner inwards."""
    x0, y0, x1, y1 = b.x0, b.y0, b.x1, b.y1
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if not crush:
        return np.array(corners, np.float64)
    ci, d = crush["corner"], crush["depth"]
    pts: list[tuple[float, float]] = []
    for i, (cx, cy) in enumerate(corners):
        if i != ci:
            pts.append((cx, cy))
            continue
        prev_c, next_c = np.array(corners[i - 1]), np.array(corners[(i + 1) % 4])
        c = np.array([cx, cy])
        u_prev = (prev_c - c) / np.linalg.norm(prev_c - c)
        u_next = (next_c - c) / np.linalg.norm(next_c - c)
        a = c + u_prev * d * crush["spread_a"]
        bb = c + u_next * d * crush["spread_b"]
        inner = c + (u_prev + u_next) * d * 0.3
        # jagged crumpled edge from a -> inner -> bb
        path = [a]
        for t in np.linspace(0, 1, 6)[1:-1]:
            p = a + (inner - a) * t
            path.append(p + (u_prev + u_next) * b.rng.uniform(-0.06, 0.06) * d)
        path.append(inner)
        for t in np.linspace(0, 1, 6)[1:-1]:
            p = inner + (bb - inner) * t
            path.append(p + (u_prev + u_next) * b.rng.uniform(-0.06, 0.06) * d)
        path.append(bb)
        crush["path"] = [tuple(map(float, p)) for p in path]
        crush["deep"] = tuple(map(float, c + (u_prev + u_next) * d * rng_uniform(b, 0.85, 1.05)))
        pts.extend(tuple(p) for p in path)
    return np.array(pts, np.float64)


def rng_uniform(b: _Box, lo: float, hi: float) -> float:
    return float(b.rng.uniform(lo, hi))


def _cardboard(b: _Box) -> None:
    """Paper texture: mottling, corrugation flutes, fibre specks; flap shading, seam and edges."""
    rng, k = b.rng, b.k
    # the texture covers the top (its size does not depend on the canvas, so the same box looks the
    # same whatever room its defect needs around it)
    ys, xs = slice(b.pad - 2, b.pad + int(math.ceil(b.W)) + 2), slice(b.pad - 2, b.pad + int(math.ceil(b.L)) + 2)
    X, Y = b.grid()
    X, Y = X[ys, xs], Y[ys, xs]
    h, w = X.shape
    mott = _smooth_noise(rng, h, w, 22 * k) * rng.uniform(0.02, 0.045)
    fine = _smooth_noise(rng, h, w, 2.5 * k) * rng.uniform(0.008, 0.02)
    flutes = np.sin(2 * math.pi * X / (rng.uniform(4.5, 7.0) * k)) * rng.uniform(0.004, 0.012)
    gain = 1.0 + mott + fine + flutes
    # the two top flaps are separate panels that sit at slightly different angles
    f1, f2 = 1.0 + rng.uniform(-0.035, 0.035, 2)
    gain *= np.where(Y < b.seam, f1, f2).astype(np.float32)
    b.img[ys, xs] *= _c3(gain.astype(np.float32))
    # fibre specks
    n = int(rng.integers(20, 60))
    xs = rng.uniform(b.x0, b.x1 - 1, n).astype(int)
    ys = rng.uniform(b.y0, b.y1 - 1, n).astype(int)
    b.img[ys, xs] *= rng.uniform(0.8, 0.95, (n, 1)).astype(np.float32)


def _edges(b: _Box, mask: np.ndarray) -> None:
    """Darker rim along the outline (panel edges, wall thickness), lighter on the lit (top-left) sides."""
    m8 = (mask > 0.5).astype(np.uint8)
    d = cv2.distanceTransform(m8, cv2.DIST_L2, 3).astype(np.float32)
    X, Y = b.grid()
    cx, cy = (b.x0 + b.x1) / 2, (b.y0 + b.y1) / 2
    lit = ((cx - X) / b.L + (cy - Y) / b.W)  # >0 on top-left half
    rim = np.exp(-d / (2.2 * b.k))
    gain = 1.0 - rim * (0.16 - 0.12 * np.clip(lit, -1, 1))
    _shade(b.img, gain.astype(np.float32))


def _seam(b: _Box, width: float, darkness: float, x_from: float | None = None, x_to: float | None = None) -> None:
    """The gap between the two top flaps along the centre line (visible where not taped)."""
    rng = b.rng
    xa = b.x0 + 1 if x_from is None else x_from
    xb = b.x1 - 1 if x_to is None else x_to
    xs = np.linspace(xa, xb, 24)
    # the flap edges are straight-ish: a gentle bow and a gap that varies a little in width
    ctrl = np.linspace(xa, xb, 4)
    centre = np.interp(xs, ctrl, rng.uniform(-0.12, 0.12, 4) * width + rng.uniform(-0.5, 0.5) * b.k)
    half = width / 2 * np.interp(xs, ctrl, rng.uniform(0.75, 1.2, 4))
    top = np.stack([xs, b.seam + centre - half], 1)
    bot = np.stack([xs[::-1], (b.seam + centre + half)[::-1]], 1)
    m = _poly(np.concatenate([top, bot]), b.alpha.shape)
    _blend(b.img, b.colour * darkness, m * b.alpha)


def _prints(b: _Box) -> None:
    """Printed ink on the cardboard: words, handling arrows, a logo frame."""
    rng, k = b.rng, b.k
    n = int(rng.choice(3, p=[0.45, 0.4, 0.15])) if not b.hard else int(rng.integers(0, 5))
    marks = []
    for _ in range(n):
        ink = np.array(INKS[int(rng.integers(len(INKS)))], np.float32)
        strength = rng.uniform(0.45, 0.8)
        kind = rng.choice(["word", "arrows", "frame"], p=[0.6, 0.25, 0.15])
        half = 0 if rng.random() < 0.5 else 1
        ya, yb = (b.y0 + 6 * k, b.seam - 14 * k) if half == 0 else (b.seam + 14 * k, b.y1 - 6 * k)
        m = np.zeros(b.alpha.shape, np.float32)
        if kind == "word":
            txt = str(rng.choice(WORDS))
            hgt = rng.uniform(7, 12 if not b.hard else 18) * k
            x = rng.uniform(b.x0 + 6 * k, max(b.x0 + 7 * k, b.x1 - len(txt) * hgt * 0.7))
            y = rng.uniform(ya + hgt, max(ya + hgt + 1, yb))
            m = _text(b.img, txt, (x, y), hgt, (1,), max(1, int(round(hgt / 7))), rng.uniform(-3, 3))
        elif kind == "arrows":
            s = rng.uniform(10, 16) * k
            x = rng.uniform(b.x0 + 8 * k, b.x1 - 3 * s)
            y = rng.uniform(ya + s, max(ya + s + 1, yb))
            for j in range(2):
                ax = x + j * 1.4 * s
                pts = np.array([(ax, y), (ax + s / 2, y - s), (ax + s, y), (ax + 0.65 * s, y), (ax + 0.65 * s, y + 0.7 * s),
                                (ax + 0.35 * s, y + 0.7 * s), (ax + 0.35 * s, y)])
                m = np.maximum(m, _poly(pts, m.shape))
        else:
            fw, fh = rng.uniform(30, 55) * k, rng.uniform(14, 24) * k
            x = rng.uniform(b.x0 + 6 * k, b.x1 - fw - 6 * k)
            y = rng.uniform(ya, max(ya + 1, yb - fh))
            m8 = np.zeros(m.shape, np.uint8)
            cv2.rectangle(m8, (int(x), int(y)), (int(x + fw), int(y + fh)), 255, max(1, int(1.5 * k)), cv2.LINE_AA)
            m = m8.astype(np.float32) / 255
        _blend(b.img, ink, m * strength * b.alpha)
        marks.append(str(kind))
    b.params["prints"] = marks


def _shipping_label(b: _Box) -> None:
    """A white shipping label with barcode and address lines, on one flap."""
    rng, k = b.rng, b.k
    if rng.random() > (0.7 if not b.hard else 0.8):
        b.params["label"] = False
        return
    lw = rng.uniform(0.3, 0.42) * b.L
    lh = rng.uniform(0.3, 0.4) * b.W
    half = int(rng.integers(2))
    ya, yb = (b.y0 + 4 * k, b.seam - 12 * k - lh) if half == 0 else (b.seam + 12 * k, b.y1 - 4 * k - lh)
    x = rng.uniform(b.x0 + 5 * k, b.x1 - 5 * k - lw)
    y = rng.uniform(ya, max(ya + 1, yb))
    ang = rng.uniform(-4, 4)
    h, w = b.alpha.shape
    lab = np.empty((int(lh) + 1, int(lw) + 1, 3), np.float32)
    paper = np.array([238, 242, 244], np.float32) * rng.uniform(0.93, 1.03)
    lab[:] = np.clip(paper, 0, 255)
    lm = np.zeros(lab.shape[:2], np.uint8)
    # barcode
    bx, by, bw, bh = 0.08 * lw, 0.62 * lh, 0.84 * lw, 0.26 * lh
    xx = bx
    while xx < bx + bw:
        bar = rng.uniform(0.6, 2.4) * k
        if rng.random() < 0.55:
            cv2.rectangle(lm, (int(xx), int(by)), (int(xx + bar), int(by + bh)), 255, -1)
        xx += bar + rng.uniform(0.6, 1.6) * k
    # address lines
    for j in range(int(rng.integers(3, 6))):
        ly = 0.1 * lh + j * 0.1 * lh
        if ly > 0.55 * lh:
            break
        lx = 0.08 * lw
        while lx < 0.08 * lw + rng.uniform(0.4, 0.85) * lw:
            wl = rng.uniform(6, 16) * k
            cv2.line(lm, (int(lx), int(ly)), (int(min(lx + wl, 0.92 * lw)), int(ly)), 150, max(1, int(round(1.2 * k))))
            lx += wl + 3 * k
    if rng.random() < 0.5:  # a thick routing code box
        cv2.rectangle(lm, (int(0.7 * lw), int(0.08 * lh)), (int(0.92 * lw), int(0.3 * lh)), 255, -1)
    _blend(lab, (25, 25, 25), lm.astype(np.float32) / 255)
    # place with rotation
    M = cv2.getRotationMatrix2D((lw / 2, lh / 2), ang, 1.0)
    M[:, 2] += (x, y)
    warped = cv2.warpAffine(lab, M, (w, h), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(np.ones(lab.shape[:2], np.float32), M, (w, h), flags=cv2.INTER_LINEAR)
    mask *= b.alpha
    _blend(b.img, warped, mask)
    # a faint darker edge where the label sits on the cardboard
    edge = cv2.morphologyEx((mask > 0.5).astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    _shade(b.img, 1.0 - 0.12 * edge.astype(np.float32))
    b.params["label"] = True


def _clutter(b: _Box) -> None:
    """Hard difficulty: things on OK boxes that are not defects: a handwritten marker note, a strapping
    band across the box, a small sticker."""
    rng, k = b.rng, b.k
    notes = []
    if rng.random() < 0.35:  # marker scribble
        txt = f"{int(rng.integers(10, 999))}{'-' + str(int(rng.integers(1, 9))) if rng.random() < 0.5 else ''}"
        hgt = rng.uniform(12, 20) * k
        x = rng.uniform(b.x0 + 6 * k, max(b.x0 + 7 * k, b.x1 - len(txt) * hgt * 0.8))
        y = rng.uniform(b.y0 + hgt + 4 * k, b.y1 - 4 * k)
        m = np.zeros(b.alpha.shape, np.uint8)
        cv2.putText(m, txt, (int(x), int(y)), cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, hgt / 22, 255, max(1, int(2 * k)),
                    cv2.LINE_AA)
        _blend(b.img, (35, 30, 30), m.astype(np.float32) / 255 * 0.85 * b.alpha)
        notes.append("marker")
    if rng.random() < 0.25:  # strapping band across the box (perpendicular to the seam)
        xs = rng.uniform(b.x0 + 0.2 * b.L, b.x1 - 0.2 * b.L)
        wdt = rng.uniform(3, 5) * k
        colour = [(230, 230, 230), (160, 90, 40), (40, 40, 40)][int(rng.integers(3))]
        band = _poly(np.array([(xs, b.y0 - 1), (xs + wdt, b.y0 - 1), (xs + wdt, b.y1 + 1), (xs, b.y1 + 1)]),
                     b.alpha.shape)
        _blend(b.img, colour, band * 0.95 * (b.alpha > 0.5))
        notes.append("strap")
    if rng.random() < 0.3:  # small coloured sticker
        sw, shh = rng.uniform(14, 24) * k, rng.uniform(10, 16) * k
        x, y = rng.uniform(b.x0 + 4 * k, b.x1 - sw - 4 * k), rng.uniform(b.y0 + 4 * k, b.y1 - shh - 4 * k)
        colour = [(40, 160, 240), (60, 60, 220), (60, 200, 230), (200, 120, 40)][int(rng.integers(4))]
        st = _poly(np.array([(x, y), (x + sw, y), (x + sw, y + shh), (x, y + shh)]), b.alpha.shape)
        _blend(b.img, colour, st * b.alpha)
        notes.append("sticker")
    b.params["clutter"] = notes


def _tape_strip(b: _Box, kind: str, tw: float, xa: float, xb: float, y_c: float, alpha_scale: float = 1.0) -> np.ndarray:
    """Draw a straight tape strip along x from xa to xb centred at y_c; returns its mask."""
    rng, k = b.rng, b.k
    colour, opacity = TAPES[kind]
    colour = np.array(colour, np.float32) * rng.uniform(0.94, 1.04)
    pts = np.array([(xa, y_c - tw / 2), (xb, y_c - tw / 2), (xb, y_c + tw / 2), (xa, y_c + tw / 2)])
    m = _poly(pts, b.alpha.shape)
    X, Y = b.grid()
    if kind == "clear":
        sheen = 1.0 + 0.1 * np.exp(-(((Y - (y_c - tw * 0.2)) / (tw * 0.15)) ** 2))
        _shade(b.img, (1.0 + (sheen - 1.0) * m).astype(np.float32))
        _blend(b.img, colour, m * opacity * alpha_scale)
    else:
        _blend(b.img, colour, m * opacity * alpha_scale)
        gloss = 1.0 + 0.08 * np.exp(-(((Y - (y_c - tw * 0.15)) / (tw * 0.18)) ** 2))
        _shade(b.img, (1.0 + (gloss - 1.0) * m).astype(np.float32))
        if kind == "printed":
            n = int((xb - xa) / (tw * 3.2))
            for j in range(max(1, n)):
                tx = xa + (j + 0.15) * tw * 3.2
                tm = _text(b.img, "FRAGILE", (tx, y_c + tw * 0.22), tw * 0.45, (1,), max(1, int(k * 1.2)))
                _blend(b.img, (40, 40, 190), tm * m * 0.9)
    # edges of the tape catch a little shadow
    edge = cv2.morphologyEx((m > 0.5).astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((2, 2), np.uint8))
    _shade(b.img, 1.0 - 0.08 * edge.astype(np.float32) * (opacity > 0.5))
    # a few wrinkles across the tape
    for _ in range(int(rng.integers(0, 4))):
        wx = rng.uniform(xa, xb)
        wm = np.zeros(m.shape, np.uint8)
        cv2.line(wm, (int(wx), int(y_c - tw / 2)), (int(wx + rng.uniform(-3, 3) * k), int(y_c + tw / 2)), 255, 1, cv2.LINE_AA)
        _shade(b.img, 1.0 - 0.07 * wm.astype(np.float32) / 255)
    return m


# ----------------------------------------------------------------------------------------- defects
def _sev(b: _Box, easy: tuple[float, float], hard: tuple[float, float]) -> float:
    lo, hi = hard if b.hard else easy
    return float(b.rng.uniform(lo, hi))


def _water_stain(b: _Box) -> None:
    rng = b.rng
    h, w = b.alpha.shape
    r = _sev(b, (0.3, 0.4), (0.09, 0.15)) * min(b.L, b.W)
    cx = rng.uniform(b.x0 + r * 0.8, b.x1 - r * 0.8)
    cy = rng.uniform(b.y0 + r * 0.8, b.y1 - r * 0.8)
    X, Y = b.grid()
    ex = rng.uniform(0.75, 1.3)
    rr = np.sqrt(((X - cx) / (r * ex)) ** 2 + ((Y - cy) / (r / ex)) ** 2)
    field_ = 1.0 - rr + 0.28 * _smooth_noise(rng, h, w, r * 0.45)
    blob = (field_ > 0).astype(np.float32)
    blob = cv2.GaussianBlur(blob, (0, 0), 1.2 * b.k) * b.alpha
    dark = _sev(b, (0.45, 0.6), (0.72, 0.82))
    tint = np.array([0.86, 0.95, 1.0], np.float32)  # wet kraft goes darker and redder
    b.img *= cv2.merge([1.0 - blob * (1.0 - dark * float(t)) for t in tint])
    # tide mark: a darker rim where the water stopped
    rim = cv2.morphologyEx((blob > 0.5).astype(np.uint8), cv2.MORPH_GRADIENT,
                           cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    rim = cv2.GaussianBlur(rim.astype(np.float32), (0, 0), 1.0 * b.k)
    _shade(b.img, 1.0 - rim * (0.35 if not b.hard else 0.2))
    b.params["defect_size"] = round(float(blob.sum() / (b.L * b.W)), 3)


def _dent(b: _Box) -> dict | None:
    """Choose the dent: a crushed corner (returned, it changes the outline) or a dented top (None)."""
    rng = b.rng
    if rng.random() < (0.85 if not b.hard else 0.5):
        depth = _sev(b, (0.36, 0.46), (0.1, 0.15)) * min(b.L, b.W)
        return {"corner": int(rng.integers(4)), "depth": depth, "spread_a": rng.uniform(1.1, 1.6),
                "spread_b": rng.uniform(1.1, 1.6)}
    return None


def _creases(b: _Box, cx: float, cy: float, r: float, amp: float, radial: bool = False) -> None:
    """Crease lines: a dark fold with a thin highlight beside it (light comes from the top left)."""
    rng, k = b.rng, b.k
    m_dark = np.zeros(b.alpha.shape, np.uint8)
    m_light = np.zeros(b.alpha.shape, np.uint8)
    th = max(1, int(round(1.4 * k)))
    for _ in range(int(rng.integers(3, 7))):
        a = rng.uniform(0, 2 * math.pi)
        if radial:
            r0, r1 = r * rng.uniform(0.0, 0.3), r * rng.uniform(0.7, 1.15)
            p0 = (cx + r0 * math.cos(a), cy + r0 * math.sin(a))
            p1 = (cx + r1 * math.cos(a), cy + r1 * math.sin(a))
        else:
            ln = r * rng.uniform(0.6, 1.3)
            ox, oy = cx + rng.uniform(-0.4, 0.4) * r, cy + rng.uniform(-0.4, 0.4) * r
            p0 = (ox - ln / 2 * math.cos(a), oy - ln / 2 * math.sin(a))
            p1 = (ox + ln / 2 * math.cos(a), oy + ln / 2 * math.sin(a))
        mid = ((p0[0] + p1[0]) / 2 + rng.uniform(-0.1, 0.1) * r, (p0[1] + p1[1]) / 2 + rng.uniform(-0.1, 0.1) * r)
        for q0, q1 in ((p0, mid), (mid, p1)):
            cv2.line(m_dark, (int(q0[0]), int(q0[1])), (int(q1[0]), int(q1[1])), 255, th, cv2.LINE_AA)
            cv2.line(m_light, (int(q0[0] - th), int(q0[1] - th)), (int(q1[0] - th), int(q1[1] - th)), 255, th,
                     cv2.LINE_AA)
    light = m_light.astype(np.float32) / 255 * (1.0 - m_dark.astype(np.float32) / 255)
    _shade(b.img, 1.0 + 0.35 * amp * light * b.alpha)
    _shade(b.img, 1.0 - 0.9 * amp * m_dark.astype(np.float32) / 255 * b.alpha)


def _crush_shading(b: _Box, crush: dict) -> None:
    """A crushed corner: folded facets at different angles (so different shades), fold lines, and the
    crumpled wall along the pushed-in outline."""
    rng, k = b.rng, b.k
    d = crush["depth"]
    path = [np.array(p) for p in crush["path"]]
    deep = np.array(crush["deep"])
    amp = 0.5 if not b.hard else 0.16
    lo, hi = (0.3, 0.75) if not b.hard else (0.8, 0.95)
    idx = sorted(set([0, len(path) - 1, *rng.choice(np.arange(1, len(path) - 1), 2, replace=False).tolist()]))
    folds = np.zeros(b.alpha.shape, np.uint8)
    for i0, i1 in zip(idx[:-1], idx[1:], strict=True):
        tri = np.array([*path[i0 : i1 + 1], deep])
        _shade(b.img, 1.0 - (1.0 - rng.uniform(lo, hi)) * _poly(tri, b.alpha.shape) * b.alpha)
    for i in idx:
        cv2.line(folds, tuple(int(v) for v in path[i]), tuple(int(v) for v in deep), 255, max(1, int(1.3 * k)),
                 cv2.LINE_AA)
    # the crumpled wall along the new outline shows as a dark band
    X, Y = b.grid()
    rr = np.sqrt((X - deep[0]) ** 2 + (Y - deep[1]) ** 2) / (d * 1.3)
    mask = (b.alpha > 0.5).astype(np.uint8)
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    band = np.exp(-dist / (2.5 * k)) * (rr < 1.0)
    _shade(b.img, (1.0 - (0.5 if not b.hard else 0.2) * band).astype(np.float32))
    _shade(b.img, 1.0 - 0.6 * amp * folds.astype(np.float32) / 255 * b.alpha)
    _creases(b, deep[0], deep[1], d * 0.7, amp * 0.8, radial=True)
    b.params["dent_kind"] = "corner"
    b.params["defect_size"] = round(float(d / min(b.L, b.W)), 3)


def _tear(b: _Box) -> None:
    rng, k = b.rng, b.k
    m = min(b.L, b.W)
    if b.hard and rng.random() < 0.4:  # a slit
        rx, ry = rng.uniform(0.16, 0.26) * m, rng.uniform(0.025, 0.05) * m
    else:
        r = _sev(b, (0.17, 0.24), (0.05, 0.085)) * m
        ex = rng.uniform(0.75, 1.35)
        rx, ry = r * ex, r / ex
    cx = rng.uniform(b.x0 + rx + 8 * k, b.x1 - rx - 8 * k)
    cy = rng.uniform(b.y0 + ry + 8 * k, b.y1 - ry - 8 * k)
    pts = _jagged(rng, cx, cy, rx, ry, int(rng.integers(30, 44)), 0.3)
    ang = rng.uniform(0, 180)
    R = cv2.getRotationMatrix2D((cx, cy), ang, 1.0)
    pts = pts @ R[:, :2].T + R[:, 2]
    hole = _poly(pts, b.alpha.shape)
    # ragged rim: exposed paper and flutes, lighter than the surface
    ring = cv2.dilate((hole > 0.5).astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (
        int(2 * 3 * k) + 1, int(2 * 3 * k) + 1))).astype(np.float32)
    ring = np.clip(ring - hole, 0, 1) * (0.6 + 0.4 * (_smooth_noise(rng, *hole.shape, 1.5 * k) > -0.3))
    fibre = np.minimum(b.colour * 1.22 + 12, 250)
    _blend(b.img, fibre, ring * b.alpha * (0.9 if not b.hard else 0.6))
    # inside the box: dark, darker on the lit side of the hole (its wall shades it)
    X, Y = b.grid()
    grad = np.clip(0.5 + ((X - cx) + (Y - cy)) / (2.5 * max(rx, ry)), 0, 1)
    darkness = rng.uniform(0.16, 0.28) if not b.hard else rng.uniform(0.3, 0.45)
    inside = _const(b.img.shape, b.colour * darkness) * _c3((0.55 + 0.6 * grad).astype(np.float32))
    _blend(b.img, inside, hole)
    # torn flaps of cardboard folded into the hole
    for _ in range(int(rng.integers(1, 4))):
        i = int(rng.integers(len(pts)))
        p = pts[i]
        q = pts[(i + len(pts) // int(rng.integers(5, 9))) % len(pts)]
        tip = p + (np.array([cx, cy]) - p) * rng.uniform(0.35, 0.7)
        flap = _poly(np.array([p, q, tip]), hole.shape)
        _blend(b.img, b.colour * rng.uniform(0.7, 0.95), flap * hole)
    b.params["defect_size"] = round(float(hole.sum() / (b.L * b.W)), 3)


def _open_flap(b: _Box) -> None:
    """One top flap open: the dark inside shows, the flap lies folded out beyond the hinge."""
    rng, k = b.rng, b.k
    side = int(rng.integers(2))  # 0: flap on the y0 half, 1: on the y1 half
    X, Y = b.grid()
    half_w = b.W / 2
    if not b.hard:
        open_angle = rng.uniform(110, 180)
        gap = half_w  # the whole flap is gone from the top
    else:
        open_angle = rng.uniform(14, 28)
        gap = half_w * (1 - math.cos(math.radians(open_angle))) + 3 * k
    if side == 0:
        hinge, seam_edge = b.y0, b.seam
        region = (Y >= seam_edge - gap) & (Y < seam_edge)
    else:
        hinge, seam_edge = b.y1, b.seam
        region = (Y >= seam_edge) & (Y < seam_edge + gap)
    region = region & (X >= b.x0 + 2.5 * k) & (X < b.x1 - 2.5 * k) & (b.alpha > 0.5)
    reg = cv2.GaussianBlur(region.astype(np.float32), (0, 0), 0.7 * k)
    # inside: dark, the far wall a bit lighter, contents in deep shadow
    dist_from_seam = np.abs(Y - seam_edge) / max(gap, 1)
    inside_tone = rng.uniform(0.2, 0.3) * (0.75 + 0.5 * dist_from_seam) * (1 + 0.08 * _smooth_noise(rng, *Y.shape, 16 * k))
    inside = _const(b.img.shape, b.colour) * _c3(inside_tone.astype(np.float32))
    _blend(b.img, inside, reg)
    if not b.hard:
        # end (minor) flaps folded half in: mid-dark trapezoids at both ends of the opening
        for end in (0, 1):
            ln = rng.uniform(0.12, 0.22) * b.L
            xa = b.x0 + 2.5 * k if end == 0 else b.x1 - 2.5 * k
            xb = xa + ln if end == 0 else xa - ln
            y_a, y_b = (seam_edge - gap, seam_edge) if side == 0 else (seam_edge, seam_edge + gap)
            pts = np.array([(xa, y_a + 2 * k), (xb, y_a + gap * 0.3), (xb, y_b - gap * 0.3), (xa, y_b - 2 * k)])
            _blend(b.img, b.colour * rng.uniform(0.45, 0.6), _poly(pts, Y.shape) * reg)
        # the flap itself outside the box, inner face up, foreshortened by its angle
        ext = half_w * abs(math.cos(math.radians(open_angle)))
        ext = max(ext, 0.3 * half_w)
        sgn = -1 if side == 0 else 1
        y_out = hinge + sgn * ext
        inset = rng.uniform(0, 4) * k
        pts = np.array([(b.x0, hinge), (b.x1, hinge), (b.x1 - inset, y_out), (b.x0 + inset, y_out)])
        fm = _poly(pts, Y.shape)
        tilt = 1.0 + rng.uniform(-0.12, 0.06)
        face = np.minimum(b.colour * 1.06 * tilt, 250)
        fm_only = fm * (1.0 - b.alpha)
        _blend(b.img, face, fm_only)
        b.alpha = np.maximum(b.alpha, fm)
        # a fold line at the hinge
        fl = np.zeros(Y.shape, np.uint8)
        cv2.line(fl, (int(b.x0), int(hinge)), (int(b.x1), int(hinge)), 255, max(1, int(2 * k)), cv2.LINE_AA)
        _shade(b.img, 1.0 - 0.3 * fl.astype(np.float32) / 255)
    else:
        # the lifted flap is tilted: a shade change over it
        flap_region = (Y < seam_edge - gap) & (Y >= hinge) if side == 0 else (Y >= seam_edge + gap) & (Y < hinge)
        _shade(b.img, np.where(flap_region & (b.alpha > 0.5), rng.uniform(0.9, 0.96), 1.0).astype(np.float32))
    b.params["flap_side"] = side
    b.params["open_angle"] = round(float(open_angle), 1)
    b.params["defect_size"] = round(float(gap / b.W), 3)


def _loose_tape(b: _Box, kind: str, tw: float, drng: np.random.Generator) -> None:
    """Tape stuck for part of the length; the rest has peeled off and swings out to one side."""
    tape_rng = b.rng
    b.rng = rng = drng
    k = b.k
    frac = _sev(b, (0.45, 0.65), (0.12, 0.2))
    ln = frac * b.L
    from_right = rng.random() < 0.5
    xp = b.x1 - ln if from_right else b.x0 + ln
    # the exposed seam and adhesive residue under the peeled part
    xa, xb = (xp, b.x1 - 1) if from_right else (b.x0 + 1, xp)
    res = _poly(np.array([(xa, b.seam - tw / 2), (xb, b.seam - tw / 2), (xb, b.seam + tw / 2), (xa, b.seam + tw / 2)]),
                b.alpha.shape)
    _shade(b.img, 1.0 - 0.07 * res)
    _seam(b, (6.0 if not b.hard else 2.0) * k, 0.2 if not b.hard else 0.35, xa, xb)
    # stuck part
    b.rng = tape_rng
    if from_right:
        _tape_strip(b, kind, tw, b.x0 - 1, xp, b.seam)
    else:
        _tape_strip(b, kind, tw, xp, b.x1 + 1, b.seam)
    b.rng = rng
    # loose part: a curling strip rotating away from the seam around the peel point
    phi = math.radians(_sev(b, (35, 60), (10, 20))) * (1 if rng.random() < 0.5 else -1)
    lift = rng.uniform(0.8, 0.95)  # foreshortening as it lifts off
    n = 16
    s = np.linspace(0, ln * lift, n)
    ang = phi * (s / max(s[-1], 1)) ** 0.7
    dirx = 1 if from_right else -1
    cxs = xp + dirx * np.cumsum(np.r_[0, np.diff(s)] * np.cos(ang))
    cys = b.seam + np.cumsum(np.r_[0, np.diff(s)] * np.sin(ang)) * dirx
    nx, ny = -np.sin(ang) * dirx, np.cos(ang) * dirx
    left = np.stack([cxs + nx * tw / 2, cys + ny * tw / 2], 1)
    right = np.stack([cxs - nx * tw / 2, cys - ny * tw / 2], 1)
    poly = np.concatenate([left, right[::-1]])
    tm = _poly(poly, b.alpha.shape)
    # its shadow on the box (tape is above the surface)
    off = int(round((6 if not b.hard else 3) * k))
    sh = cv2.GaussianBlur(np.roll(np.roll(tm, off, 0), off, 1), (0, 0), 2.0 * k)
    _shade(b.img, 1.0 - (0.5 if not b.hard else 0.3) * sh * b.alpha)
    colour, opacity = TAPES[kind]
    under = np.array(colour, np.float32) * rng.uniform(0.8, 0.9)  # the matt adhesive side shows
    opacity = max(opacity, 0.6)
    under_img = _const(b.img.shape, under)
    base_under = np.where(_c3(b.alpha) > 0.5, b.img, under_img)  # off the box it is opaque tape
    mix = base_under * (1 - opacity) + under_img * opacity
    _blend(b.img, mix, tm)
    gl = 1.0 + 0.12 * tm * np.clip(_smooth_noise(rng, *tm.shape, tw * 0.8), 0, 2)
    _shade(b.img, gl.astype(np.float32))
    b.alpha = np.maximum(b.alpha, tm)
    b.params["peeled_fraction"] = round(float(frac), 3)
    b.params["defect_size"] = round(float(frac), 3)


# ----------------------------------------------------------------------------------------- sprite
def render_box(rng: np.random.Generator, difficulty: str = "easy", defect: str | None = None,
               scale: float = 1.0, angle: float | None = None) -> Sprite:
    """Render one box (seen from above) as a sprite. ``defect`` is None for an OK box."""
    b = _draw_box(rng, difficulty, defect, scale)
    return _finish_sprite(b, _sample_angle(rng, b.hard) if angle is None else angle)


def _sample_angle(rng: np.random.Generator, hard: bool) -> float:
    spread = 12.0 if not hard else 22.0
    return float(rng.uniform(-spread, spread) + (90.0 if rng.random() < 0.2 else 0.0))


def _draw_box(rng: np.random.Generator, difficulty: str, defect: str | None, scale: float) -> _Box:
    """Draw a box in its own unrotated frame."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    if defect is not None and defect not in DEFECTS:
        raise ValueError(f"unknown defect {defect!r}; expected one of {DEFECTS}")
    b = _new_box(rng, difficulty, scale, defect)
    # one generator per part, so the main generator is used the same way with or without a defect and
    # a box drawn with a defect is the same box as the one drawn without
    parts = ("paper", "prints", "label", "tape", "defect")
    sub = dict(zip(parts, (np.random.default_rng(int(x)) for x in rng.integers(0, 2**62, len(parts))), strict=True))
    k = b.k
    b.rng = sub["defect"]
    crush = _dent(b) if defect == "dent" else None
    outline = _outline(b, crush)
    mask = _poly(outline, b.alpha.shape)
    b.alpha = mask.copy()
    b.rng = sub["paper"]
    _cardboard(b)
    _edges(b, mask)
    hard = b.hard
    tape_kinds = ["brown", "tan", "white", "printed"] + (["clear"] if hard else [])
    tape_probs = np.array([0.4, 0.25, 0.2, 0.15] + ([0.25] if hard else []), np.float64)
    tape = tape_kinds[int(rng.choice(len(tape_kinds), p=tape_probs / tape_probs.sum()))]
    tw = rng.uniform(0.13, 0.19) * b.W
    b.params.update({"tape": tape, "tape_width": round(tw, 1)})
    # closed flaps meet at a thin seam (under the tape)
    _seam(b, rng.uniform(0.8, 1.6) * k, 0.55)
    cross = rng.random() < (0.15 if not hard else 0.3)  # H-taping: strips across both ends
    b.params["cross_tape"] = bool(cross)
    b.rng = sub["prints"]
    _prints(b)
    b.rng = sub["label"]
    _shipping_label(b)
    if hard:
        _clutter(b)
    b.rng = sub["defect"]
    if defect == "water_stain":
        _water_stain(b)
    # tape (the tape's own details come from the tape generator, the defect's from the defect's)
    b.rng = sub["tape"]
    if defect == "missing_tape":
        b.rng = sub["defect"]
        gap = _sev(b, (6.5, 10.0), (1.5, 3.0)) * k
        _seam(b, gap, 0.15 if not hard else 0.45)
        # unheld flaps bow up a little along the seam
        X, Y = b.grid()
        near = np.exp(-np.abs(Y - b.seam) / (8 * k)) * b.alpha
        _shade(b.img, (1.0 - (0.18 if not hard else 0.06) * near).astype(np.float32))
        b.params["defect_size"] = round(float(gap / b.W), 3)
        if hard and cross:
            for xe in (b.x0, b.x1 - tw):
                _tape_cross(b, tape, tw, xe)
    elif defect == "loose_tape":
        _loose_tape(b, tape, tw, sub["defect"])
    elif defect == "open_flap":
        # the tape was cut along the seam: each flap keeps its half
        _tape_strip(b, tape, tw, b.x0 - 1, b.x1 + 1, b.seam)
        b.rng = sub["defect"]
        _open_flap(b)
    else:
        _tape_strip(b, tape, tw, b.x0 - 1, b.x1 + 1, b.seam)
        if cross:
            for xe in (b.x0, b.x1 - tw):
                _tape_cross(b, tape, tw, xe)
    b.rng = sub["defect"]
    if defect == "dent":
        if crush is not None:
            _crush_shading(b, crush)
        else:
            _dent_top(b)
    if defect == "tear":
        _tear(b)
    b.img *= _c3((b.alpha > 0).astype(np.float32))
    b.params["defect"] = defect
    return b


def _dent_top(b: _Box) -> None:
    rng = b.rng
    r = _sev(b, (0.27, 0.35), (0.09, 0.13)) * min(b.L, b.W)
    cx = rng.uniform(b.x0 + r * 1.1, b.x1 - r * 1.1)
    cy = rng.uniform(b.y0 + r * 1.1, b.y1 - r * 1.1)
    X, Y = b.grid()
    ex = rng.uniform(0.7, 1.4)
    dx, dy = (X - cx) / (r * ex), (Y - cy) / (r / ex)
    rr = np.sqrt(dx**2 + dy**2)
    inside = np.clip(1.0 - rr, 0, 1)
    bowl = np.sin(np.clip(rr, 0, 1) * math.pi)
    facing = -(dx + dy) / np.maximum(rr, 1e-3) / math.sqrt(2)
    amp = _sev(b, (0.7, 0.85), (0.15, 0.25))
    slope = bowl * facing * (rr < 1)
    gain = 1.0 + np.where(slope > 0, 0.3 * amp * slope, amp * slope) - 0.15 * amp * inside
    _shade(b.img, np.where(b.alpha > 0, gain, 1.0).astype(np.float32))
    _creases(b, cx, cy, r, amp, radial=True)
    b.params["dent_kind"] = "top"
    b.params["defect_size"] = round(float(r / min(b.L, b.W)), 3)


def _tape_cross(b: _Box, kind: str, tw: float, xe: float) -> None:
    """A short strip across one end of the box (H-taping), drawn as a rotated copy."""
    pts = np.array([(xe, b.y0 - 1), (xe + tw, b.y0 - 1), (xe + tw, b.y1 + 1), (xe, b.y1 + 1)])
    m = _poly(pts, b.alpha.shape) * (b.alpha > 0.5)
    colour, opacity = TAPES[kind]
    _blend(b.img, np.array(colour, np.float32), m * opacity * 0.95)


def _finish_sprite(b: _Box, angle: float) -> Sprite:
    """Rotate the drawn box by ``angle`` degrees and add its drop shadow."""
    k = b.k
    ys, xs = _bbox(b.alpha > 0.0)
    m = 2
    ys, xs = slice(max(0, ys.start - m), ys.stop + m), slice(max(0, xs.start - m), xs.stop + m)
    img, alpha = b.img[ys, xs], b.alpha[ys, xs]
    h, w = alpha.shape
    cx, cy = (b.x0 + b.x1) / 2 - xs.start, (b.y0 + b.y1) / 2 - ys.start
    # output canvas: the rotated content around the box centre plus room for the shadow
    M = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    corners = np.array([(0, 0, 1), (w, 0, 1), (w, h, 1), (0, h, 1)], np.float64) @ M.T
    sh_off = np.array([5.0, 6.0]) * k
    blur = 4.5 * k
    lo = np.floor(corners.min(0) - 3 * blur).astype(int)
    hi = np.ceil(corners.max(0) + sh_off + 3 * blur).astype(int)
    M[:, 2] -= lo
    ow, oh = int(hi[0] - lo[0]), int(hi[1] - lo[1])
    rgba = cv2.merge([*cv2.split(img * _c3(alpha)), alpha])  # premultiplied, so edges do not blend with black
    rot = cv2.warpAffine(rgba, M, (ow, oh), flags=cv2.INTER_LINEAR, borderValue=0)
    a_out = np.clip(rot[..., 3], 0, 1)
    col = np.clip(rot[..., :3] / _c3(np.maximum(a_out, 1e-3)), 0, 255)
    Ms = np.float32([[1, 0, sh_off[0]], [0, 1, sh_off[1]]])
    sh = cv2.GaussianBlur(cv2.warpAffine(a_out, Ms, (ow, oh)), (0, 0), blur) * 0.42
    y0, y1 = _bbox((a_out > 0.02) | (sh > 0.02))
    ccx, ccy = M[:, :2] @ np.array([cx, cy]) + M[:, 2]
    sp = Sprite(np.ascontiguousarray(col[y0, y1]), np.ascontiguousarray(a_out[y0, y1]),
                np.ascontiguousarray(sh[y0, y1]), int(round(ccx - y1.start)), int(round(ccy - y0.start)),
                dict(b.params))
    sp.params["angle"] = round(float(angle), 1)
    return sp


def make_box(rng: np.random.Generator, difficulty: str, defect: str | None, scale: float = 1.0) -> Sprite:
    """A box sprite that fits the ROI: its extent, shadow included, is at most MAX_EXT_X x MAX_EXT_Y.

    Too wide a pose is retried with a smaller rotation before the box is drawn anew."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    hard = difficulty == "hard"
    sp = None
    for _ in range(6):
        b = _draw_box(rng, difficulty, defect, scale)
        angle = _sample_angle(rng, hard)
        for attempt in range(3):
            sp = _finish_sprite(b, angle)
            x0, y0, x1, y1 = sp.extent
            if x1 - x0 <= MAX_EXT_X * scale and y1 - y0 <= MAX_EXT_Y * scale:
                return sp
            angle = (angle - 90.0 * round(angle / 90.0) if attempt == 0 else angle) * 0.4  # along the belt, less tilt
    assert sp is not None
    return sp


# ------------------------------------------------------------------------------------------ scene
@dataclass
class SceneParams:
    """Camera and belt conditions (per dataset image; per video)."""

    belt_bgr: tuple[float, float, float]
    belt_contrast: float
    light_level: float
    light_grad: float
    light_dir: float
    vignette: float
    white_balance: tuple[float, float, float]
    defocus: float
    motion: int
    noise: float
    jpeg_quality: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (round(v, 3) if isinstance(v, float) else [round(x, 3) for x in v] if isinstance(v, tuple) else v)
                for k, v in d.items()}


BELTS = ((52, 54, 56), (40, 42, 44), (58, 72, 50), (70, 62, 55), (66, 66, 66))


def sample_scene(rng: np.random.Generator, difficulty: str) -> SceneParams:
    hard = difficulty == "hard"
    belt = np.array(BELTS[int(rng.integers(len(BELTS)))], np.float32) * rng.uniform(0.85, 1.15)
    return SceneParams(
        belt_bgr=tuple(float(c) for c in belt),
        belt_contrast=float(rng.uniform(1.2, 2.2)),
        light_level=float(rng.uniform(0.88, 1.1) if not hard else rng.uniform(0.75, 1.18)),
        light_grad=float(rng.uniform(0.0, 0.14) if not hard else rng.uniform(0.05, 0.25)),
        light_dir=float(rng.uniform(0, 2 * math.pi)),
        vignette=float(rng.uniform(0.0, 0.12) if not hard else rng.uniform(0.05, 0.22)),
        white_balance=tuple(float(x) for x in (rng.uniform(0.93, 1.07), 1.0, rng.uniform(0.93, 1.07))),
        defocus=float(rng.uniform(0.0, 0.9) if not hard else rng.uniform(0.3, 1.5)),
        motion=int(rng.integers(1, 3) if not hard else rng.integers(1, 5)),
        noise=float(rng.uniform(1.0, 2.5) if not hard else rng.uniform(1.5, 4.5)),
        jpeg_quality=int(rng.integers(75, 96) if not hard else rng.integers(55, 92)),
    )


def _belt_pattern(rng: np.random.Generator, h: int, period: int) -> np.ndarray:
    """Zero-mean belt texture (float32, h x period), periodic along x: wear blotches, grain, streaks, a splice."""
    blot = _periodic_noise(rng, h, period, 14.0)
    grain = _periodic_noise(rng, h, period, 0.7)
    streak = _smooth_noise(rng, h, 1, 3.0)
    p = 0.9 * blot + 0.7 * grain + 0.4 * streak
    p[:, : max(2, period // 400)] -= 2.0  # the splice where the belt was joined
    return p.astype(np.float32)


@dataclass
class Placed:
    """A sprite ready to be composited by one scene (blurred like the scene's camera)."""

    keep: np.ndarray  # (h, w, 3) what is left of the background
    premul: np.ndarray  # (h, w, 3) colour * alpha
    cx: int
    cy: int


class Scene:
    """Renders ``window`` (x, y, w, h; default the whole frame) of frames of ``layout``: the belt texture
    shifted by the belt position, static rails, boxes with their shadows, then light and camera effects.

    Camera blur (defocus, motion) is applied to the belt, rails and each box before they are composited,
    which looks the same as blurring the frame (blur is linear) and is much cheaper per frame."""

    MARGIN = 12  # extra pixels around a window and the belt strip, so blur at their borders sees real pixels

    def __init__(self, layout: Layout, params: SceneParams, rng: np.random.Generator,
                 pattern: np.ndarray | None = None, window: tuple[int, int, int, int] | None = None):
        self.layout, self.p = layout, params
        w, h = layout.width, layout.height
        if pattern is None:
            pattern = _belt_pattern(rng, layout.belt_bottom - layout.belt_top, int(max(w, 1024)))
        self.pattern, self.period = pattern, pattern.shape[1]
        self.window = window or (0, 0, w, h)
        wx, wy, ww, wh = self.window
        self.ax, self.ay, self.bx, self.by = wx, wy, wx + ww, wy + wh
        k = max(1, int(round(params.motion * layout.scale)))
        self.motion_kernel = np.full((1, k), 1.0 / k, np.float32) if k > 1 else None
        self.defocus = params.defocus * layout.scale if params.defocus > 0.25 else 0.0
        # static background: rails with a highlight and bolts
        metal = np.array([150, 150, 146], np.float32) * rng.uniform(0.8, 1.05)
        bolt_x0 = int(rng.integers(10, 60))
        m = self.MARGIN
        if self.ay - m >= layout.belt_top and self.by + m <= layout.belt_bottom:
            # a window well inside the belt (the ROI of a dataset image): no rail in view, nothing to draw
            self.bg = np.zeros((self.by - self.ay, self.bx - self.ax, 3), np.float32)
        else:
            bg = np.zeros((h, w, 3), np.float32)
            for y0, y1 in ((0, layout.belt_top), (layout.belt_bottom, h)):
                if y1 <= y0:
                    continue
                prof = (0.85 + 0.3 * np.sin(np.linspace(0, 1, y1 - y0, dtype=np.float32) * math.pi))[:, None]
                bg[y0:y1] = cv2.merge([np.repeat(prof * float(c), w, 1) for c in metal])
                for x in range(bolt_x0, w, 96):
                    cv2.circle(bg, (x, (y0 + y1) // 2), max(1, (y1 - y0) // 6), (90, 90, 90), -1, cv2.LINE_AA)
            self.bg = np.ascontiguousarray(self.blur(bg)[self.ay : self.by, self.ax : self.bx])
        # lighting: overall level, a linear gradient, vignetting, white balance (in frame coordinates)
        u = ((np.arange(self.ax, self.bx, dtype=np.float32) - w / 2) / (w / 2))[None, :]
        v = ((np.arange(self.ay, self.by, dtype=np.float32) - h / 2) / (h / 2))[:, None]
        g = params.light_level * (1 + params.light_grad * (u * math.cos(params.light_dir) + v * math.sin(params.light_dir)))
        g = g * (1 - params.vignette * (u**2 + v**2) / 2)
        self.gain = cv2.merge([(g * float(c)).astype(np.float32) for c in params.white_balance])
        self.belt_rows = (max(self.ay, layout.belt_top), min(self.by, layout.belt_bottom))
        self._strip: np.ndarray | None = None
        if window is None:  # a video: colour and blur the whole periodic belt once, then slice it per frame
            self._strip = self._belt(np.arange(-self.MARGIN, self.period + w + self.MARGIN))[
                :, self.MARGIN : -self.MARGIN]

    def blur(self, img: np.ndarray, border: int = cv2.BORDER_REFLECT) -> np.ndarray:
        if self.defocus:
            img = cv2.GaussianBlur(img, (0, 0), self.defocus, borderType=border)
        if self.motion_kernel is not None:
            img = cv2.filter2D(img, -1, self.motion_kernel, borderType=border)
        return img

    def _belt(self, cols: np.ndarray) -> np.ndarray:
        """Coloured, blurred belt rows of the window for texture columns ``cols`` (taken modulo the period)."""
        L = self.layout
        t0, t1 = self.belt_rows
        m = self.MARGIN
        r0, r1 = max(0, t0 - L.belt_top - m), min(L.belt_bottom - L.belt_top, t1 - L.belt_top + m)
        tex = np.take(self.pattern[r0:r1], cols % self.period, axis=1) * self.p.belt_contrast
        col = self.blur(cv2.merge([tex + float(c) for c in self.p.belt_bgr]))
        off = t0 - L.belt_top - r0
        return col[off : off + (t1 - t0)]

    def prepare(self, sp: Sprite) -> Placed:
        """Blur a sprite the way this scene's camera blurs."""
        if not self.defocus and self.motion_kernel is None:
            return Placed(sp.keep, sp.premul, sp.cx, sp.cy)
        m = 6
        keep = cv2.copyMakeBorder(sp.keep, m, m, m, m, cv2.BORDER_CONSTANT, value=(1.0, 1.0, 1.0))
        premul = cv2.copyMakeBorder(sp.premul, m, m, m, m, cv2.BORDER_CONSTANT, value=(0.0, 0.0, 0.0))
        return Placed(self.blur(keep, cv2.BORDER_REPLICATE), self.blur(premul, cv2.BORDER_REPLICATE),
                      sp.cx + m, sp.cy + m)

    def render(self, belt_pos: int, boxes: list[tuple[Placed, int, int]], noise: np.ndarray) -> np.ndarray:
        """The window as uint8 BGR. ``boxes`` are (prepared sprite, centre x, centre y) in frame
        coordinates; ``noise`` (sensor noise, float32) is at least the window's size."""
        ax, ay = self.ax, self.ay
        img = self.bg.copy()
        t0, t1 = self.belt_rows
        if t1 > t0:
            if self._strip is not None:
                start = (ax - belt_pos) % self.period
                img[t0 - ay : t1 - ay] = self._strip[:, start : start + (self.bx - ax)]
            else:
                img[t0 - ay : t1 - ay] = self._belt(np.arange(ax - self.MARGIN, self.bx + self.MARGIN) - belt_pos)[
                    :, self.MARGIN : -self.MARGIN]
        for pl, cx, cy in boxes:
            x0, y0 = cx - pl.cx - ax, cy - pl.cy - ay
            sx0, sy0 = max(0, -x0), max(0, -y0)
            ex, ey = min(pl.keep.shape[1], img.shape[1] - x0), min(pl.keep.shape[0], img.shape[0] - y0)
            if ex <= sx0 or ey <= sy0:
                continue
            reg = img[y0 + sy0 : y0 + ey, x0 + sx0 : x0 + ex]
            reg *= pl.keep[sy0:ey, sx0:ex]
            reg += pl.premul[sy0:ey, sx0:ex]
        img *= self.gain
        img += noise[: img.shape[0], : img.shape[1]]
        return cv2.convertScaleAbs(img)  # rounds and saturates to uint8 (values are never negative here)


class _NoiseBank:
    """Pre-drawn sensor noise: a random slice of one of a few noise fields per frame (fast, deterministic)."""

    def __init__(self, rng: np.random.Generator, h: int, w: int, sigma: float = 1.0, n: int = 8, margin: int = 16):
        self.fields = [(rng.standard_normal((h + margin, w + margin, 3), dtype=np.float32) * sigma) for _ in range(n)]
        self.h, self.w, self.margin, self.rng = h, w, margin, rng

    def draw(self, rng: np.random.Generator | None = None) -> np.ndarray:
        rng = rng or self.rng
        f = self.fields[int(rng.integers(len(self.fields)))]
        oy, ox = (int(x) for x in rng.integers(0, self.margin, 2))
        return f[oy : oy + self.h, ox : ox + self.w]


# ---------------------------------------------------------------------------------------- dataset
class _OneCvThread:
    """OpenCV's thread pool costs more than it gains on these small images; use one thread meanwhile."""

    def __enter__(self) -> None:
        self.n = cv2.getNumThreads()
        cv2.setNumThreads(1)

    def __exit__(self, *exc: object) -> None:
        cv2.setNumThreads(self.n)


def _child(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *keys]))


@dataclass
class _DatasetKit:
    """Shared by the images of one dataset: a few belt textures and unit sensor-noise fields (seeded)."""

    patterns: list[np.ndarray]
    noise: _NoiseBank

    @classmethod
    def make(cls, seed: int) -> _DatasetKit:
        layout = layout_for(DATASET_FRAME)
        rng = _child(seed, 99)
        patterns = [_belt_pattern(rng, layout.belt_bottom - layout.belt_top, 1024) for _ in range(6)]
        return cls(patterns, _NoiseBank(rng, layout.roi_side, layout.roi_side, 1.0, n=6))


def render_sample(rng: np.random.Generator, defect: str | None, difficulty: str = "easy",
                  kit: _DatasetKit | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """One dataset image at full ROI resolution (BGR uint8, the ROI square) and its parameters."""
    kit = kit or _DatasetKit.make(0)
    layout = layout_for(DATASET_FRAME)
    params = sample_scene(rng, difficulty)
    pattern = kit.patterns[int(rng.integers(len(kit.patterns)))]
    s = layout.roi_side
    scene = Scene(layout, params, rng, pattern, window=(layout.roi_x, layout.roi_y, s, s))
    sp = make_box(rng, difficulty, defect, layout.scale)
    x0, y0, x1, y1 = sp.extent
    # jitter the box anywhere it stays entirely inside the ROI (as while it crosses the ROI in the video)
    fx = max(0.0, (s - (x1 - x0)) / 2 - 2)
    fy = max(0.0, min((s - (y1 - y0)) / 2 - 2, 24 * layout.scale))
    off_x = int(round(rng.uniform(-fx, fx)))
    off_y = int(round(rng.uniform(-fy, fy)))
    cx = layout.roi_x + s // 2 - (x0 + x1) // 2 + off_x
    cy = layout.roi_y + s // 2 - (y0 + y1) // 2 + off_y
    noise = kit.noise.draw(rng) * params.noise
    belt_pos = int(rng.integers(0, scene.period))
    img = scene.render(belt_pos, [(scene.prepare(sp), cx, cy)], noise)
    info = {"box": sp.params, "scene": params.to_dict(), "offset": [off_x, off_y]}
    return img, info


def make_dataset(out: Path, n_per_class: int = 300, size: int = 160, seed: int = 0,
                 difficulty: str = "easy", progress: bool = True) -> dict:
    """Write ``out/ok/*.jpg``, ``out/defective/*.jpg`` and ``out/manifest.json``; return a summary.

    Defective images cycle through ``DEFECTS`` so every defect type is equally represented.
    Each image is the ROI square of a virtual frame, resized to ``size`` x ``size``.
    """
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    if n_per_class < 1:
        raise ValueError("n_per_class must be >= 1")
    if size < 16:
        raise ValueError("size must be >= 16")
    out = Path(out)
    t0 = time.time()
    for c in CLASSES:
        (out / c).mkdir(parents=True, exist_ok=True)
    # images of an earlier run into the same folder (our own names only) are replaced, not mixed in
    earlier = {p for c in CLASSES for p in (out / c).glob(f"{'ok' if c == 'ok' else 'defective'}_*.jpg")}
    kit = _DatasetKit.make(seed)
    items: list[dict[str, Any]] = []
    total = 2 * n_per_class
    step = max(1, total // 10)
    done = 0
    with _OneCvThread():
        for ci, label in enumerate(("ok", "defective")):
            for i in range(n_per_class):
                rng = _child(seed, ci, i)
                defect = None if label == "ok" else DEFECTS[i % len(DEFECTS)]
                img, info = render_sample(rng, defect, difficulty, kit)
                if img.shape[0] != size:
                    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
                name = f"{label}_{i:05d}.jpg" if defect is None else f"{label}_{i:05d}_{defect}.jpg"
                q = int(info["scene"]["jpeg_quality"])
                path = out / label / name
                if not cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, q]):
                    raise OSError(f"could not write {path}")
                items.append({"file": f"{label}/{name}", "label": label, "defect": defect, **info})
                done += 1
                if progress and (done % step == 0 or done == total):
                    log.info("synth dataset: %d/%d images (%.0f s)", done, total, time.time() - t0)
    stale = earlier - {out / it["file"] for it in items}
    for p in stale:
        p.unlink()
    if stale:
        log.warning("removed %d images of an earlier run from %s", len(stale), out)
    counts = {c: sum(1 for it in items if it["label"] == c) for c in CLASSES}
    per_defect = {d: sum(1 for it in items if it["defect"] == d) for d in DEFECTS}
    summary = {"out": str(out), "n_images": len(items), "counts": counts, "defects": per_defect, "size": size,
               "seed": seed, "difficulty": difficulty, "classes": list(CLASSES), "positive_class": "defective",
               "seconds": round(time.time() - t0, 2)}
    manifest = {k: v for k, v in summary.items() if k not in ("seconds", "out")}
    manifest["images"] = items
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    log.info("wrote %d images (%s) to %s in %.1f s", len(items), counts, out, summary["seconds"])
    return summary


# ------------------------------------------------------------------------------------------ video
def _open_writer(path: Path, fps: int, size: tuple[int, int]) -> cv2.VideoWriter:
    fourcc = "MJPG" if path.suffix.lower() == ".avi" else "mp4v"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), size)
    if not vw.isOpened():
        raise OSError(f"OpenCV cannot write a {fourcc} video to {path}")
    return vw


@dataclass
class VideoPlan:
    """Everything about a conveyor video but its pixels: layout, scene, box tracks and ground truth."""

    layout: Layout
    scene: Scene
    tracks: list[dict[str, Any]]  # per box: id, start_x (centre x at belt position 0), cy, ext, defect, frames
    gt: dict[str, Any]
    seed: int
    difficulty: str
    noise_seed: int = 9

    @property
    def frame_count(self) -> int:
        return int(self.gt["frame_count"])


def _check_video_args(n_boxes: int, defect_rate: float, fps: int, difficulty: str) -> None:
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    if n_boxes < 1:
        raise ValueError("n_boxes must be >= 1")
    if not 0.0 <= defect_rate <= 1.0:
        raise ValueError(f"defect_rate must be in [0, 1], got {defect_rate}")
    if fps < 1:
        raise ValueError("fps must be >= 1")


def _video_box(seed: int, i: int, difficulty: str, defect: str | None, scale: float) -> tuple[Sprite, np.random.Generator]:
    """Box ``i`` of a video: the same sprite every time it is asked for (drawn from its own seed)."""
    brng = _child(seed, 8, i)
    return make_box(brng, difficulty, defect, scale), brng


def plan_video(n_boxes: int = 16, defect_rate: float = 0.4, seed: int = 0, fps: int = 15,
               frame_size: tuple[int, int] = (640, 360), difficulty: str = "easy") -> VideoPlan:
    """Plan a conveyor video: which boxes (exactly ``round(n_boxes * defect_rate)`` defective, at random
    places, defect types cycling in random order), where they ride, and the ground truth."""
    _check_video_args(n_boxes, defect_rate, fps, difficulty)
    layout = layout_for(frame_size)
    rng = _child(seed, 7)
    params = sample_scene(rng, difficulty)
    scene = Scene(layout, params, rng)
    speed = BELT_SPEED * layout.scale / fps  # px per frame
    n_def = int(round(n_boxes * defect_rate))
    defective = np.zeros(n_boxes, bool)
    defective[rng.choice(n_boxes, n_def, replace=False)] = True
    order = rng.permutation(len(DEFECTS))  # every defect type appears before any repeats
    kinds = [DEFECTS[int(order[j % len(DEFECTS)])] for j in range(n_def)]
    s, rx, ry = layout.roi_side, layout.roi_x, layout.roi_y
    tracks: list[dict[str, Any]] = []
    ki = 0
    # box i's centre is at x = start_x + belt position; the belt position is round(speed * t)
    prev_left = None
    for i in range(n_boxes):
        defect = kinds[ki] if defective[i] else None
        ki += int(defective[i])
        sp, brng = _video_box(seed, i, difficulty, defect, layout.scale)
        x0, y0, x1, y1 = sp.extent
        fy = max(0.0, min((s - (y1 - y0)) / 2 - 2, 24 * layout.scale))
        cy = ry + s // 2 - (y0 + y1) // 2 + int(round(brng.uniform(-fy, fy)))
        if prev_left is None:
            # the first box reaches the ROI after LEAD_FRAMES of empty belt
            start_x = rx - x1 - int(round(speed * LEAD_FRAMES)) + 1
        else:
            # empty belt between boxes: more than the ROI width, so one box at a time and >= 6 empty frames
            gap = s + speed * brng.uniform(6, 20)
            start_x = int(math.floor(prev_left - gap - x1))
        prev_left = start_x + x0
        tracks.append({"id": i, "start_x": start_x, "cy": cy, "ext": (x0, y0, x1, y1), "defect": defect,
                       "params": sp.params})
    last = tracks[-1]
    t = 0
    while last["start_x"] + last["ext"][0] + int(round(speed * t)) < rx + s:  # until the last box has left
        t += 1
    n_frames = t + TAIL_FRAMES
    pos = np.round(speed * np.arange(n_frames)).astype(np.int64)
    boxes_gt = []
    for tr in tracks:
        x0, y0, x1, y1 = tr["ext"]
        left, right = tr["start_x"] + x0 + pos, tr["start_x"] + x1 + pos
        top, bottom = tr["cy"] + y0, tr["cy"] + y1
        overlap = (right > rx) & (left < rx + s)
        inside = (left >= rx) & (right <= rx + s) & (top >= ry) & (bottom <= ry + s)
        centre = tr["start_x"] + pos >= rx + s / 2
        ov, ins = np.nonzero(overlap)[0], np.nonzero(inside)[0]
        boxes_gt.append({
            "id": tr["id"],
            "defective": tr["defect"] is not None,
            "defect": tr["defect"],
            "enter_frame": int(ov[0]),
            "exit_frame": int(ov[-1]),
            "centre_frame": int(np.argmax(centre)),
            "full_start": int(ins[0]) if len(ins) else None,
            "full_end": int(ins[-1]) if len(ins) else None,
            "params": tr["params"],
        })
        on_screen = np.nonzero((right > 0) & (left < layout.width))[0]
        tr["frames"] = (int(on_screen[0]), int(on_screen[-1]))
    gt = {"fps": fps, "frame_count": int(n_frames), "frame_size": [layout.width, layout.height],
          "roi": layout.roi, "seed": seed, "difficulty": difficulty, "belt_speed_px_per_frame": round(speed, 3),
          "scene": params.to_dict(), "boxes": boxes_gt}
    return VideoPlan(layout, scene, tracks, gt, seed, difficulty)


def video_frames(plan: VideoPlan) -> Iterator[np.ndarray]:
    """The frames of a planned video (BGR uint8), rendered one at a time; boxes are drawn when they come
    into view and dropped when they have left, so memory does not grow with the number of boxes."""
    speed = plan.gt["belt_speed_px_per_frame"]
    layout, scene = plan.layout, plan.scene
    noise = _NoiseBank(_child(plan.seed, plan.noise_seed), layout.height, layout.width, scene.p.noise)
    live: dict[int, Placed] = {}
    for t in range(plan.frame_count):
        pos = int(round(speed * t))
        on = []
        for tr in plan.tracks:
            f0, f1 = tr["frames"]
            if f0 <= t <= f1:
                if tr["id"] not in live:
                    sp, _ = _video_box(plan.seed, tr["id"], plan.difficulty, tr["defect"], layout.scale)
                    live[tr["id"]] = scene.prepare(sp)
                on.append((live[tr["id"]], tr["start_x"] + pos, tr["cy"]))
            elif t > f1:
                live.pop(tr["id"], None)
        yield scene.render(pos, on, noise.draw())


def make_video(path: Path, n_boxes: int = 16, defect_rate: float = 0.4, seed: int = 0, fps: int = 15,
               frame_size: tuple[int, int] = (640, 360), difficulty: str = "easy") -> dict:
    """Write a conveyor video (mp4v .mp4, or MJPG for .avi) and its ground truth at ``path.with_suffix('.json')``.

    Boxes ride the belt left to right at constant speed through a square ROI in the middle of the
    frame, one at a time, with empty belt between them. Returns the ground truth dict."""
    path = Path(path)
    t0 = time.time()
    plan = plan_video(n_boxes, defect_rate, seed, fps, frame_size, difficulty)
    gt = {"video": path.name, **plan.gt}
    n = plan.frame_count
    path.parent.mkdir(parents=True, exist_ok=True)
    with _OneCvThread():
        vw = _open_writer(path, fps, (plan.layout.width, plan.layout.height))
        try:
            step = max(1, n // 4)
            for t, frame in enumerate(video_frames(plan)):
                vw.write(frame)
                if (t + 1) % step == 0 and t + 1 < n:
                    log.info("synth video: %d/%d frames (%.0f s)", t + 1, n, time.time() - t0)
        finally:
            vw.release()
    gt_path = path.with_suffix(".json")
    gt_path.write_text(json.dumps(gt, indent=1))
    n_def = sum(b["defective"] for b in gt["boxes"])
    log.info("wrote %s (%d frames, %d boxes, %d defective) and %s in %.1f s", path, n, len(gt["boxes"]), n_def,
             gt_path.name, time.time() - t0)
    return gt


# ------------------------------------------------------------------------------------ contact sheet
def contact_sheet(images: list[np.ndarray], path: Path, cols: int = 8, labels: list[str] | None = None) -> None:
    """Tile ``images`` (BGR uint8, any sizes; resized to the first one's size) into a PNG, with captions."""
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    if labels is not None and len(labels) != len(images):
        raise ValueError("labels must have one entry per image")
    th, tw = images[0].shape[:2]
    cols = max(1, min(cols, len(images)))
    rows = int(math.ceil(len(images) / cols))
    cap = 16 if labels else 0
    pad = 4
    sheet = np.full((rows * (th + cap + pad) + pad, cols * (tw + pad) + pad, 3), 255, np.uint8)
    scale = max(0.3, min(0.45, tw / 300))
    for i, im in enumerate(images):
        if im.ndim == 2:
            im = cv2.cvtColor(im, cv2.COLOR_GRAY2BGR)
        if im.shape[:2] != (th, tw):
            im = cv2.resize(im, (tw, th), interpolation=cv2.INTER_AREA)
        r, c = divmod(i, cols)
        y, x = pad + r * (th + cap + pad), pad + c * (tw + pad)
        sheet[y : y + th, x : x + tw] = im
        if labels:
            cv2.putText(sheet, str(labels[i])[:40], (x + 2, y + th + 12), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1,
                        cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), sheet):
        raise OSError(f"could not write {path}")


def dataset_sheet(out: Path, path: Path, per_row: int = 6) -> None:
    """Contact sheet of a written dataset: a row of OK images, then one row per defect type, labelled."""
    out = Path(out)
    man = json.loads((out / "manifest.json").read_text())
    items = [it for it in man["images"] if it["label"] == "ok"][:per_row]
    for d in DEFECTS:
        items += [it for it in man["images"] if it["defect"] == d][:per_row]
    imgs = [cv2.imread(str(out / it["file"])) for it in items]
    labels = ["ok" if it["defect"] is None else it["defect"] for it in items]
    contact_sheet(imgs, path, cols=per_row, labels=labels)


def video_sheet(video: Path, path: Path, width: int = 320) -> None:
    """Contact sheet of frames of a video with the ROI drawn (from its ground truth JSON): the first box
    entering, centred and leaving the ROI, the empty belt after it, then the next boxes centred."""
    video = Path(video)
    gt = json.loads(video.with_suffix(".json").read_text())
    roi, boxes = gt["roi"], gt["boxes"]
    b0 = boxes[0]
    want = [b0["enter_frame"] + 8, b0["centre_frame"], b0["exit_frame"] - 8]
    want.append((b0["exit_frame"] + boxes[1]["enter_frame"]) // 2 if len(boxes) > 1 else b0["exit_frame"] + 1)
    want += [b["centre_frame"] for b in boxes[1:5]]
    want = sorted(set(min(max(0, t), gt["frame_count"] - 1) for t in want))
    cap = cv2.VideoCapture(str(video))
    frames, labels = [], []
    t = 0
    while t <= want[-1]:
        ok, fr = cap.read()
        if not ok:
            break
        if t in want:
            cv2.rectangle(fr, (roi["x"], roi["y"]), (roi["x"] + roi["width"], roi["y"] + roi["height"]),
                          (0, 255, 255), 2)
            inside = [b for b in boxes if b["enter_frame"] <= t <= b["exit_frame"]]
            tag = f"frame {t}: " + (f"box {inside[0]['id']} {inside[0]['defect'] or 'ok'}" if inside else "empty ROI")
            h = int(round(fr.shape[0] * width / fr.shape[1]))
            frames.append(cv2.resize(fr, (width, h), interpolation=cv2.INTER_AREA))
            labels.append(tag)
        t += 1
    cap.release()
    contact_sheet(frames, path, cols=4, labels=labels)


# ---------------------------------------------------------------------------------------------- CLI
HELP = """\
Generate synthetic training data: cardboard boxes on a conveyor belt seen from above, rendered with
numpy + OpenCV and domain-randomised (box size, rotation, cardboard colour, tape, printed marks and
shipping labels, lighting gradient, white balance, blur, sensor noise, belt texture).

Writes DIR/ok/*.jpg and DIR/defective/*.jpg (one folder per class, ready for `boxinspect train DIR`)
and DIR/manifest.json (per image: file, label, defect type, rendering parameters). Defective images
show one of: dent, tear, open_flap, water_stain, missing_tape, loose_tape (equal shares).
Each image is the camera's region of interest (ROI) with a box in it, the same view the daemon crops
from the conveyor video, so a model trained here works on the video.

--video also writes DIR/conveyor.mp4: boxes riding the belt left to right through a square ROI, one at
a time, and DIR/conveyor.json with the ground truth (ROI, and per box: defect, the frames where it enters,
is fully inside, crosses the centre of and leaves the ROI). Same seed, same output.
"""


EXAMPLES = """\
examples:
  boxinspect synth --out data/synth                                # 300 + 300 images, 160 px
  boxinspect synth --out data/synth --video --contact-sheet        # + conveyor.mp4/.json and previews
  boxinspect synth --out data/hard --difficulty hard --n-per-class 1000 --seed 7
"""


def _cmd_synth(args: argparse.Namespace) -> int:
    out = Path(args.out)
    t0 = time.time()
    try:
        summary = make_dataset(out, n_per_class=args.n_per_class, size=args.size, seed=args.seed,
                               difficulty=args.difficulty, progress=True)
        lines = [f"dataset: {summary['n_images']} images {summary['counts']} ({summary['size']} px) in {out}/ok, "
                 f"{out}/defective; manifest {out / 'manifest.json'}"]
        if args.contact_sheet:
            dataset_sheet(out, out / "contact_sheet.png")
            lines.append(f"contact sheet: {out / 'contact_sheet.png'}")
        if args.video:
            vpath = out / "conveyor.mp4"
            log.info("rendering the conveyor video (%d boxes) ...", args.video_boxes)
            gt = make_video(vpath, n_boxes=args.video_boxes, defect_rate=args.defect_rate, seed=args.seed,
                            fps=args.fps, difficulty=args.difficulty)
            n_def = sum(b["defective"] for b in gt["boxes"])
            r = gt["roi"]
            lines.append(f"video: {vpath} ({gt['frame_count']} frames at {gt['fps']} fps, {len(gt['boxes'])} boxes, "
                         f"{n_def} defective); ground truth {vpath.with_suffix('.json')}; "
                         f"ROI x={r['x']} y={r['y']} width={r['width']} height={r['height']}")
            if args.contact_sheet:
                video_sheet(vpath, out / "conveyor_frames.png")
                lines.append(f"video frames: {out / 'conveyor_frames.png'}")
    except (ValueError, OSError) as e:
        log.error("synth failed: %s", e)
        return 2
    log.info("synth done in %.1f s; output in %s", time.time() - t0, out)
    print("\n".join(lines))  # noqa: T201 - the CLI's summary
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="generate synthetic box images (ok/defective) and a conveyor video",
                       description=HELP, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--n-per-class", type=int, default=300, metavar="N", help="images per class (default 300)")
    p.add_argument("--size", type=int, default=160, metavar="PX", help="image side in px (default 160)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, identical output (default 0)")
    p.add_argument("--difficulty", choices=DIFFICULTIES, default="easy",
                   help="easy: large, high-contrast defects; hard: smaller, subtler defects and more clutter")
    p.add_argument("--video", action="store_true", help="also write DIR/conveyor.mp4 and its ground truth DIR/conveyor.json")
    p.add_argument("--video-boxes", type=int, default=16, metavar="N", help="boxes in the video (default 16)")
    p.add_argument("--defect-rate", type=float, default=0.4, metavar="RATE",
                   help="share of defective boxes in the video, placed at random (default 0.4)")
    p.add_argument("--fps", type=int, default=15, help="video frame rate (default 15)")
    p.add_argument("--contact-sheet", action="store_true",
                   help="also write DIR/contact_sheet.png (a row of OK images, a row per defect type) and, with "
                        "--video, DIR/conveyor_frames.png (video frames with the ROI drawn)")
    p.set_defaults(func=_cmd_synth)
