"""Synthetic data: boxes. Part of :mod:`boxinspect.synth` (see its docstring)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from boxinspect.synth._draw import (
    blend_colour,
    c3,
    const_image,
    draw_text,
    poly_mask,
    shade_image,
    smooth_noise,
)

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
        a3 = c3(self.alpha)
        self.keep = c3(1.0 - self.shadow) * (1.0 - a3)
        self.premul = self.colour * a3

    @property
    def extent(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of every visible pixel (box or shadow), relative to the centre, x1/y1 exclusive."""
        vis = (self.alpha > 0.02) | (self.shadow > 0.02)
        ys, xs = np.nonzero(vis)
        return int(xs.min()) - self.cx, int(ys.min()) - self.cy, int(xs.max()) + 1 - self.cx, int(ys.max()) + 1 - self.cy


@dataclass
class BoxDrawing:
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


def new_box(rng: np.random.Generator, difficulty: str, scale: float, defect: str | None = None) -> BoxDrawing:
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
    img = const_image((h, w), base)
    alpha = np.zeros((h, w), np.float32)
    params = {"length": round(L, 1), "width": round(W, 1), "cardboard": kind,
              "colour_bgr": [round(float(c), 1) for c in base]}
    return BoxDrawing(rng, hard, k, L, W, pad, base, img, alpha, params)


def box_outline(b: BoxDrawing, crush: dict | None) -> np.ndarray:
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


def rng_uniform(b: BoxDrawing, lo: float, hi: float) -> float:
    return float(b.rng.uniform(lo, hi))


def draw_cardboard(b: BoxDrawing) -> None:
    """Paper texture: mottling, corrugation flutes, fibre specks; flap shading, seam and edges."""
    rng, k = b.rng, b.k
    # the texture covers the top (its size does not depend on the canvas, so the same box looks the
    # same whatever room its defect needs around it)
    ys, xs = slice(b.pad - 2, b.pad + int(math.ceil(b.W)) + 2), slice(b.pad - 2, b.pad + int(math.ceil(b.L)) + 2)
    X, Y = b.grid()
    X, Y = X[ys, xs], Y[ys, xs]
    h, w = X.shape
    mott = smooth_noise(rng, h, w, 22 * k) * rng.uniform(0.02, 0.045)
    fine = smooth_noise(rng, h, w, 2.5 * k) * rng.uniform(0.008, 0.02)
    flutes = np.sin(2 * math.pi * X / (rng.uniform(4.5, 7.0) * k)) * rng.uniform(0.004, 0.012)
    gain = 1.0 + mott + fine + flutes
    # the two top flaps are separate panels that sit at slightly different angles
    f1, f2 = 1.0 + rng.uniform(-0.035, 0.035, 2)
    gain *= np.where(Y < b.seam, f1, f2).astype(np.float32)
    b.img[ys, xs] *= c3(gain.astype(np.float32))
    # fibre specks
    n = int(rng.integers(20, 60))
    xs = rng.uniform(b.x0, b.x1 - 1, n).astype(int)
    ys = rng.uniform(b.y0, b.y1 - 1, n).astype(int)
    b.img[ys, xs] *= rng.uniform(0.8, 0.95, (n, 1)).astype(np.float32)


def draw_edges(b: BoxDrawing, mask: np.ndarray) -> None:
    """Darker rim along the outline (panel edges, wall thickness), lighter on the lit (top-left) sides."""
    m8 = (mask > 0.5).astype(np.uint8)
    d = cv2.distanceTransform(m8, cv2.DIST_L2, 3).astype(np.float32)
    X, Y = b.grid()
    cx, cy = (b.x0 + b.x1) / 2, (b.y0 + b.y1) / 2
    lit = ((cx - X) / b.L + (cy - Y) / b.W)  # >0 on top-left half
    rim = np.exp(-d / (2.2 * b.k))
    gain = 1.0 - rim * (0.16 - 0.12 * np.clip(lit, -1, 1))
    shade_image(b.img, gain.astype(np.float32))


def draw_seam(b: BoxDrawing, width: float, darkness: float, x_from: float | None = None, x_to: float | None = None) -> None:
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
    m = poly_mask(np.concatenate([top, bot]), b.alpha.shape)
    blend_colour(b.img, b.colour * darkness, m * b.alpha)


def draw_prints(b: BoxDrawing) -> None:
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
            m = draw_text(b.img, txt, (x, y), hgt, (1,), max(1, int(round(hgt / 7))), rng.uniform(-3, 3))
        elif kind == "arrows":
            s = rng.uniform(10, 16) * k
            x = rng.uniform(b.x0 + 8 * k, b.x1 - 3 * s)
            y = rng.uniform(ya + s, max(ya + s + 1, yb))
            for j in range(2):
                ax = x + j * 1.4 * s
                pts = np.array([(ax, y), (ax + s / 2, y - s), (ax + s, y), (ax + 0.65 * s, y), (ax + 0.65 * s, y + 0.7 * s),
                                (ax + 0.35 * s, y + 0.7 * s), (ax + 0.35 * s, y)])
                m = np.maximum(m, poly_mask(pts, m.shape))
        else:
            fw, fh = rng.uniform(30, 55) * k, rng.uniform(14, 24) * k
            x = rng.uniform(b.x0 + 6 * k, b.x1 - fw - 6 * k)
            y = rng.uniform(ya, max(ya + 1, yb - fh))
            m8 = np.zeros(m.shape, np.uint8)
            cv2.rectangle(m8, (int(x), int(y)), (int(x + fw), int(y + fh)), 255, max(1, int(1.5 * k)), cv2.LINE_AA)
            m = m8.astype(np.float32) / 255
        blend_colour(b.img, ink, m * strength * b.alpha)
        marks.append(str(kind))
    b.params["prints"] = marks


def draw_shipping_label(b: BoxDrawing) -> None:
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
    blend_colour(lab, (25, 25, 25), lm.astype(np.float32) / 255)
    # place with rotation
    M = cv2.getRotationMatrix2D((lw / 2, lh / 2), ang, 1.0)
    M[:, 2] += (x, y)
    warped = cv2.warpAffine(lab, M, (w, h), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(np.ones(lab.shape[:2], np.float32), M, (w, h), flags=cv2.INTER_LINEAR)
    mask *= b.alpha
    blend_colour(b.img, warped, mask)
    # a faint darker edge where the label sits on the cardboard
    edge = cv2.morphologyEx((mask > 0.5).astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    shade_image(b.img, 1.0 - 0.12 * edge.astype(np.float32))
    b.params["label"] = True


def draw_clutter(b: BoxDrawing) -> None:
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
        blend_colour(b.img, (35, 30, 30), m.astype(np.float32) / 255 * 0.85 * b.alpha)
        notes.append("marker")
    if rng.random() < 0.25:  # strapping band across the box (perpendicular to the seam)
        xs = rng.uniform(b.x0 + 0.2 * b.L, b.x1 - 0.2 * b.L)
        wdt = rng.uniform(3, 5) * k
        colour = [(230, 230, 230), (160, 90, 40), (40, 40, 40)][int(rng.integers(3))]
        band = poly_mask(np.array([(xs, b.y0 - 1), (xs + wdt, b.y0 - 1), (xs + wdt, b.y1 + 1), (xs, b.y1 + 1)]),
                     b.alpha.shape)
        blend_colour(b.img, colour, band * 0.95 * (b.alpha > 0.5))
        notes.append("strap")
    if rng.random() < 0.3:  # small coloured sticker
        sw, shh = rng.uniform(14, 24) * k, rng.uniform(10, 16) * k
        x, y = rng.uniform(b.x0 + 4 * k, b.x1 - sw - 4 * k), rng.uniform(b.y0 + 4 * k, b.y1 - shh - 4 * k)
        colour = [(40, 160, 240), (60, 60, 220), (60, 200, 230), (200, 120, 40)][int(rng.integers(4))]
        st = poly_mask(np.array([(x, y), (x + sw, y), (x + sw, y + shh), (x, y + shh)]), b.alpha.shape)
        blend_colour(b.img, colour, st * b.alpha)
        notes.append("sticker")
    b.params["clutter"] = notes


def tape_strip(b: BoxDrawing, kind: str, tw: float, xa: float, xb: float, y_c: float, alpha_scale: float = 1.0) -> np.ndarray:
    """Draw a straight tape strip along x from xa to xb centred at y_c; returns its mask."""
    rng, k = b.rng, b.k
    colour, opacity = TAPES[kind]
    colour = np.array(colour, np.float32) * rng.uniform(0.94, 1.04)
    pts = np.array([(xa, y_c - tw / 2), (xb, y_c - tw / 2), (xb, y_c + tw / 2), (xa, y_c + tw / 2)])
    m = poly_mask(pts, b.alpha.shape)
    X, Y = b.grid()
    if kind == "clear":
        sheen = 1.0 + 0.1 * np.exp(-(((Y - (y_c - tw * 0.2)) / (tw * 0.15)) ** 2))
        shade_image(b.img, (1.0 + (sheen - 1.0) * m).astype(np.float32))
        blend_colour(b.img, colour, m * opacity * alpha_scale)
    else:
        blend_colour(b.img, colour, m * opacity * alpha_scale)
        gloss = 1.0 + 0.08 * np.exp(-(((Y - (y_c - tw * 0.15)) / (tw * 0.18)) ** 2))
        shade_image(b.img, (1.0 + (gloss - 1.0) * m).astype(np.float32))
        if kind == "printed":
            n = int((xb - xa) / (tw * 3.2))
            for j in range(max(1, n)):
                tx = xa + (j + 0.15) * tw * 3.2
                tm = draw_text(b.img, "FRAGILE", (tx, y_c + tw * 0.22), tw * 0.45, (1,), max(1, int(k * 1.2)))
                blend_colour(b.img, (40, 40, 190), tm * m * 0.9)
    # edges of the tape catch a little shadow
    edge = cv2.morphologyEx((m > 0.5).astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((2, 2), np.uint8))
    shade_image(b.img, 1.0 - 0.08 * edge.astype(np.float32) * (opacity > 0.5))
    # a few wrinkles across the tape
    for _ in range(int(rng.integers(0, 4))):
        wx = rng.uniform(xa, xb)
        wm = np.zeros(m.shape, np.uint8)
        cv2.line(wm, (int(wx), int(y_c - tw / 2)), (int(wx + rng.uniform(-3, 3) * k), int(y_c + tw / 2)), 255, 1, cv2.LINE_AA)
        shade_image(b.img, 1.0 - 0.07 * wm.astype(np.float32) / 255)
    return m


