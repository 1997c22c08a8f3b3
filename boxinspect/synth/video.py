"""Synthetic data: video. Part of :mod:`boxinspect.synth` (see its docstring)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from boxinspect.synth.boxes import Sprite
from boxinspect.synth.dataset import OneCvThread, child_rng
from boxinspect.synth.layout import (
    BELT_SPEED,
    DEFECTS,
    DIFFICULTIES,
    LEAD_FRAMES,
    TAIL_FRAMES,
    Layout,
    layout_for,
    log,
)
from boxinspect.synth.scene import NoiseBank, Placed, Scene, sample_scene
from boxinspect.synth.sprite import make_box


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
    brng = child_rng(seed, 8, i)
    return make_box(brng, difficulty, defect, scale), brng


def plan_video(n_boxes: int = 16, defect_rate: float = 0.4, seed: int = 0, fps: int = 15,
               frame_size: tuple[int, int] = (640, 360), difficulty: str = "easy") -> VideoPlan:
    """Plan a conveyor video: which boxes (exactly ``round(n_boxes * defect_rate)`` defective, at random
    places, defect types cycling in random order), where they ride, and the ground truth."""
    _check_video_args(n_boxes, defect_rate, fps, difficulty)
    layout = layout_for(frame_size)
    rng = child_rng(seed, 7)
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
    n_frames, boxes_gt = _ground_truth(tracks, speed, layout)
    gt = {"fps": fps, "frame_count": int(n_frames), "frame_size": [layout.width, layout.height],
          "roi": layout.roi, "seed": seed, "difficulty": difficulty, "belt_speed_px_per_frame": round(speed, 3),
          "scene": params.to_dict(), "boxes": boxes_gt}
    return VideoPlan(layout, scene, tracks, gt, seed, difficulty)


def _ground_truth(tracks: list[dict[str, Any]], speed: float, layout: Any) -> tuple[int, list[dict[str, Any]]]:
    """The video's length (until the last box has left the ROI, plus a tail) and each box's frames: entering,
    leaving, centred, and fully inside the ROI. Adds each track's on-screen frames."""
    s, rx, ry = layout.roi_side, layout.roi_x, layout.roi_y
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
    return int(n_frames), boxes_gt


def video_frames(plan: VideoPlan) -> Iterator[np.ndarray]:
    """The frames of a planned video (BGR uint8), rendered one at a time; boxes are drawn when they come
    into view and dropped when they have left, so memory does not grow with the number of boxes."""
    speed = plan.gt["belt_speed_px_per_frame"]
    layout, scene = plan.layout, plan.scene
    noise = NoiseBank(child_rng(plan.seed, plan.noise_seed), layout.height, layout.width, scene.p.noise)
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
    with OneCvThread():
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


