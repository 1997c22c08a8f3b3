"""Reading image files the one way training, the learning loop and the localiser all decode them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

# the still-image files a data set, the feedback folders and the localiser's folders are made of
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def read_bgr(path: Path) -> np.ndarray | None:
    """Decode an image file to BGR uint8 (H, W, 3), OpenCV's order, or ``None`` if OpenCV cannot read it."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)  # also copes with non-ASCII paths
    except OSError:
        return None
    if data.size == 0:
        return None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        return None
    return np.asarray(img)
