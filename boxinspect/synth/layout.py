"""Synthetic data: layout. Part of :mod:`boxinspect.synth` (see its docstring)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

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


