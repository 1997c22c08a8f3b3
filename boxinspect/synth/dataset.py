"""Synthetic data: dataset. Part of :mod:`boxinspect.synth` (see its docstring)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from boxinspect.synth.layout import CLASSES, DATASET_FRAME, DEFECTS, DIFFICULTIES, layout_for, log
from boxinspect.synth.scene import NoiseBank, Scene, belt_pattern, sample_scene
from boxinspect.synth.sprite import make_box


class OneCvThread:
    """OpenCV's thread pool costs more than it gains on these small images; use one thread meanwhile."""

    def __enter__(self) -> None:
        self.n = cv2.getNumThreads()
        cv2.setNumThreads(1)

    def __exit__(self, *exc: object) -> None:
        cv2.setNumThreads(self.n)


def child_rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *keys]))


@dataclass
class _DatasetKit:
    """Shared by the images of one dataset: a few belt textures and unit sensor-noise fields (seeded)."""

    patterns: list[np.ndarray]
    noise: NoiseBank

    @classmethod
    def make(cls, seed: int) -> _DatasetKit:
        layout = layout_for(DATASET_FRAME)
        rng = child_rng(seed, 99)
        patterns = [belt_pattern(rng, layout.belt_bottom - layout.belt_top, 1024) for _ in range(6)]
        return cls(patterns, NoiseBank(rng, layout.roi_side, layout.roi_side, 1.0, n=6))


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
    with OneCvThread():
        for ci, label in enumerate(("ok", "defective")):
            for i in range(n_per_class):
                rng = child_rng(seed, ci, i)
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


