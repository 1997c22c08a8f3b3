"""Synthetic data: patterned-belt line scenes. Part of :mod:`boxinspect.synth` (see its docstring).

Harder than :mod:`boxinspect.synth.line`: what real conveyors look like to a fixed camera, and what makes a
reference-free box localiser fail.

* the belt: raised **slats** with dark gaps, **rollers** (shaded cylinders with a specular line and dark gaps),
  or a fine **ribbed** / plain belt; a strong periodic texture, at a random phase per part (the belt moves);
* metal **guide rails** along both edges of the belt (highlight, dark edge, bolts);
* a **shadow**: every box casts one in the line's light direction; some lines have an overhead structure's
  shadow across the belt;
* boxes: cardboard, or (most) **white or grey with a coloured band**, with a **specular glint** on the tape;
* two cameras per part: ``top`` (straight down, the belt running along x or y) and ``oblique`` (the belt plane
  seen in perspective: far rows squeezed, rails converging; looking along the travel or from the side);
* the box covers 2-25% of the frame (log-uniform, so small boxes are common); frames 960x540 by default.

A data set holds several *lines* (``n_lines``): each is one fixed camera geometry, belt and rail layout per view,
shared by its parts, so a per-pixel median of a line's photos is its empty belt. Parts go to lines in turn.
Files are ``<class>/<part>_<view>.<ext>``, and ``empty/line<L>/<view>/<k>.<ext>``: each camera's empty belt at
other phases (for ``--empty DATA/empty`` in localize, train, cv, evaluate); ``parts.json`` holds per part the label, defect, line and per view
the box's bounding box ``[x0, y0, x1, y1]`` (x1/y1 exclusive), rotated rectangle and frame share, as
:mod:`boxinspect.synth.line` writes it (the same ``line_sheet`` and ground-truth readers work).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from boxinspect.synth._draw import c3, smooth_noise
from boxinspect.synth.boxes import BoxDrawing, Sprite
from boxinspect.synth.dataset import OneCvThread, child_rng
from boxinspect.synth.layout import CLASSES, DEFECTS, Layout, log
from boxinspect.synth.line import box_truth, oblique_view, part_name, top_view
from boxinspect.synth.sprite import draw_box, finish_sprite
from edge.judge.localize import EMPTY_DIR

BELT_FRAME = (960, 540)  # (width, height)
BELT_AREA_RANGE = (0.02, 0.25)  # share of the frame the box body covers (log-uniform)
BELT_KINDS = ("slat", "roller", "ribbed", "plain")
_BELT_P = (0.4, 0.3, 0.15, 0.15)
_BELT_COLOURS = ((60, 60, 62), (40, 40, 40), (120, 84, 50), (150, 150, 146), (70, 110, 60), (95, 95, 100),
                 (170, 172, 168))
_BANDS = ((40, 40, 200), (200, 110, 30), (40, 160, 40), (30, 200, 230), (30, 120, 240), (150, 50, 150))


@dataclass
class _View:
    """One fixed camera of a line: belt, rails, perspective, light (shared by the line's parts)."""

    kind: str
    period: float  # of the belt pattern, in plane px
    gap: float  # dark share of a period (slat, roller)
    belt_bgr: tuple[float, float, float]
    gap_gain: float
    rail_frac: float  # rail height, share of the plane's height (each side)
    rail_bgr: tuple[float, float, float]
    along_x: bool  # the belt travels along the plane's x (rails at top and bottom)
    tilt: float  # 0: top view; else how much the far edge is squeezed (0.2-0.5)
    light: float
    light_grad: float
    light_dir: float
    shadow_dir: float
    shadow_len: float
    shadow_gain: float
    overhead: float  # 0: none; else the darkness of a shadow band across the belt
    overhead_pos: float
    noise: float
    defocus: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _sample_view(rng: np.random.Generator, view: str) -> _View:
    kind = BELT_KINDS[int(rng.choice(len(BELT_KINDS), p=_BELT_P))]
    col = np.array(_BELT_COLOURS[int(rng.integers(len(_BELT_COLOURS)))], np.float32) * rng.uniform(0.85, 1.15)
    rail = np.array((150, 150, 146), np.float32) * rng.uniform(0.7, 1.3)
    return _View(
        kind=kind, period=float(rng.uniform(14, 44) if kind != "ribbed" else rng.uniform(5, 10)),
        gap=float(rng.uniform(0.12, 0.35)), belt_bgr=tuple(float(c) for c in col),
        gap_gain=float(rng.uniform(0.2, 0.55)), rail_frac=float(rng.uniform(0.04, 0.12)),
        rail_bgr=tuple(float(min(c, 235.0)) for c in rail), along_x=bool(rng.random() < 0.6),
        tilt=0.0 if view == "top" else float(rng.uniform(0.2, 0.5)),
        light=float(rng.uniform(0.8, 1.15)), light_grad=float(rng.uniform(0.0, 0.25)),
        light_dir=float(rng.uniform(0, 2 * math.pi)), shadow_dir=float(rng.uniform(0, 2 * math.pi)),
        shadow_len=float(rng.uniform(0.03, 0.18)), shadow_gain=float(rng.uniform(0.25, 0.6)),
        overhead=float(rng.uniform(0.2, 0.45)) if rng.random() < 0.25 else 0.0,
        overhead_pos=float(rng.uniform(0.2, 0.8)), noise=float(rng.uniform(1.0, 4.0)),
        defocus=float(rng.uniform(0.0, 1.2)))


def _profile(v: _View, n: int, phase: float) -> np.ndarray:
    """Brightness gain along the travel direction (n px): the belt's periodic pattern."""
    u = ((np.arange(n, dtype=np.float32) + phase) / v.period) % 1.0
    if v.kind == "slat":
        top = 1.0 - 0.12 * u + 0.25 * np.exp(-((u - 0.04) / 0.03) ** 2)  # shaded slat, lit leading edge
        return np.where(u < 1.0 - v.gap, top, v.gap_gain).astype(np.float32)
    if v.kind == "roller":
        w = np.clip(u / (1.0 - v.gap), 0, 1)
        body = 0.45 + 0.55 * np.sin(math.pi * w) + 0.6 * np.exp(-((w - 0.35) / 0.05) ** 2)
        return np.where(u < 1.0 - v.gap, body, v.gap_gain * 0.6).astype(np.float32)
    if v.kind == "ribbed":
        return (1.0 + 0.12 * np.sin(2 * math.pi * u)).astype(np.float32)
    return np.ones(n, np.float32)


def _plane(v: _View, rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """The belt plane seen from above (BGR float32, h x w) and its belt mask (1 between the rails)."""
    along, across = (w, h) if v.along_x else (h, w)
    prof = _profile(v, along, float(rng.uniform(0, 1000)))
    tex = prof[None, :] * (1.0 + 0.06 * smooth_noise(rng, across, along, 24.0))
    belt = np.dstack([tex * c for c in v.belt_bgr]).astype(np.float32)
    mask = np.ones((across, along), np.float32)
    r = max(3, int(round(v.rail_frac * across)))
    y = np.linspace(0, 1, r, dtype=np.float32)[:, None]
    shade = 0.75 + 0.25 * np.sin(math.pi * y) + 0.5 * np.exp(-((y - 0.3) / 0.06) ** 2)  # rounded rail, highlight
    rail = np.dstack([np.repeat(shade * c, along, 1) for c in v.rail_bgr])
    for y0, flip in ((0, False), (across - r, True)):
        belt[y0 : y0 + r] = rail[::-1] if flip else rail
        mask[y0 : y0 + r] = 0
        edge = y0 + r if not flip else y0 - 2  # the dark gap between rail and belt
        belt[max(0, edge) : edge + 2] *= 0.35
        for x in range(int(rng.integers(10, 60)), along, 90):
            cv2.circle(belt, (x, y0 + r // 2), max(1, r // 6), (70, 70, 70), -1, cv2.LINE_AA)
    if not v.along_x:
        belt, mask = np.ascontiguousarray(belt.transpose(1, 0, 2)), np.ascontiguousarray(mask.T)
    return belt, mask


def _warp(v: _View, w: int, h: int) -> np.ndarray | None:
    """Perspective of the oblique camera: the plane's far (top) edge squeezed by ``tilt``, rows compressed."""
    if v.tilt <= 0:
        return None
    t = v.tilt
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = np.float32([[t * w / 2, 0], [w - t * w / 2, 0], [w * 1.0, h], [0, h]])
    return cv2.getPerspectiveTransform(src, dst)


def _restyle(b: BoxDrawing, rng: np.random.Generator) -> str:
    """Most boxes on these lines: white or grey with a coloured band across the tape; the rest cardboard."""
    r = rng.random()
    if r < 0.25:
        return "cardboard"
    target = np.array((228, 230, 232) if r < 0.65 else (150, 152, 155), np.float32) * rng.uniform(0.9, 1.05)
    inside = b.alpha > 0
    b.img[inside] *= target / np.maximum(b.colour, 1.0)
    b.img = np.clip(b.img, 0, 255)
    if rng.random() < 0.85:  # the coloured band: a strap across the box, perpendicular to the tape
        bw = rng.uniform(0.08, 0.16) * b.L
        xc = rng.uniform(b.x0 + 0.2 * b.L, b.x1 - 0.2 * b.L)
        X, _ = b.grid()
        band = (np.abs(X - xc) < bw / 2) & inside
        b.img[band] = np.array(_BANDS[int(rng.integers(len(_BANDS)))], np.float32) * rng.uniform(0.8, 1.1)
    return "white" if r < 0.65 else "grey"


def _glint(b: BoxDrawing, rng: np.random.Generator) -> None:
    """A specular streak along the tape (glossy tape under a line light)."""
    _, Y = b.grid()
    y = b.seam + rng.uniform(-0.05, 0.05) * b.W
    g = np.exp(-(((Y - y) / (0.02 * b.W)) ** 2)) * (b.alpha > 0) * rng.uniform(0.3, 0.7)
    b.img += c3(g.astype(np.float32)) * (255.0 - b.img)


def _composite(frame: np.ndarray, sp: Sprite, cx: int, cy: int, v: _View, s: float) -> None:
    """Cast the box's shadow (the line's light direction) and paint the box onto the frame (in place)."""
    h, w = frame.shape[:2]
    a = np.zeros((h, w), np.float32)
    col = np.zeros((h, w, 3), np.float32)
    ox, oy = cx - sp.cx, cy - sp.cy
    sh_, sw_ = sp.alpha.shape
    fx0, fy0, fx1, fy1 = max(0, ox), max(0, oy), min(w, ox + sw_), min(h, oy + sh_)
    a[fy0:fy1, fx0:fx1] = sp.alpha[fy0 - oy : fy1 - oy, fx0 - ox : fx1 - ox]
    col[fy0:fy1, fx0:fx1] = sp.colour[fy0 - oy : fy1 - oy, fx0 - ox : fx1 - ox]
    side = math.sqrt(max(1.0, float((a > 0.5).sum())))
    d = v.shadow_len * side * 4
    M = np.float32([[1, 0, d * math.cos(v.shadow_dir)], [0, 1, d * math.sin(v.shadow_dir)]])
    sh = cv2.GaussianBlur(cv2.warpAffine(a, M, (w, h)), (0, 0), max(1.0, 0.04 * side)) * v.shadow_gain
    frame *= c3(1.0 - np.maximum(sh, 0.0) * (1.0 - a))
    frame *= c3(1.0 - a)
    frame += col * c3(a)


def _place_on_belt(rng: np.random.Generator, sp: Sprite, mask: np.ndarray) -> tuple[int, int]:
    """A centre for the sprite whose box body lies on the belt (between the rails) and inside the frame."""
    ys, xs = np.nonzero(sp.alpha > 0.5)
    x0, x1, y0, y1 = xs.min() - sp.cx, xs.max() + 1 - sp.cx, ys.min() - sp.cy, ys.max() + 1 - sp.cy
    by, bx = np.nonzero(mask > 0.5)
    lo_x, hi_x = int(bx.min()) + 4 - x0, int(bx.max()) - 4 - x1
    lo_y, hi_y = int(by.min()) + 4 - y0, int(by.max()) - 4 - y1
    h, w = mask.shape
    cx = int(rng.integers(lo_x, hi_x + 1)) if hi_x >= lo_x else (int(bx.min()) + int(bx.max())) // 2 - int(x0 + x1) // 2
    cy = int(rng.integers(lo_y, hi_y + 1)) if hi_y >= lo_y else (int(by.min()) + int(by.max())) // 2 - int(y0 + y1) // 2
    return int(np.clip(cx, -x0, w - x1)), int(np.clip(cy, -y0, h - y1))


def _finish(v: _View, rng: np.random.Generator, frame: np.ndarray) -> np.ndarray:
    """Light (level, gradient, overhead shadow), defocus and sensor noise; uint8."""
    h, w = frame.shape[:2]
    u = ((np.arange(w, dtype=np.float32) - w / 2) / (w / 2))[None, :]
    yy = ((np.arange(h, dtype=np.float32) - h / 2) / (h / 2))[:, None]
    light = v.light * float(rng.uniform(0.95, 1.05))
    g = light * (1 + v.light_grad * (u * math.cos(v.light_dir) + yy * math.sin(v.light_dir)))
    if v.overhead:
        band = np.exp(-(((u if v.along_x else yy) - (2 * v.overhead_pos - 1)) / 0.25) ** 8)
        g = g * (1 - v.overhead * band)
    frame *= c3(np.broadcast_to(g, (h, w)).astype(np.float32))
    if v.defocus > 0.3:
        frame = cv2.GaussianBlur(frame, (0, 0), v.defocus)
    frame += rng.standard_normal(frame.shape, dtype=np.float32) * v.noise
    return cv2.convertScaleAbs(frame)


def render_belt_part(seed: int, index: int, label: str, defect: str | None, line: int,
                     frame_size: tuple[int, int] = BELT_FRAME, empty: bool = False) -> dict[str, Any]:
    """Render one part on line ``line`` in both views: ``{"views": {view: BGR uint8}, "truth": {...}}`` and,
    with ``empty=True``, ``"empty"``: the same frames without the box."""
    w, h = int(frame_size[0]), int(frame_size[1])
    layout = Layout(w, h, 0, 0, 300, 0, h)
    rng = child_rng(seed, 31, CLASSES.index(label), index)
    diff = "easy" if rng.random() < 0.5 else "hard"
    b = draw_box(rng, diff, defect, 1.3)
    look = _restyle(b, child_rng(seed, 32, CLASSES.index(label), index))
    if rng.random() < 0.5:
        _glint(b, rng)
    base = finish_sprite(b, float(rng.uniform(-90.0, 90.0)))
    lo, hi = (math.log(x) for x in BELT_AREA_RANGE)
    frac = math.exp(float(rng.uniform(lo, hi)))
    s = math.sqrt(frac * w * h / float((base.alpha > 0.5).sum()))
    truth: dict[str, Any] = {"label": label, "defect": defect, "difficulty": diff, "line": line, "look": look,
                             "target_area_frac": round(frac, 4), "box": base.params, "views": {}}
    views: dict[str, np.ndarray] = {}
    empties: dict[str, np.ndarray] = {}
    for vi, view in enumerate(("top", "oblique")):
        v = _sample_view(child_rng(seed, 33, line, vi), view)
        prng = child_rng(seed, 34, CLASSES.index(label), index, vi)
        plane, mask = _plane(v, prng, h, w)
        M = _warp(v, w, h)
        if M is not None:
            plane = cv2.warpPerspective(plane, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            mask = cv2.warpPerspective(mask, M, (w, h), flags=cv2.INTER_NEAREST)
            sp, extra = oblique_view(base, s * (1 - v.tilt / 3), prng)
        else:
            sp, extra = top_view(base, s), {}
        sp = Sprite(sp.colour, sp.alpha, np.zeros_like(sp.shadow), sp.cx, sp.cy, sp.params)
        cx, cy = _place_on_belt(prng, sp, mask)
        frame = plane.copy()
        _composite(frame, sp, cx, cy, v, s)
        fr = child_rng(seed, 35, CLASSES.index(label), index, vi)
        views[view] = _finish(v, fr, frame)
        if empty:
            empties[view] = _finish(v, child_rng(seed, 35, CLASSES.index(label), index, vi), plane.copy())
        truth["views"][view] = {**box_truth(sp, cx, cy, layout), "scene": {**v.to_dict(), "jpeg_quality":
                                int(fr.integers(70, 96))}, **extra}
    out: dict[str, Any] = {"views": views, "truth": truth}
    if empty:
        out["empty"] = empties
    return out


EMPTY_START = 100000  # render indices of the empty-belt frames (other belt phases and noise than any part's)


def write_empty_belts(out: Path, seed: int, n_lines: int, frame_size: tuple[int, int], n: int, ext: str = "jpg") -> int:
    """Write ``n`` frames of each line's empty belt per view: ``out/<EMPTY_DIR>/line<L>/<view>/<k>.<ext>`` (what a
    fixed camera sees between boxes, the belt at other phases; for ``--empty``); the number written."""
    written = 0
    for line in range(n_lines):
        for k in range(n):
            r = render_belt_part(seed, EMPTY_START + line + k * n_lines, "ok", None, line, frame_size, empty=True)
            for view, img in r["empty"].items():
                d = out / EMPTY_DIR / f"line{line}" / view
                d.mkdir(parents=True, exist_ok=True)
                q = int(r["truth"]["views"][view]["scene"]["jpeg_quality"])
                path = d / f"{k:03d}.{ext}"
                if not cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, q] if ext == "jpg" else []):
                    raise OSError(f"could not write {path}")
                written += 1
    return written


def make_belt_dataset(out: Path, n_per_class: int = 100, seed: int = 0, n_lines: int = 4,
                      frame_size: tuple[int, int] = BELT_FRAME, ext: str = "jpg", progress: bool = True,
                      empty_frames: int = 16) -> dict:
    """Write patterned-belt scenes: ``out/<class>/<part>_<view>.<ext>``, ``out/parts.json`` and ``empty_frames``
    frames of each line's empty belt per view in ``out/empty/line<L>/<view>/`` (:func:`write_empty_belts`);
    a summary."""
    if n_per_class < 1 or n_lines < 1:
        raise ValueError("n_per_class and n_lines must be >= 1")
    out = Path(out)
    t0 = time.time()
    for c in CLASSES:
        (out / c).mkdir(parents=True, exist_ok=True)
    parts: list[dict[str, Any]] = []
    total = 2 * n_per_class
    with OneCvThread():
        for label in ("ok", "defective"):
            for i in range(n_per_class):
                defect = None if label == "ok" else DEFECTS[i % len(DEFECTS)]
                r = render_belt_part(seed, i, label, defect, i % n_lines, frame_size)
                part = part_name(label, i, defect)
                for view, img in r["views"].items():
                    path = out / label / f"{part}_{view}.{ext}"
                    q = int(r["truth"]["views"][view]["scene"]["jpeg_quality"])
                    if not cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, q] if ext == "jpg" else []):
                        raise OSError(f"could not write {path}")
                    r["truth"]["views"][view]["file"] = f"{label}/{path.name}"
                parts.append({"part": part, **r["truth"]})
                if progress and (len(parts) % max(1, total // 10) == 0 or len(parts) == total):
                    log.info("synth belt scenes: %d/%d parts (%.0f s)", len(parts), total, time.time() - t0)
        n_empty = write_empty_belts(out, seed, n_lines, frame_size, empty_frames, ext) if empty_frames > 0 else 0
    counts = {c: sum(1 for p in parts if p["label"] == c) for c in CLASSES}
    summary = {"out": str(out), "n_parts": len(parts), "n_images": 2 * len(parts), "views": ["top", "oblique"],
               "counts": counts, "frame_size": list(frame_size), "seed": seed, "n_lines": n_lines,
               "scenes": "belt", "classes": list(CLASSES), "positive_class": "defective",
               "empty_belt": {"dir": EMPTY_DIR, "frames_per_camera": empty_frames, "n_frames": n_empty},
               "seconds": round(time.time() - t0, 2)}
    manifest = {k: v for k, v in summary.items() if k not in ("seconds", "out")}
    manifest["parts"] = parts
    (out / "parts.json").write_text(json.dumps(manifest, indent=1))
    return summary
