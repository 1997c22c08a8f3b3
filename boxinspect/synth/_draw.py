"""Synthetic data: helpers. Part of :mod:`boxinspect.synth` (see its docstring)."""

from __future__ import annotations

import math

import cv2
import numpy as np


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Zero-mean, unit-sd smooth noise with features about ``cell`` px across."""
    gh, gw = max(2, int(h / cell) + 3), max(2, int(w / cell) + 3)
    small = rng.standard_normal((gh, gw)).astype(np.float32)
    big = cv2.resize(small, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    oy = int(rng.integers(0, max(1, big.shape[0] - h)))
    ox = int(rng.integers(0, max(1, big.shape[1] - w)))
    out = big[oy : oy + h, ox : ox + w]
    sd = float(out.std()) or 1.0
    return (out - out.mean()) / sd


def periodic_noise(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    """Zero-mean unit-sd Gaussian-filtered noise that wraps around in x (and y): FFT low-pass."""
    white = rng.standard_normal((h, w)).astype(np.float32)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    filt = np.exp(-2 * (math.pi * sigma) ** 2 * (fx**2 + fy**2))
    out = np.fft.irfft2(np.fft.rfft2(white) * filt, s=(h, w)).astype(np.float32)
    return (out - out.mean()) / (float(out.std()) or 1.0)


def poly_mask(points: np.ndarray, shape: tuple[int, int], shift: int = 4) -> np.ndarray:
    """Anti-aliased filled polygon as a float32 mask in [0, 1]."""
    m = np.zeros(shape, np.uint8)
    pts = np.round(np.asarray(points, np.float64) * (1 << shift)).astype(np.int32)
    cv2.fillPoly(m, [pts], 255, cv2.LINE_AA, shift)
    return m.astype(np.float32) / 255.0


def c3(a: np.ndarray) -> np.ndarray:
    """A 2D array as 3 identical channels (numpy broadcasting over a last axis of 3 is slow)."""
    return cv2.merge([a, a, a])


def const_image(shape: tuple[int, ...], colour: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """An image of ``shape[:2]`` filled with a BGR colour."""
    return cv2.merge([np.full(shape[:2], float(c), np.float32) for c in colour])


def mask_bbox(mask: np.ndarray) -> tuple[slice, slice] | None:
    """Slices of the bounding box of the non-zero pixels of a 2D mask (None if empty)."""
    x, y, w, h = cv2.boundingRect((mask != 0).view(np.uint8))
    if w == 0 or h == 0:
        return None
    return slice(y, y + h), slice(x, x + w)


def blend_colour(img: np.ndarray, colour: np.ndarray | tuple[float, ...], alpha: np.ndarray) -> None:
    """In place: img = img * (1 - alpha) + colour * alpha (colour a BGR triple or an image)."""
    bb = mask_bbox(alpha)
    if bb is None:
        return
    a = c3(alpha[bb])
    col = np.asarray(colour, np.float32)
    reg = img[bb]
    col = col[bb] if col.ndim == 3 else const_image(reg.shape, col)
    reg *= 1.0 - a
    reg += col * a


def shade_image(img: np.ndarray, factor: np.ndarray | float) -> None:
    """In place multiplicative shading by a per-pixel factor (1 = unchanged)."""
    if isinstance(factor, np.ndarray) and factor.ndim == 2:
        bb = mask_bbox(factor != 1.0)
        if bb is None:
            return
        img[bb] *= c3(np.ascontiguousarray(factor[bb], np.float32))
        return
    img *= factor


def jagged_polygon(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float, n: int, rough: float) -> np.ndarray:
    """An irregular closed outline: a few smooth lobes plus fine ragged edges (a tear, not a star)."""
    ang = np.sort(rng.uniform(0, 2 * math.pi, n))
    lobes = sum(rng.uniform(0.05, 0.16) * np.cos(j * ang + rng.uniform(0, 2 * math.pi)) for j in (2, 3, 5))
    rad = 1.0 + lobes + rough * 0.35 * rng.uniform(-1, 1, n)
    return np.stack([cx + rx * rad * np.cos(ang), cy + ry * rad * np.sin(ang)], 1)


def draw_text(img: np.ndarray, txt: str, org: tuple[float, float], height: float, colour: tuple, thick: int,
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


