"""Synthetic data: sprite. Part of :mod:`boxinspect.synth` (see its docstring)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from boxinspect.synth._draw import blend_colour, c3, mask_bbox, poly_mask, shade_image
from boxinspect.synth.boxes import (
    TAPES,
    BoxDrawing,
    Sprite,
    box_outline,
    draw_cardboard,
    draw_clutter,
    draw_edges,
    draw_prints,
    draw_seam,
    draw_shipping_label,
    new_box,
    tape_strip,
)
from boxinspect.synth.defects import (
    draw_creases,
    draw_crush_shading,
    draw_dent,
    draw_loose_tape,
    draw_open_flap,
    draw_tear,
    draw_water_stain,
    severity,
)
from boxinspect.synth.layout import DEFECTS, DIFFICULTIES, MAX_EXT_X, MAX_EXT_Y


def render_box(rng: np.random.Generator, difficulty: str = "easy", defect: str | None = None,
               scale: float = 1.0, angle: float | None = None) -> Sprite:
    """Render one box (seen from above) as a sprite. ``defect`` is None for an OK box."""
    b = draw_box(rng, difficulty, defect, scale)
    return finish_sprite(b, _sample_angle(rng, b.hard) if angle is None else angle)


def _sample_angle(rng: np.random.Generator, hard: bool) -> float:
    spread = 12.0 if not hard else 22.0
    return float(rng.uniform(-spread, spread) + (90.0 if rng.random() < 0.2 else 0.0))


def draw_box(rng: np.random.Generator, difficulty: str, defect: str | None, scale: float) -> BoxDrawing:
    """Draw a box in its own unrotated frame."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    if defect is not None and defect not in DEFECTS:
        raise ValueError(f"unknown defect {defect!r}; expected one of {DEFECTS}")
    b = new_box(rng, difficulty, scale, defect)
    # one generator per part, so the main generator is used the same way with or without a defect and
    # a box drawn with a defect is the same box as the one drawn without
    parts = ("paper", "prints", "label", "tape", "defect")
    sub = dict(zip(parts, (np.random.default_rng(int(x)) for x in rng.integers(0, 2**62, len(parts))), strict=True))
    k = b.k
    b.rng = sub["defect"]
    crush = draw_dent(b) if defect == "dent" else None
    outline = box_outline(b, crush)
    mask = poly_mask(outline, b.alpha.shape)
    b.alpha = mask.copy()
    b.rng = sub["paper"]
    draw_cardboard(b)
    draw_edges(b, mask)
    hard = b.hard
    tape_kinds = ["brown", "tan", "white", "printed"] + (["clear"] if hard else [])
    tape_probs = np.array([0.4, 0.25, 0.2, 0.15] + ([0.25] if hard else []), np.float64)
    tape = tape_kinds[int(rng.choice(len(tape_kinds), p=tape_probs / tape_probs.sum()))]
    tw = rng.uniform(0.13, 0.19) * b.W
    b.params.update({"tape": tape, "tape_width": round(tw, 1)})
    # closed flaps meet at a thin seam (under the tape)
    draw_seam(b, rng.uniform(0.8, 1.6) * k, 0.55)
    cross = rng.random() < (0.15 if not hard else 0.3)  # H-taping: strips across both ends
    b.params["cross_tape"] = bool(cross)
    b.rng = sub["prints"]
    draw_prints(b)
    b.rng = sub["label"]
    draw_shipping_label(b)
    if hard:
        draw_clutter(b)
    b.rng = sub["defect"]
    if defect == "water_stain":
        draw_water_stain(b)
    _draw_tape(b, defect, tape, tw, cross, sub)
    _draw_late_defect(b, defect, crush, sub["defect"])
    b.img *= c3((b.alpha > 0).astype(np.float32))
    b.params["defect"] = defect
    return b


def _draw_tape(b: BoxDrawing, defect: str | None, tape: str, tw: float, cross: bool,
               sub: dict[str, np.random.Generator]) -> None:
    """The tape, or what a tape defect made of it (the tape's own details come from the tape generator, the
    defect's from the defect's)."""
    hard = b.hard
    k = b.k
    b.rng = sub["tape"]
    if defect == "missing_tape":
        b.rng = sub["defect"]
        gap = severity(b, (6.5, 10.0), (1.5, 3.0)) * k
        draw_seam(b, gap, 0.15 if not hard else 0.45)
        # unheld flaps bow up a little along the seam
        X, Y = b.grid()
        near = np.exp(-np.abs(Y - b.seam) / (8 * k)) * b.alpha
        shade_image(b.img, (1.0 - (0.18 if not hard else 0.06) * near).astype(np.float32))
        b.params["defect_size"] = round(float(gap / b.W), 3)
        if hard and cross:
            for xe in (b.x0, b.x1 - tw):
                _tape_cross(b, tape, tw, xe)
    elif defect == "loose_tape":
        draw_loose_tape(b, tape, tw, sub["defect"])
    elif defect == "open_flap":
        # the tape was cut along the seam: each flap keeps its half
        tape_strip(b, tape, tw, b.x0 - 1, b.x1 + 1, b.seam)
        b.rng = sub["defect"]
        draw_open_flap(b)
    else:
        tape_strip(b, tape, tw, b.x0 - 1, b.x1 + 1, b.seam)
        if cross:
            for xe in (b.x0, b.x1 - tw):
                _tape_cross(b, tape, tw, xe)


def _draw_late_defect(b: BoxDrawing, defect: str | None, crush: dict | None, rng: np.random.Generator) -> None:
    """The defects drawn over the tape: a dent's shading, a tear."""
    b.rng = rng
    if defect == "dent":
        if crush is not None:
            draw_crush_shading(b, crush)
        else:
            _dent_top(b)
    if defect == "tear":
        draw_tear(b)


def _dent_top(b: BoxDrawing) -> None:
    rng = b.rng
    r = severity(b, (0.27, 0.35), (0.09, 0.13)) * min(b.L, b.W)
    cx = rng.uniform(b.x0 + r * 1.1, b.x1 - r * 1.1)
    cy = rng.uniform(b.y0 + r * 1.1, b.y1 - r * 1.1)
    X, Y = b.grid()
    ex = rng.uniform(0.7, 1.4)
    dx, dy = (X - cx) / (r * ex), (Y - cy) / (r / ex)
    rr = np.sqrt(dx**2 + dy**2)
    inside = np.clip(1.0 - rr, 0, 1)
    bowl = np.sin(np.clip(rr, 0, 1) * math.pi)
    facing = -(dx + dy) / np.maximum(rr, 1e-3) / math.sqrt(2)
    amp = severity(b, (0.7, 0.85), (0.15, 0.25))
    slope = bowl * facing * (rr < 1)
    gain = 1.0 + np.where(slope > 0, 0.3 * amp * slope, amp * slope) - 0.15 * amp * inside
    shade_image(b.img, np.where(b.alpha > 0, gain, 1.0).astype(np.float32))
    draw_creases(b, cx, cy, r, amp, radial=True)
    b.params["dent_kind"] = "top"
    b.params["defect_size"] = round(float(r / min(b.L, b.W)), 3)


def _tape_cross(b: BoxDrawing, kind: str, tw: float, xe: float) -> None:
    """A short strip across one end of the box (H-taping), drawn as a rotated copy."""
    pts = np.array([(xe, b.y0 - 1), (xe + tw, b.y0 - 1), (xe + tw, b.y1 + 1), (xe, b.y1 + 1)])
    m = poly_mask(pts, b.alpha.shape) * (b.alpha > 0.5)
    colour, opacity = TAPES[kind]
    blend_colour(b.img, np.array(colour, np.float32), m * opacity * 0.95)


def finish_sprite(b: BoxDrawing, angle: float) -> Sprite:
    """Rotate the drawn box by ``angle`` degrees and add its drop shadow."""
    k = b.k
    ys, xs = mask_bbox(b.alpha > 0.0)
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
    rgba = cv2.merge([*cv2.split(img * c3(alpha)), alpha])  # premultiplied, so edges do not blend with black
    rot = cv2.warpAffine(rgba, M, (ow, oh), flags=cv2.INTER_LINEAR, borderValue=0)
    a_out = np.clip(rot[..., 3], 0, 1)
    col = np.clip(rot[..., :3] / c3(np.maximum(a_out, 1e-3)), 0, 255)
    Ms = np.float32([[1, 0, sh_off[0]], [0, 1, sh_off[1]]])
    sh = cv2.GaussianBlur(cv2.warpAffine(a_out, Ms, (ow, oh)), (0, 0), blur) * 0.42
    y0, y1 = mask_bbox((a_out > 0.02) | (sh > 0.02))
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
        b = draw_box(rng, difficulty, defect, scale)
        angle = _sample_angle(rng, hard)
        for attempt in range(3):
            sp = finish_sprite(b, angle)
            x0, y0, x1, y1 = sp.extent
            if x1 - x0 <= MAX_EXT_X * scale and y1 - y0 <= MAX_EXT_Y * scale:
                return sp
            angle = (angle - 90.0 * round(angle / 90.0) if attempt == 0 else angle) * 0.4  # along the belt, less tilt
    assert sp is not None
    return sp


