"""Synthetic data: contact sheet. Part of :mod:`boxinspect.synth` (see its docstring)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

from boxinspect.synth.layout import DEFECTS


def contact_sheet(images: list[np.ndarray], path: Path, cols: int = 8, labels: list[str] | None = None) -> None:
    """Tile ``images`` (BGR uint8, any sizes; resized to the first one's size) into a PNG, with captions."""
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    if labels is not None and len(labels) != len(images):
        raise ValueError("labels must have one entry per image")
    th, tw = images[0].shape[:2]
    cols = max(1, min(cols, len(images)))
    rows = int(math.ceil(len(images) / cols))
    cap = 16 if labels else 0
    pad = 4
    sheet = np.full((rows * (th + cap + pad) + pad, cols * (tw + pad) + pad, 3), 255, np.uint8)
    scale = max(0.3, min(0.45, tw / 300))
    for i, im in enumerate(images):
        if im.ndim == 2:
            im = cv2.cvtColor(im, cv2.COLOR_GRAY2BGR)
        if im.shape[:2] != (th, tw):
            im = cv2.resize(im, (tw, th), interpolation=cv2.INTER_AREA)
        r, c = divmod(i, cols)
        y, x = pad + r * (th + cap + pad), pad + c * (tw + pad)
        sheet[y : y + th, x : x + tw] = im
        if labels:
            cv2.putText(sheet, str(labels[i])[:40], (x + 2, y + th + 12), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1,
                        cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), sheet):
        raise OSError(f"could not write {path}")


def dataset_sheet(out: Path, path: Path, per_row: int = 6) -> None:
    """Contact sheet of a written dataset: a row of OK images, then one row per defect type, labelled."""
    out = Path(out)
    man = json.loads((out / "manifest.json").read_text())
    items = [it for it in man["images"] if it["label"] == "ok"][:per_row]
    for d in DEFECTS:
        items += [it for it in man["images"] if it["defect"] == d][:per_row]
    imgs = [cv2.imread(str(out / it["file"])) for it in items]
    labels = ["ok" if it["defect"] is None else it["defect"] for it in items]
    contact_sheet(imgs, path, cols=per_row, labels=labels)


def video_sheet(video: Path, path: Path, width: int = 320) -> None:
    """Contact sheet of frames of a video with the ROI drawn (from its ground truth JSON): the first box
    entering, centred and leaving the ROI, the empty belt after it, then the next boxes centred."""
    video = Path(video)
    gt = json.loads(video.with_suffix(".json").read_text())
    roi, boxes = gt["roi"], gt["boxes"]
    b0 = boxes[0]
    want = [b0["enter_frame"] + 8, b0["centre_frame"], b0["exit_frame"] - 8]
    want.append((b0["exit_frame"] + boxes[1]["enter_frame"]) // 2 if len(boxes) > 1 else b0["exit_frame"] + 1)
    want += [b["centre_frame"] for b in boxes[1:5]]
    want = sorted(set(min(max(0, t), gt["frame_count"] - 1) for t in want))
    cap = cv2.VideoCapture(str(video))
    frames, labels = [], []
    t = 0
    while t <= want[-1]:
        ok, fr = cap.read()
        if not ok:
            break
        if t in want:
            cv2.rectangle(fr, (roi["x"], roi["y"]), (roi["x"] + roi["width"], roi["y"] + roi["height"]),
                          (0, 255, 255), 2)
            inside = [b for b in boxes if b["enter_frame"] <= t <= b["exit_frame"]]
            tag = f"frame {t}: " + (f"box {inside[0]['id']} {inside[0]['defect'] or 'ok'}" if inside else "empty ROI")
            h = int(round(fr.shape[0] * width / fr.shape[1]))
            frames.append(cv2.resize(fr, (width, h), interpolation=cv2.INTER_AREA))
            labels.append(tag)
        t += 1
    cap.release()
    contact_sheet(frames, path, cols=4, labels=labels)


