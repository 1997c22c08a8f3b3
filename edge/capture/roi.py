"""Region of interest: crop it, draw it on a snapshot, and cheap per-frame image statistics."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import cv2
import numpy as np

from edge.config import RoiConfig

STATS_WIDTH = 160  # frame statistics are computed on a grey image downscaled to this width
_DEFECT_WORDS = {"defect", "defective", "damaged", "bad", "ng", "nok", "reject", "fail"}


def roi_box(shape: tuple[int, ...], roi: RoiConfig) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` of the ROI clamped to a frame of ``shape`` (H, W, ...).

    Raises ValueError naming the ``roi.*`` key when the ROI starts outside the frame.
    """
    h, w = int(shape[0]), int(shape[1])
    if roi.x >= w:
        raise ValueError(f"roi.x={roi.x} lies outside the frame ({w}x{h} pixels, x must be < {w})")
    if roi.y >= h:
        raise ValueError(f"roi.y={roi.y} lies outside the frame ({w}x{h} pixels, y must be < {h})")
    x1 = w if roi.width is None else min(w, roi.x + roi.width)
    y1 = h if roi.height is None else min(h, roi.y + roi.height)
    return roi.x, roi.y, x1, y1


def crop(image: np.ndarray, roi: RoiConfig) -> np.ndarray:
    """The ROI of ``image`` clamped to the frame (a view, not a copy)."""
    x0, y0, x1, y1 = roi_box(image.shape, roi)
    return image[y0:y1, x0:x1]


def is_defect_label(verdict: str) -> bool:
    """Guess from a label whether it names the defect class (used only when the caller does not say)."""
    return verdict.strip().lower() in _DEFECT_WORDS


# The verdict's label on the frame: black text on the green/red (WCAG AA: 9.3:1 on the green, 5.3:1 on the red;
# white had 2.27:1 on the green, issue 26)
OK_BGR = (0, 200, 0)
BAD_BGR = (0, 0, 255)
VERDICT_TEXT_BGR = (0, 0, 0)


def draw_overlay(
    image: np.ndarray,
    roi: RoiConfig,
    verdict: str | None,
    score: float | None,
    is_defect: bool | None = None,
    timestamp: float | None = None,
) -> np.ndarray:
    """A copy of ``image`` with the ROI rectangle, the last verdict (green OK / red DEFECT) and a UTC timestamp.

    ``is_defect`` picks the colour; when None it is guessed from ``verdict`` (``defect``, ``defective``,
    ``damaged``, ... are red). Without a verdict the rectangle is drawn in yellow.
    """
    out: np.ndarray = image.copy()
    if out.ndim == 2:
        out = cv2.cvtColor(out, cv2.COLOR_GRAY2BGR)
    h, w = out.shape[:2]
    scale = max(0.4, w / 1280)
    thick = max(2, round(3 * scale))
    x0, y0, x1, y1 = roi_box(out.shape, roi)
    if verdict is None:
        colour = (0, 220, 255)
    else:
        bad = is_defect if is_defect is not None else is_defect_label(verdict)
        colour = BAD_BGR if bad else OK_BGR
    cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), colour, thick)
    if verdict is not None:
        text = verdict.upper() if score is None else f"{verdict.upper()} {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = y0 - 6 if y0 - th - base - 6 >= 0 else min(h - base - 2, y0 + th + 6)
        cv2.rectangle(out, (x0, ty - th - 4), (x0 + tw + 8, ty + base), colour, -1)
        cv2.putText(out, text, (x0 + 4, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, VERDICT_TEXT_BGR, thick, cv2.LINE_AA)
    ts = datetime.fromtimestamp(time.time() if timestamp is None else timestamp, timezone.utc)
    stamp = ts.strftime("%Y-%m-%d %H:%M:%S UTC")
    (sw, sh), sbase = cv2.getTextSize(stamp, cv2.FONT_HERSHEY_SIMPLEX, scale * 0.8, 1)
    cv2.rectangle(out, (0, h - sh - sbase - 8), (sw + 8, h), (0, 0, 0), -1)
    cv2.putText(out, stamp, (4, h - sbase - 4), cv2.FONT_HERSHEY_SIMPLEX, scale * 0.8, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def small_grey(image: np.ndarray, width: int = STATS_WIDTH) -> np.ndarray:
    """A grey copy of ``image`` downscaled (area averaging) to at most ``width`` pixels wide."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    h, w = grey.shape[:2]
    if w > width:
        grey = cv2.resize(grey, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    return grey


def grey_stats(grey: np.ndarray) -> tuple[float, float]:
    """``(brightness, sharpness)`` of a grey image: mean grey level and variance of the Laplacian."""
    brightness = float(grey.mean())
    sharpness = float(cv2.Laplacian(grey, cv2.CV_32F).var())
    return brightness, sharpness


def frame_stats(image: np.ndarray) -> tuple[float, float]:
    """``(brightness 0-255, sharpness)`` computed cheaply on a downscaled grey copy of ``image``."""
    return grey_stats(small_grey(image))
