"""Synthetic data: defects. Part of :mod:`boxinspect.synth` (see its docstring)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from boxinspect.synth._draw import (
    blend_colour,
    c3,
    const_image,
    jagged_polygon,
    poly_mask,
    shade_image,
    smooth_noise,
)
from boxinspect.synth.boxes import TAPES, BoxDrawing, draw_seam, tape_strip


def severity(b: BoxDrawing, easy: tuple[float, float], hard: tuple[float, float]) -> float:
    lo, hi = hard if b.hard else easy
    return float(b.rng.uniform(lo, hi))


def draw_water_stain(b: BoxDrawing) -> None:
    rng = b.rng
    h, w = b.alpha.shape
    r = severity(b, (0.3, 0.4), (0.09, 0.15)) * min(b.L, b.W)
    cx = rng.uniform(b.x0 + r * 0.8, b.x1 - r * 0.8)
    cy = rng.uniform(b.y0 + r * 0.8, b.y1 - r * 0.8)
    X, Y = b.grid()
    ex = rng.uniform(0.75, 1.3)
    rr = np.sqrt(((X - cx) / (r * ex)) ** 2 + ((Y - cy) / (r / ex)) ** 2)
    field_ = 1.0 - rr + 0.28 * smooth_noise(rng, h, w, r * 0.45)
    blob = (field_ > 0).astype(np.float32)
    blob = cv2.GaussianBlur(blob, (0, 0), 1.2 * b.k) * b.alpha
    dark = severity(b, (0.45, 0.6), (0.72, 0.82))
    tint = np.array([0.86, 0.95, 1.0], np.float32)  # wet kraft goes darker and redder
    b.img *= cv2.merge([1.0 - blob * (1.0 - dark * float(t)) for t in tint])
    # tide mark: a darker rim where the water stopped
    rim = cv2.morphologyEx((blob > 0.5).astype(np.uint8), cv2.MORPH_GRADIENT,
                           cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    rim = cv2.GaussianBlur(rim.astype(np.float32), (0, 0), 1.0 * b.k)
    shade_image(b.img, 1.0 - rim * (0.35 if not b.hard else 0.2))
    b.params["defect_size"] = round(float(blob.sum() / (b.L * b.W)), 3)


def draw_dent(b: BoxDrawing) -> dict | None:
    """Choose the dent: a crushed corner (returned, it changes the outline) or a dented top (None)."""
    rng = b.rng
    if rng.random() < (0.85 if not b.hard else 0.5):
        depth = severity(b, (0.36, 0.46), (0.1, 0.15)) * min(b.L, b.W)
        return {"corner": int(rng.integers(4)), "depth": depth, "spread_a": rng.uniform(1.1, 1.6),
                "spread_b": rng.uniform(1.1, 1.6)}
    return None


def draw_creases(b: BoxDrawing, cx: float, cy: float, r: float, amp: float, radial: bool = False) -> None:
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
    shade_image(b.img, 1.0 + 0.35 * amp * light * b.alpha)
    shade_image(b.img, 1.0 - 0.9 * amp * m_dark.astype(np.float32) / 255 * b.alpha)


def draw_crush_shading(b: BoxDrawing, crush: dict) -> None:
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
        shade_image(b.img, 1.0 - (1.0 - rng.uniform(lo, hi)) * poly_mask(tri, b.alpha.shape) * b.alpha)
    for i in idx:
        cv2.line(folds, tuple(int(v) for v in path[i]), tuple(int(v) for v in deep), 255, max(1, int(1.3 * k)),
                 cv2.LINE_AA)
    # the crumpled wall along the new outline shows as a dark band
    X, Y = b.grid()
    rr = np.sqrt((X - deep[0]) ** 2 + (Y - deep[1]) ** 2) / (d * 1.3)
    mask = (b.alpha > 0.5).astype(np.uint8)
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    band = np.exp(-dist / (2.5 * k)) * (rr < 1.0)
    shade_image(b.img, (1.0 - (0.5 if not b.hard else 0.2) * band).astype(np.float32))
    shade_image(b.img, 1.0 - 0.6 * amp * folds.astype(np.float32) / 255 * b.alpha)
    draw_creases(b, deep[0], deep[1], d * 0.7, amp * 0.8, radial=True)
    b.params["dent_kind"] = "corner"
    b.params["defect_size"] = round(float(d / min(b.L, b.W)), 3)


def draw_tear(b: BoxDrawing) -> None:
    rng, k = b.rng, b.k
    m = min(b.L, b.W)
    if b.hard and rng.random() < 0.4:  # a slit
        rx, ry = rng.uniform(0.16, 0.26) * m, rng.uniform(0.025, 0.05) * m
    else:
        r = severity(b, (0.17, 0.24), (0.05, 0.085)) * m
        ex = rng.uniform(0.75, 1.35)
        rx, ry = r * ex, r / ex
    cx = rng.uniform(b.x0 + rx + 8 * k, b.x1 - rx - 8 * k)
    cy = rng.uniform(b.y0 + ry + 8 * k, b.y1 - ry - 8 * k)
    pts = jagged_polygon(rng, cx, cy, rx, ry, int(rng.integers(30, 44)), 0.3)
    ang = rng.uniform(0, 180)
    R = cv2.getRotationMatrix2D((cx, cy), ang, 1.0)
    pts = pts @ R[:, :2].T + R[:, 2]
    hole = poly_mask(pts, b.alpha.shape)
    # ragged rim: exposed paper and flutes, lighter than the surface
    ring = cv2.dilate((hole > 0.5).astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (
        int(2 * 3 * k) + 1, int(2 * 3 * k) + 1))).astype(np.float32)
    ring = np.clip(ring - hole, 0, 1) * (0.6 + 0.4 * (smooth_noise(rng, *hole.shape, 1.5 * k) > -0.3))
    fibre = np.minimum(b.colour * 1.22 + 12, 250)
    blend_colour(b.img, fibre, ring * b.alpha * (0.9 if not b.hard else 0.6))
    # inside the box: dark, darker on the lit side of the hole (its wall shades it)
    X, Y = b.grid()
    grad = np.clip(0.5 + ((X - cx) + (Y - cy)) / (2.5 * max(rx, ry)), 0, 1)
    darkness = rng.uniform(0.16, 0.28) if not b.hard else rng.uniform(0.3, 0.45)
    inside = const_image(b.img.shape, b.colour * darkness) * c3((0.55 + 0.6 * grad).astype(np.float32))
    blend_colour(b.img, inside, hole)
    # torn flaps of cardboard folded into the hole
    for _ in range(int(rng.integers(1, 4))):
        i = int(rng.integers(len(pts)))
        p = pts[i]
        q = pts[(i + len(pts) // int(rng.integers(5, 9))) % len(pts)]
        tip = p + (np.array([cx, cy]) - p) * rng.uniform(0.35, 0.7)
        flap = poly_mask(np.array([p, q, tip]), hole.shape)
        blend_colour(b.img, b.colour * rng.uniform(0.7, 0.95), flap * hole)
    b.params["defect_size"] = round(float(hole.sum() / (b.L * b.W)), 3)


def draw_open_flap(b: BoxDrawing) -> None:
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
    inside_tone = rng.uniform(0.2, 0.3) * (0.75 + 0.5 * dist_from_seam) * (1 + 0.08 * smooth_noise(rng, *Y.shape, 16 * k))
    inside = const_image(b.img.shape, b.colour) * c3(inside_tone.astype(np.float32))
    blend_colour(b.img, inside, reg)
    if not b.hard:
        # end (minor) flaps folded half in: mid-dark trapezoids at both ends of the opening
        for end in (0, 1):
            ln = rng.uniform(0.12, 0.22) * b.L
            xa = b.x0 + 2.5 * k if end == 0 else b.x1 - 2.5 * k
            xb = xa + ln if end == 0 else xa - ln
            y_a, y_b = (seam_edge - gap, seam_edge) if side == 0 else (seam_edge, seam_edge + gap)
            pts = np.array([(xa, y_a + 2 * k), (xb, y_a + gap * 0.3), (xb, y_b - gap * 0.3), (xa, y_b - 2 * k)])
            blend_colour(b.img, b.colour * rng.uniform(0.45, 0.6), poly_mask(pts, Y.shape) * reg)
        # the flap itself outside the box, inner face up, foreshortened by its angle
        ext = half_w * abs(math.cos(math.radians(open_angle)))
        ext = max(ext, 0.3 * half_w)
        sgn = -1 if side == 0 else 1
        y_out = hinge + sgn * ext
        inset = rng.uniform(0, 4) * k
        pts = np.array([(b.x0, hinge), (b.x1, hinge), (b.x1 - inset, y_out), (b.x0 + inset, y_out)])
        fm = poly_mask(pts, Y.shape)
        tilt = 1.0 + rng.uniform(-0.12, 0.06)
        face = np.minimum(b.colour * 1.06 * tilt, 250)
        fm_only = fm * (1.0 - b.alpha)
        blend_colour(b.img, face, fm_only)
        b.alpha = np.maximum(b.alpha, fm)
        # a fold line at the hinge
        fl = np.zeros(Y.shape, np.uint8)
        cv2.line(fl, (int(b.x0), int(hinge)), (int(b.x1), int(hinge)), 255, max(1, int(2 * k)), cv2.LINE_AA)
        shade_image(b.img, 1.0 - 0.3 * fl.astype(np.float32) / 255)
    else:
        # the lifted flap is tilted: a shade change over it
        flap_region = (Y < seam_edge - gap) & (Y >= hinge) if side == 0 else (Y >= seam_edge + gap) & (Y < hinge)
        shade_image(b.img, np.where(flap_region & (b.alpha > 0.5), rng.uniform(0.9, 0.96), 1.0).astype(np.float32))
    b.params["flap_side"] = side
    b.params["open_angle"] = round(float(open_angle), 1)
    b.params["defect_size"] = round(float(gap / b.W), 3)


def draw_loose_tape(b: BoxDrawing, kind: str, tw: float, drng: np.random.Generator) -> None:
    """Tape stuck for part of the length; the rest has peeled off and swings out to one side."""
    tape_rng = b.rng
    b.rng = rng = drng
    k = b.k
    frac = severity(b, (0.45, 0.65), (0.12, 0.2))
    ln = frac * b.L
    from_right = rng.random() < 0.5
    xp = b.x1 - ln if from_right else b.x0 + ln
    # the exposed seam and adhesive residue under the peeled part
    xa, xb = (xp, b.x1 - 1) if from_right else (b.x0 + 1, xp)
    res = poly_mask(np.array([(xa, b.seam - tw / 2), (xb, b.seam - tw / 2), (xb, b.seam + tw / 2), (xa, b.seam + tw / 2)]),
                b.alpha.shape)
    shade_image(b.img, 1.0 - 0.07 * res)
    draw_seam(b, (6.0 if not b.hard else 2.0) * k, 0.2 if not b.hard else 0.35, xa, xb)
    # stuck part
    b.rng = tape_rng
    if from_right:
        tape_strip(b, kind, tw, b.x0 - 1, xp, b.seam)
    else:
        tape_strip(b, kind, tw, xp, b.x1 + 1, b.seam)
    b.rng = rng
    # loose part: a curling strip rotating away from the seam around the peel point
    phi = math.radians(severity(b, (35, 60), (10, 20))) * (1 if rng.random() < 0.5 else -1)
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
    tm = poly_mask(poly, b.alpha.shape)
    # its shadow on the box (tape is above the surface)
    off = int(round((6 if not b.hard else 3) * k))
    sh = cv2.GaussianBlur(np.roll(np.roll(tm, off, 0), off, 1), (0, 0), 2.0 * k)
    shade_image(b.img, 1.0 - (0.5 if not b.hard else 0.3) * sh * b.alpha)
    colour, opacity = TAPES[kind]
    under = np.array(colour, np.float32) * rng.uniform(0.8, 0.9)  # the matt adhesive side shows
    opacity = max(opacity, 0.6)
    under_img = const_image(b.img.shape, under)
    base_under = np.where(c3(b.alpha) > 0.5, b.img, under_img)  # off the box it is opaque tape
    mix = base_under * (1 - opacity) + under_img * opacity
    blend_colour(b.img, mix, tm)
    gl = 1.0 + 0.12 * tm * np.clip(smooth_noise(rng, *tm.shape, tw * 0.8), 0, 2)
    shade_image(b.img, gl.astype(np.float32))
    b.alpha = np.maximum(b.alpha, tm)
    b.params["peeled_fraction"] = round(float(frac), 3)
    b.params["defect_size"] = round(float(frac), 3)


