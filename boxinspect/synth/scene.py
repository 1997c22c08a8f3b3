"""Synthetic data: scene. Part of :mod:`boxinspect.synth` (see its docstring)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from boxinspect.synth._draw import periodic_noise, smooth_noise
from boxinspect.synth.boxes import Sprite
from boxinspect.synth.layout import Layout


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


def belt_pattern(rng: np.random.Generator, h: int, period: int) -> np.ndarray:
    """Zero-mean belt texture (float32, h x period), periodic along x: wear blotches, grain, streaks, a splice."""
    blot = periodic_noise(rng, h, period, 14.0)
    grain = periodic_noise(rng, h, period, 0.7)
    streak = smooth_noise(rng, h, 1, 3.0)
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
            pattern = belt_pattern(rng, layout.belt_bottom - layout.belt_top, int(max(w, 1024)))
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


class NoiseBank:
    """Pre-drawn sensor noise: a random slice of one of a few noise fields per frame (fast, deterministic)."""

    def __init__(self, rng: np.random.Generator, h: int, w: int, sigma: float = 1.0, n: int = 8, margin: int = 16):
        self.fields = [(rng.standard_normal((h + margin, w + margin, 3), dtype=np.float32) * sigma) for _ in range(n)]
        self.h, self.w, self.margin, self.rng = h, w, margin, rng

    def draw(self, rng: np.random.Generator | None = None) -> np.ndarray:
        rng = rng or self.rng
        f = self.fields[int(rng.integers(len(self.fields)))]
        oy, ox = (int(x) for x in rng.integers(0, self.margin, 2))
        return f[oy : oy + self.h, ox : ox + self.w]


