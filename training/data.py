"""Folder-per-class image loading (OpenCV), with unreadable files reported and skipped.

A data set is ``DATA/<class>/<image>``; the class folders give the labels. The positive (defect) class
is explicit: configured, or found by name (``defective`` / ``damaged``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge.judge.crops import locate_still, open_finder
from edge.judge.images import IMAGE_EXTS as IMAGE_EXTENSIONS
from edge.judge.images import read_bgr
from edge.judge.localize import NO_CROP, CropSpec, load_background
from edge.judge.model_package import model_input

log = logging.getLogger(__name__)

HASH_SIZE = 64  # px the images are reduced to before the dHash (which works on 32x32 anyway)
DEFAULT_POSITIVE_NAMES = ("defective", "damaged")


class DataError(ValueError):
    """The data folder cannot be used as given (one readable sentence)."""


@dataclass
class ImageSet:
    """Images found in a folder-per-class data set, in a stable (sorted) order."""

    root: Path
    classes: list[str]
    positive_class: str
    paths: list[Path] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def rel(self, path: Path) -> str:
        """Path relative to the data root, with forward slashes (how split.json stores it)."""
        return Path(path).relative_to(self.root).as_posix()


def discover_classes(data_dir: Path) -> list[str]:
    """Sub-folders of ``data_dir`` that hold at least one image, sorted by name."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data folder {data_dir} does not exist or is not a folder")
    found = [
        d.name
        for d in sorted(data_dir.iterdir())
        if d.is_dir() and not d.name.startswith(".") and any(image_files(d))
    ]
    return found


def resolve_positive(classes: list[str], positive_class: str | None) -> str:
    """The positive (defect) class: the given one, else ``defective`` or ``damaged`` if present."""
    if positive_class is not None:
        if positive_class not in classes:
            raise DataError(f"positive class {positive_class!r} is not one of the classes {classes}")
        return positive_class
    for name in DEFAULT_POSITIVE_NAMES:
        if name in classes:
            return name
    raise DataError(
        f"cannot tell which class is the defect among {classes}: pass --positive-class NAME "
        f"(auto-detection only knows {', '.join(DEFAULT_POSITIVE_NAMES)})"
    )


def image_files(folder: Path):
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."):
            yield p


def scan(data_dir: Path, classes: list[str] | None = None, positive_class: str | None = None) -> ImageSet:
    """List the images of a folder-per-class data set (nothing is decoded yet)."""
    data_dir = Path(data_dir).resolve()
    found = discover_classes(data_dir)
    if classes is None:
        classes = found
    else:
        missing = [c for c in classes if not (data_dir / c).is_dir()]
        if missing:
            raise DataError(f"class folder(s) {missing} not found in {data_dir} (found: {found})")
    if len(classes) < 2:
        raise DataError(f"need at least two class folders with images in {data_dir}, found {found}")
    positive = resolve_positive(list(classes), positive_class)
    images = ImageSet(root=data_dir, classes=list(classes), positive_class=positive)
    for c in classes:
        files = list(image_files(data_dir / c))
        if not files:
            raise DataError(f"class folder {data_dir / c} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        images.paths.extend(files)
        images.labels.extend([c] * len(files))
    if len(classes) > 2:
        log.warning(
            "%d classes; the model is binary: %r against all others", len(classes), positive
        )
    return images


def read_rgb(path: Path) -> np.ndarray | None:
    """Decode an image file to RGB uint8 (H, W, 3), or ``None`` if OpenCV cannot read it."""
    img = read_bgr(path)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize (stretch) to ``size`` x ``size``; INTER_AREA when shrinking, the same as the edge does."""
    h, w = rgb.shape[:2]
    interp = cv2.INTER_AREA if (h > size or w > size) else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interp)


@dataclass
class Loaded:
    """Decoded images (uint8 RGB, size x size, cropped as asked) with their paths; unreadable files listed apart."""

    paths: list[Path]
    labels: list[str]
    pixels: np.ndarray
    unreadable: list[Path]
    whole: int = 0  # images whose crop is the whole image (no box found, or it fills the frame)


def load_images(paths: list[Path], labels: list[str], size: int, crop: CropSpec | None = None,
                finder: str | None = None) -> Loaded:
    """Decode, crop and resize images with the edge's own function (:func:`edge.judge.model_package.model_input`),
    so a training tensor is exactly what the edge feeds the model; unreadable files are logged and skipped.
    ``finder``: a learned box finder file answering first (:func:`edge.judge.crops.locate_still`); it needs a
    crop method (its margins; the search where the finder finds no box)."""
    spec = crop or NO_CROP
    if finder and spec.method == "none":
        raise ValueError("--finder needs a crop method (--crop auto: the search where the finder finds no box)")
    box_finder = open_finder(finder) if finder else None
    keep_paths: list[Path] = []
    keep_labels: list[str] = []
    arrays: list[np.ndarray] = []
    bad: list[Path] = []
    whole = 0
    background = load_background(spec.background_file) if spec.background_file else None
    for p, lab in zip(paths, labels, strict=True):
        bgr = read_bgr(p)
        if bgr is None:
            bad.append(Path(p))
            continue
        loc = locate_still(bgr, spec, background, finder=box_finder) if spec.method != "none" else None
        whole += int(loc is None or loc.whole)
        arrays.append(model_input(bgr, spec, size, size, "area", located=loc))
        keep_paths.append(Path(p))
        keep_labels.append(lab)
    if bad:
        log.warning(
            "skipped %d unreadable image file(s) of %d, e.g. %s",
            len(bad), len(paths), ", ".join(str(b) for b in bad[:3]),
        )
    if spec.method != "none" and arrays:
        log.info("crop %s: box cropped in %d of %d images (the rest: whole image)", spec.describe(),
                 len(arrays) - whole, len(arrays))
    pixels = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)
    return Loaded(keep_paths, keep_labels, pixels, bad, whole)
