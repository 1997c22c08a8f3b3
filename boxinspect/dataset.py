"""``boxinspect dataset export FEEDBACK_DIR --out DATA``: merge the line's labelled crops into a data set.

FEEDBACK_DIR is what the operator page writes (``feedback/<class>/<id>.jpg`` + ``.json``; dot-folders such as
``.frames`` and ``.unlabelled`` are not labels and are skipped). DATA is a folder-per-class data set,
``boxinspect train`` reads it; it may already hold images. A crop is copied as ``DATA/<class>/fb_<id>.jpg``
unless it is a duplicate: same perceptual hash (training/split.py's dHash over the eight rotations and
mirrors, at most ``--max-distance`` bits apart, by default the split's own near-duplicate threshold) as an image already in DATA or already taken from this export.
A duplicate found in another class is reported as a conflict (the same picture labelled two ways).
Exporting twice adds nothing the second time.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

PREFIX = "fb_"


class ExportError(ValueError):
    """The export cannot run as asked (one readable sentence)."""


@dataclass
class ClassCounts:
    existing: int = 0  # images in DATA/<class> before the export
    feedback: int = 0  # crops in FEEDBACK_DIR/<class>
    added: int = 0
    duplicates: int = 0  # skipped: same hash as an image of the same class
    conflicts: int = 0  # skipped: same hash as an image of ANOTHER class
    unreadable: int = 0


@dataclass
class ExportReport:
    out: str
    max_distance: int
    classes: dict[str, ClassCounts] = field(default_factory=dict)
    conflicts: list[dict[str, str]] = field(default_factory=list)

    @property
    def added(self) -> int:
        return sum(c.added for c in self.classes.values())

    @property
    def duplicates(self) -> int:
        return sum(c.duplicates + c.conflicts for c in self.classes.values())

    def to_dict(self) -> dict:
        return {"out": self.out, "max_distance": self.max_distance, "added": self.added, "duplicates": self.duplicates,
                "classes": {k: asdict(v) for k, v in self.classes.items()}, "conflicts": self.conflicts}

    def table(self) -> str:
        rows = [f"{'class':<16} {'existing':>8} {'feedback':>8} {'added':>6} {'dupes':>6} {'conflicts':>9} {'total':>6}"]
        for name, c in sorted(self.classes.items()):
            rows.append(f"{name:<16} {c.existing:>8} {c.feedback:>8} {c.added:>6} {c.duplicates:>6} {c.conflicts:>9} "
                        f"{c.existing + c.added:>6}")
        return "\n".join(rows)


def _images(folder: Path) -> list[Path]:
    """The images ``boxinspect train`` would read from one class folder (training/data.py's rule)."""
    from training.data import image_files  # TensorFlow-free

    return list(image_files(folder)) if folder.is_dir() else []


def _classes(root: Path) -> list[str]:
    from training.data import discover_classes

    return discover_classes(root)


def _hashes(path: Path) -> np.ndarray | None:
    from training.split import image_hashes  # TensorFlow-free: cv2 and numpy only

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    return image_hashes(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


class _Index:
    """Hashes seen so far (DATA plus what this export added) and the class of each."""

    def __init__(self) -> None:
        self._h: list[np.ndarray] = []
        self._cls: list[str] = []
        self._path: list[str] = []
        self._stack: np.ndarray | None = None

    def add(self, hashes: np.ndarray, cls: str, path: Path) -> None:
        self._h.append(hashes)
        self._cls.append(cls)
        self._path.append(str(path))
        self._stack = None

    def nearest(self, hashes: np.ndarray) -> tuple[int, str, str] | None:
        """(distance, class, path) of the closest known image (transform-invariant), or None if empty."""
        if not self._h:
            return None
        if self._stack is None:
            self._stack = np.stack(self._h)  # (N, 8)
        from training.split import popcount

        d = popcount(hashes[0] ^ self._stack).min(axis=1)  # identity hash vs all transforms of each
        i = int(d.argmin())
        return int(d[i]), self._cls[i], self._path[i]


def export(feedback_dir: str | Path, out: str | Path, max_distance: int | None = None, dry_run: bool = False) -> ExportReport:
    """Copy the crops of ``feedback_dir`` into ``out`` unless a near-identical image is there already.

    ``max_distance`` defaults to the split's near-duplicate threshold (training/split.py), so what the export
    calls new the split will not call a duplicate either. A JPEG re-encode of a photo is 0-2 bits away.
    """
    from training.split import DEFAULT_DUP_THRESHOLD

    max_distance = DEFAULT_DUP_THRESHOLD if max_distance is None else max_distance
    fb, data = Path(feedback_dir), Path(out)
    if not fb.is_dir():
        raise ExportError(f"{fb}: not a folder (expected feedback/<class>/*.jpg as the operator page writes)")
    classes = _classes(fb)
    if not classes:
        raise ExportError(f"{fb}: no class folder with images (expected feedback/<class>/*.jpg)")
    if not 0 <= max_distance <= 64:
        raise ExportError(f"--max-distance must be 0..64 bits, got {max_distance}")
    report = ExportReport(out=str(data), max_distance=max_distance)
    index = _Index()
    if data.is_dir():
        for cls in _classes(data):
            counts = report.classes.setdefault(cls, ClassCounts())
            for p in _images(data / cls):
                h = _hashes(p)
                counts.existing += 1
                if h is not None:
                    index.add(h, cls, p)
    for cls in classes:
        counts = report.classes.setdefault(cls, ClassCounts())
        for p in _images(fb / cls):
            counts.feedback += 1
            h = _hashes(p)
            if h is None:
                counts.unreadable += 1
                log.warning("%s: not a readable image, skipped", p)
                continue
            near = index.nearest(h)
            if near is not None and near[0] <= max_distance:
                if near[1] == cls:
                    counts.duplicates += 1
                else:
                    counts.conflicts += 1
                    report.conflicts.append({"feedback": str(p), "class": cls, "existing": near[2], "existing_class": near[1]})
                continue
            target = data / cls / f"{PREFIX}{p.stem}{p.suffix.lower()}"
            if not dry_run:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, target)
            index.add(h, cls, target)
            counts.added += 1
    return report


def _main(args: argparse.Namespace) -> int:
    try:
        report = export(args.feedback_dir, args.out, max_distance=args.max_distance, dry_run=args.dry_run)
    except ExportError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    out = sys.stdout
    out.write(report.table() + "\n")
    out.write(f"{'would add' if args.dry_run else 'added'} {report.added} image(s) to {report.out}; "
              f"{report.duplicates} duplicate(s) skipped (same perceptual hash, at most {report.max_distance} bit(s) apart)\n")
    for c in report.conflicts:
        out.write(f"conflict: {c['feedback']} ({c['class']}) looks like {c['existing']} ({c['existing_class']})\n")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report.to_dict(), indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help="data set tools: merge the operator page's feedback into a training set")
    dsub = p.add_subparsers(dest="dataset_command", metavar="ACTION")
    e = dsub.add_parser(
        "export",
        help="merge FEEDBACK_DIR/<class>/ crops into a folder-per-class data set, skipping duplicates",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("feedback_dir", metavar="FEEDBACK_DIR", help="operator.feedback_dir of the daemon (feedback/)")
    e.add_argument("--out", required=True, help="the data set folder to create or merge into (DATA/<class>/)")
    e.add_argument("--max-distance", type=int, default=None,
                   help="Hamming distance (bits of 64, over rotations and mirrors) at or below which two images count "
                   "as the same picture (default: the split's near-duplicate threshold, 6)")
    e.add_argument("--dry-run", action="store_true", help="report what would be added, copy nothing")
    e.add_argument("--json", dest="json_out", default=None, help="also write the report as JSON to this file")
    e.set_defaults(func=_main)
