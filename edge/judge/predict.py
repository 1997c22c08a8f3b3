"""``boxinspect predict MODEL IMAGES...``: classify image files and folders (recursive) with a model package."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path
from typing import Any, TextIO

import cv2

from edge.judge.classifier import Classifier, ModelError
from edge.judge.fusion import part_and_view
from edge.judge.localize import already_cropped
from edge.state import effective_threshold

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
FIELDS = ["path", "label", "score", "is_defect", "latency_ms", "error"]


def collect_images(inputs: list[str]) -> list[Path]:
    """Files as given (any extension: a bad one gets a per-file error later); folders searched recursively."""
    out: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTS))
        else:
            out.append(p)
    return out


def _emit(text: str, stream: TextIO | None = None) -> None:
    """CLI output (results, per-file errors); library code logs instead."""
    stream = stream or sys.stdout
    stream.write(text + "\n")


def main(args: argparse.Namespace) -> int:
    clf = _load(args)
    if clf is None:
        return 2
    threshold = effective_threshold(clf.threshold, args.threshold)
    crops = bool(getattr(args, "crops", False))
    text_out = sys.stderr if args.json_out == "-" else sys.stdout
    _emit(
        f"# model {clf.model_id} ({clf.metadata.format}) runtime={clf.runtime_name} delegate={clf.delegate} "
        f"threshold={threshold:.3f} crop={_crop_text(clf, crops)}",
        text_out,
    )
    files = collect_images(args.images)
    if not files:
        _emit("error: no images found in " + " ".join(args.images), sys.stderr)
        return 1
    rows = _classify(clf, files, threshold, text_out, crops)
    ok = sum(1 for r in rows if r["error"] is None)
    n_defect = sum(1 for r in rows if r["is_defect"])
    _emit(f"# {ok} classified, {n_defect} {clf.metadata.positive_class}, {len(rows) - ok} unreadable", text_out)
    _write_results(args, clf, threshold, rows)
    return 0 if ok else 1


def _crop_text(clf: Classifier, crops: bool) -> str:
    """How the images are cropped, for the header line."""
    if crops:
        return "none (--crops: the images are the model's crops already)"
    finder = clf.metadata.finder
    return clf.metadata.crop.describe() + (f", learned box finder {finder.file} first" if finder is not None else "")


def _load(args: argparse.Namespace) -> Classifier | None:
    """The model package with its crop's background image checked (or --background's); None after saying why."""
    try:
        clf = Classifier.load(args.model, num_threads=args.threads)
    except ModelError as e:
        _emit(f"error: {e}", sys.stderr)
        return None
    background = getattr(args, "background", None)
    if background:
        if cv2.imread(str(background)) is None:
            _emit(f"error: --background {background} is not a readable image", sys.stderr)
            return None
        clf.metadata.crop = clf.metadata.crop.model_copy(update={"background_file": str(background)})
    ref = clf.metadata.crop.background_file
    if ref and clf.metadata.crop.method in ("background", "auto") and cv2.imread(ref) is None:
        _emit(f"error: the model crops against the background image {ref}, which is not readable here; "
              "pass --background FILE", sys.stderr)
        return None
    return clf


def _classify(clf: Classifier, files: list[Path], threshold: float, text_out: TextIO,
              crops: bool = False) -> list[dict[str, Any]]:
    """One result row per file (FIELDS), printed as it comes; an unreadable file gets its reason as ``error``."""
    rows: list[dict[str, Any]] = []
    width = max(len(str(f)) for f in files)
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR) if f.is_file() else None
        if img is None:
            reason = "no such file" if not f.exists() else "not a readable image"
            _emit(f"{str(f):{width}s}  ERROR {reason}", sys.stderr)
            rows.append({"path": str(f), "label": None, "score": None, "is_defect": None,
                         "latency_ms": None, "error": reason})
            continue
        pred = clf.predict(img, threshold=threshold, view=part_and_view(f)[1],  # <part>_<view>.jpg: per-view banks
                           located=already_cropped(img) if crops else None)
        _emit(f"{str(f):{width}s}  {pred.label:12s} {pred.score:.4f}  {pred.latency_ms:7.2f} ms", text_out)
        rows.append({"path": str(f), "label": pred.label, "score": round(pred.score, 6),
                     "is_defect": pred.is_defect, "latency_ms": round(pred.latency_ms, 3), "error": None})
    return rows


def _write_results(args: argparse.Namespace, clf: Classifier, threshold: float, rows: list[dict[str, Any]]) -> None:
    """--json (a file, or '-' for stdout) and --csv."""
    if args.json_out:
        doc = {"model": clf.model_id, "threshold": threshold, "runtime": clf.runtime_name,
               "delegate": clf.delegate, "results": rows}
        text = json.dumps(doc, indent=1)
        if args.json_out == "-":
            _emit(text)
        else:
            Path(args.json_out).write_text(text + "\n", encoding="utf-8")
    if args.csv_out:
        with open(args.csv_out, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=FIELDS)
            w.writeheader()
            w.writerows(rows)
