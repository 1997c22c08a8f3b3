"""Synthetic data: line scenes. Part of :mod:`boxinspect.synth` (see its docstring).

A *line scene* is what a fixed camera over a real conveyor sees: a wide frame of textured belt with one box
covering 5-25% of it at a random position, rotation and scale. Every part is seen by two cameras:

* ``top``: straight down, the box's top face as in the dataset images;
* ``oblique``: tilted towards the belt's travel, so the top face is foreshortened and the box's front and
  side faces show below it.

The two views of one part show the same box (same defect) under each camera's own light, blur and noise,
and at the position where that camera caught it. Files are ``<part>_<view>.<ext>`` in one folder per class
(``ok/``, ``defective/``), and ``parts.json`` beside them holds the per-part ground truth: label, defect,
and for every view the box's axis-aligned bounding box ``[x0, y0, x1, y1]`` (x1/y1 exclusive, the box
body without its shadow), its rotated rectangle and the share of the frame it covers.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from boxinspect.synth._draw import c3, smooth_noise
from boxinspect.synth.boxes import Sprite
from boxinspect.synth.dataset import OneCvThread, child_rng
from boxinspect.synth.layout import CLASSES, DEFECTS, DIFFICULTIES, Layout, log
from boxinspect.synth.scene import BELTS, NoiseBank, Scene, belt_pattern, sample_scene
from boxinspect.synth.sprite import draw_box, finish_sprite

VIEWS = ("top", "oblique")
LINE_FRAME = (640, 480)  # (width, height) of a line-scene frame
AREA_RANGE = (0.05, 0.25)  # share of the frame the box body covers
LINE_BELTS = (*BELTS, (120, 84, 50), (150, 150, 146), (35, 35, 35))  # + blue, light grey, black rubber
LINE_DIFFICULTIES = (*DIFFICULTIES, "mixed")  # mixed: each part is easy or hard (half each)
_RENDER_SCALE = 1.3  # boxes are drawn at this scale and resized down, so detail survives small boxes


def line_layout(frame_size: tuple[int, int] = LINE_FRAME) -> Layout:
    """A frame that is all belt (no rails, no ROI): the camera looks down at the belt only."""
    w, h = int(frame_size[0]), int(frame_size[1])
    if w < 128 or h < 128:
        raise ValueError(f"frame_size {frame_size} is too small for line scenes (at least 128x128)")
    return Layout(w, h, 0, 0, 300, 0, h)


@dataclass
class LineKit:
    """Shared by the parts of one line dataset: belt textures and sensor-noise fields (seeded)."""

    patterns: list[np.ndarray]
    noise: NoiseBank
    layout: Layout

    @classmethod
    def make(cls, seed: int, frame_size: tuple[int, int] = LINE_FRAME) -> LineKit:
        layout = line_layout(frame_size)
        rng = child_rng(seed, 199)
        period = max(1024, layout.width + 64)
        patterns = [belt_pattern(rng, layout.height, period) for _ in range(6)]
        return cls(patterns, NoiseBank(rng, layout.height, layout.width, 1.0, n=6), layout)


def _belt_texture(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    """A belt texture for one view: the shared wear pattern plus, on most belts, a woven or ribbed structure."""
    h, w = base.shape
    kind = ("plain", "ribbed", "woven", "grid")[int(rng.integers(4))]
    tex = base.copy()
    if kind == "plain":
        return tex
    period = float(rng.uniform(6, 16))
    x = np.arange(w, dtype=np.float32)[None, :]
    y = np.arange(h, dtype=np.float32)[:, None]
    amp = float(rng.uniform(0.8, 1.8))
    if kind == "ribbed":  # modular plastic belt: ribs across the travel direction
        tex += amp * np.sin(2 * math.pi * x / period).astype(np.float32)
    elif kind == "woven":  # fabric belt: two crossing weaves
        tex += amp * 0.6 * (np.sin(2 * math.pi * (x + y) / period) + np.sin(2 * math.pi * (x - y) / period))
    else:  # grid: a rubber belt with a moulded square pattern
        gx = (np.abs(np.sin(math.pi * x / (2 * period))) > 0.93).astype(np.float32)
        gy = (np.abs(np.sin(math.pi * y / (2 * period))) > 0.93).astype(np.float32)
        tex -= amp * np.maximum(gx, gy)
    return tex.astype(np.float32)


def _resize_sprite(sp: Sprite, fx: float, fy: float) -> tuple[np.ndarray, np.ndarray, float, float]:
    """The sprite's colour and opacity resized by (fx, fy), and its centre in the resized sprite."""
    h, w = sp.alpha.shape
    size = (max(2, int(round(w * fx))), max(2, int(round(h * fy))))
    interp = cv2.INTER_AREA if fx * fy < 1 else cv2.INTER_LINEAR
    a = np.clip(cv2.resize(sp.alpha, size, interpolation=interp), 0, 1)
    premul = cv2.resize(sp.colour * c3(sp.alpha), size, interpolation=interp)
    col = np.clip(premul / c3(np.maximum(a, 1e-3)), 0, 255)
    return col.astype(np.float32), a.astype(np.float32), sp.cx * fx, sp.cy * fy


def _with_shadow(colour: np.ndarray, alpha: np.ndarray, cx: float, cy: float, k: float,
                 params: dict[str, Any]) -> Sprite:
    """A Sprite from colour and opacity: adds room and a soft drop shadow down and to the right."""
    off = (int(round(4 * k)), int(round(5 * k)))
    blur = max(1.0, 3.5 * k)
    pad = int(math.ceil(3 * blur)) + max(off)
    colour = cv2.copyMakeBorder(colour, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0.0, 0.0, 0.0))
    alpha = cv2.copyMakeBorder(alpha, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0.0)
    M = np.float32([[1, 0, off[0]], [0, 1, off[1]]])
    shadow = cv2.GaussianBlur(cv2.warpAffine(alpha, M, (alpha.shape[1], alpha.shape[0])), (0, 0), blur) * 0.4
    return Sprite(np.ascontiguousarray(colour), np.ascontiguousarray(alpha), np.ascontiguousarray(shadow),
                  int(round(cx + pad)), int(round(cy + pad)), dict(params))


def top_view(base: Sprite, s: float) -> Sprite:
    col, a, cx, cy = _resize_sprite(base, s, s)
    return _with_shadow(col, a, cx, cy, s, base.params)


def oblique_view(base: Sprite, s: float, rng: np.random.Generator) -> tuple[Sprite, dict[str, float]]:
    """The box seen by a camera tilted towards the belt's travel: the top face squashed vertically, and the
    faces that look at the camera extruded below it (darker, with a crease along the top edge)."""
    squash = float(rng.uniform(0.55, 0.8))
    col, a, cx, cy = _resize_sprite(base, s, s * squash)
    body = a > 0.5
    side_len = math.sqrt(max(1.0, float(body.sum())) / squash)  # about the box's side at this scale
    depth = int(round(side_len * rng.uniform(0.3, 0.55) * math.sqrt(1 - squash**2)))
    h, w = a.shape
    a_all = cv2.copyMakeBorder(a, 0, depth, 0, 0, cv2.BORDER_CONSTANT, value=0.0)
    top = a_all.copy()
    ext = a_all.copy()
    for d in range(1, depth + 1):  # sweep the outline down: the union is the body seen at an angle
        np.maximum(ext[d:], a_all[: a_all.shape[0] - d], out=ext[d:])
    side = np.clip(ext - top, 0, 1)
    # side colour: the cardboard's mean colour, darker, with a vertical falloff, a grain and a light edge
    mean = np.array([float(np.median(col[..., c][body])) if body.any() else 120.0 for c in range(3)], np.float32)
    yy = np.arange(ext.shape[0], dtype=np.float32)[:, None]
    # rows below the top face's lowest pixel in each column fade darker
    first = np.argmax(side > 0.5, axis=0).astype(np.float32)[None, :]
    fall = np.clip((yy - first) / max(1, depth), 0, 1)
    dark = float(rng.uniform(0.5, 0.72))
    grain = smooth_noise(rng, ext.shape[0], ext.shape[1], max(2.0, side_len / 12)) * 0.04
    side_gain = (dark * (1.0 - 0.18 * fall) + grain).astype(np.float32)
    side_col = c3(side_gain) * mean[None, None, :]
    col_all = cv2.copyMakeBorder(col, 0, depth, 0, 0, cv2.BORDER_CONSTANT, value=(0.0, 0.0, 0.0))
    # the crease where top meets side: a thin dark line under the top face
    edge = np.clip(cv2.dilate(top, np.ones((3, 1), np.uint8)) - top, 0, 1) * side
    side_col *= c3(1.0 - 0.35 * edge)
    tsum = c3(top)
    colour = col_all * tsum + side_col * (1.0 - tsum)
    alpha = np.maximum(top, ext)
    sp = _with_shadow(colour.astype(np.float32), alpha.astype(np.float32), cx, cy + depth / 2, s, base.params)
    return sp, {"squash": round(squash, 3), "depth_px": depth}


def _place(rng: np.random.Generator, sp: Sprite, layout: Layout) -> tuple[int, int]:
    """A random centre for the sprite so that all of the box's body stays inside the frame."""
    ys, xs = np.nonzero(sp.alpha > 0.02)
    x0, x1 = int(xs.min()) - sp.cx, int(xs.max()) + 1 - sp.cx
    y0, y1 = int(ys.min()) - sp.cy, int(ys.max()) + 1 - sp.cy
    m = 4
    lo_x, hi_x = m - x0, layout.width - m - x1
    lo_y, hi_y = m - y0, layout.height - m - y1
    cx = int(rng.integers(lo_x, hi_x + 1)) if hi_x >= lo_x else layout.width // 2 - (x0 + x1) // 2
    cy = int(rng.integers(lo_y, hi_y + 1)) if hi_y >= lo_y else layout.height // 2 - (y0 + y1) // 2
    return cx, cy


def box_truth(sp: Sprite, cx: int, cy: int, layout: Layout) -> dict[str, Any]:
    """Ground truth of one view: the box body's bounding box and rotated rectangle in frame pixels."""
    body = np.zeros((layout.height, layout.width), np.uint8)
    ox, oy = cx - sp.cx, cy - sp.cy
    h, w = sp.alpha.shape
    fx0, fy0 = max(0, ox), max(0, oy)
    fx1, fy1 = min(layout.width, ox + w), min(layout.height, oy + h)
    body[fy0:fy1, fx0:fx1] = (sp.alpha[fy0 - oy : fy1 - oy, fx0 - ox : fx1 - ox] > 0.5).astype(np.uint8)
    x, y, bw, bh = cv2.boundingRect(body)
    pts = cv2.findNonZero(body)
    (rcx, rcy), (rw, rh), ang = cv2.minAreaRect(pts)
    return {"bbox": [int(x), int(y), int(x + bw), int(y + bh)],
            "rotated": {"cx": round(rcx, 1), "cy": round(rcy, 1), "w": round(rw, 1), "h": round(rh, 1),
                        "angle": round(ang, 1)},
            "area_frac": round(float(body.sum()) / (layout.width * layout.height), 4)}


def render_line_part(seed: int, index: int, label: str, defect: str | None, difficulty: str = "easy",
                     kit: LineKit | None = None, empty: bool = False) -> dict[str, Any]:
    """Render one part in both views. Returns ``{"views": {view: BGR uint8}, "truth": {...}}`` and, with
    ``empty=True``, ``"empty": {view: the same frame without the box}`` (an empty-belt reference)."""
    if difficulty not in LINE_DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {LINE_DIFFICULTIES}, got {difficulty!r}")
    kit = kit or LineKit.make(seed)
    layout = kit.layout
    rng = child_rng(seed, 7, CLASSES.index(label), index)
    diff = difficulty if difficulty != "mixed" else ("easy" if rng.random() < 0.5 else "hard")
    b = draw_box(rng, diff, defect, _RENDER_SCALE)
    angle = float(rng.uniform(-90.0, 90.0))
    base = finish_sprite(b, angle)
    body = float((base.alpha > 0.5).sum())
    frac = float(rng.uniform(*AREA_RANGE))
    s = math.sqrt(frac * layout.width * layout.height / body)
    views: dict[str, np.ndarray] = {}
    empties: dict[str, np.ndarray] = {}
    truth: dict[str, Any] = {"label": label, "defect": defect, "difficulty": diff, "angle": round(angle, 1),
                             "target_area_frac": round(frac, 4), "box": base.params, "views": {}}
    for vi, view in enumerate(VIEWS):
        vrng = child_rng(seed, 8, CLASSES.index(label), index, vi)
        if view == "top":
            sp, extra = top_view(base, s), {}
        else:
            sp, extra = oblique_view(base, s, vrng)
        params = sample_scene(vrng, diff)
        params.belt_bgr = tuple(float(c) for c in np.array(LINE_BELTS[int(vrng.integers(len(LINE_BELTS)))],
                                                            np.float32) * vrng.uniform(0.85, 1.15))
        params.belt_contrast *= float(vrng.uniform(2.0, 5.0))
        pattern = _belt_texture(vrng, kit.patterns[int(vrng.integers(len(kit.patterns)))])
        scene = Scene(layout, params, vrng, pattern, window=(0, 0, layout.width, layout.height))
        cx, cy = _place(vrng, sp, layout)
        noise = kit.noise.draw(vrng) * params.noise
        belt_pos = int(vrng.integers(0, scene.period))
        views[view] = scene.render(belt_pos, [(scene.prepare(sp), cx, cy)], noise)
        if empty:
            empties[view] = scene.render(belt_pos, [], noise)
        truth["views"][view] = {**box_truth(sp, cx, cy, layout), "scene": params.to_dict(), **extra}
    out: dict[str, Any] = {"views": views, "truth": truth}
    if empty:
        out["empty"] = empties
    return out


def part_name(label: str, index: int, defect: str | None) -> str:
    """The part id in file names: ``ok-00012`` or ``defective-00012-dent`` (no ``_``: that separates the view)."""
    return f"{label}-{index:05d}" + (f"-{defect.replace('_', '-')}" if defect else "")


def make_line_dataset(out: Path, n_per_class: int = 150, seed: int = 0, difficulty: str = "easy",
                      frame_size: tuple[int, int] = LINE_FRAME, ext: str = "jpg", progress: bool = True) -> dict:
    """Write line scenes: ``out/<class>/<part>_<view>.<ext>`` (two views per part) and ``out/parts.json``
    (per-part ground truth); return a summary. Defective parts cycle through ``DEFECTS``."""
    if n_per_class < 1:
        raise ValueError("n_per_class must be >= 1")
    if ext not in ("jpg", "png"):
        raise ValueError(f"ext must be jpg or png, got {ext!r}")
    out = Path(out)
    t0 = time.time()
    for c in CLASSES:
        (out / c).mkdir(parents=True, exist_ok=True)
    earlier = {p for c in CLASSES for p in (out / c).glob(f"{c}-*_*.{ext}")}
    kit = LineKit.make(seed, frame_size)
    parts: list[dict[str, Any]] = []
    written: set[Path] = set()
    total, done = 2 * n_per_class, 0
    step = max(1, total // 10)
    with OneCvThread():
        for label in ("ok", "defective"):
            for i in range(n_per_class):
                defect = None if label == "ok" else DEFECTS[i % len(DEFECTS)]
                r = render_line_part(seed, i, label, defect, difficulty, kit)
                part = part_name(label, i, defect)
                files = {}
                for view, img in r["views"].items():
                    path = out / label / f"{part}_{view}.{ext}"
                    q = int(r["truth"]["views"][view]["scene"]["jpeg_quality"])
                    opts = [cv2.IMWRITE_JPEG_QUALITY, q] if ext == "jpg" else []
                    if not cv2.imwrite(str(path), img, opts):
                        raise OSError(f"could not write {path}")
                    written.add(path)
                    files[view] = f"{label}/{path.name}"
                    r["truth"]["views"][view]["file"] = files[view]
                parts.append({"part": part, **r["truth"]})
                done += 1
                if progress and (done % step == 0 or done == total):
                    log.info("synth line scenes: %d/%d parts (%.0f s)", done, total, time.time() - t0)
    for p in earlier - written:
        p.unlink()
    counts = {c: sum(1 for p in parts if p["label"] == c) for c in CLASSES}
    summary = {"out": str(out), "n_parts": len(parts), "n_images": len(parts) * len(VIEWS), "views": list(VIEWS),
               "counts": counts, "frame_size": list(frame_size), "seed": seed, "difficulty": difficulty,
               "classes": list(CLASSES), "positive_class": "defective", "seconds": round(time.time() - t0, 2)}
    manifest = {k: v for k, v in summary.items() if k not in ("seconds", "out")}
    manifest["parts"] = parts
    (out / "parts.json").write_text(json.dumps(manifest, indent=1))
    log.info("wrote %d parts x %d views (%s) to %s in %.1f s", len(parts), len(VIEWS), counts, out, summary["seconds"])
    return summary


def line_sheet(out: Path, path: Path, per_row: int = 4) -> None:
    """Contact sheet of written line scenes: per row, ``per_row`` parts side by side (top, oblique), with the
    ground-truth box drawn; first OK parts, then one row per defect type."""
    from boxinspect.synth.sheet import contact_sheet

    out = Path(out)
    man = json.loads((out / "parts.json").read_text())
    chosen = [p for p in man["parts"] if p["label"] == "ok"][:per_row]
    for d in DEFECTS:
        chosen += [p for p in man["parts"] if p["defect"] == d][:per_row]
    imgs, labels = [], []
    for p in chosen:
        for view in VIEWS:
            v = p["views"][view]
            img = cv2.imread(str(out / v["file"]))
            x0, y0, x1, y1 = v["bbox"]
            cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 255), 1)
            imgs.append(img)
            labels.append(f"{p['defect'] or 'ok'} {view} {v['area_frac']:.2f}")
    contact_sheet(imgs, path, cols=2 * per_row, labels=labels)
