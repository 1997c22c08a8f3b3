"""Crop a ``synth --scenes belt`` data set with a learned empty-belt model per line and view (issue 25).

For each line of the data set (parts.json: seed, n_lines, frame_size), renders ``--fit-empty`` frames of that
line's empty belt (other part indices than the data set's: other belt phases and noise), fits a BeltModel per
view, crops every image with ``auto`` + that model and writes ``OUT/<class>/<same name>.png`` (the crop the
model would see, same margin and square as training). Then ``boxinspect cv OUT --crop none`` is a CV of the
belt-model crops (the part grouping comes from the file names). Prints the IoU summary against the known boxes.

    python studies/belt_model_crops.py DATA OUT [--fit-empty 16]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from boxinspect.synth.belt import render_belt_part
from edge.judge import localize
from edge.judge.beltmodel import BeltModel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--fit-empty", type=int, default=16)
    args = ap.parse_args()
    doc = json.loads((args.data / "parts.json").read_text())
    seed, lines, size = int(doc["seed"]), int(doc["n_lines"]), tuple(doc["frame_size"])
    spec = localize.CropSpec(method="auto")
    models: dict[tuple[int, str], BeltModel] = {}
    for line in range(lines):
        frames: dict[str, list[np.ndarray]] = {}
        for k in range(args.fit_empty):
            r = render_belt_part(seed, 100000 + line + k * lines, "ok", None, line, size, empty=True)
            for v, img in r["empty"].items():
                frames.setdefault(v, []).append(img)
        for v, fr in frames.items():
            models[(line, v)] = BeltModel.fit(fr, spec.work_size)
    ious, whole = [], 0
    for p in doc["parts"]:
        for v, t in p["views"].items():
            img = cv2.imread(str(args.data / t["file"]), cv2.IMREAD_COLOR)
            loc = localize.locate_for_still(img, spec, belt=models[(int(p["line"]), v)])
            whole += int(loc.whole)
            ious.append(0.0 if loc.whole or loc.bbox is None else localize.iou(loc.bbox, t["bbox"]))
            out = args.out / Path(t["file"]).with_suffix(".png")
            out.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out), localize.crop(img, loc, spec))
    a = np.array(ious)
    print(f"{len(a)} images: IoU >= 0.8 {np.mean(a >= 0.8):.1%}, >= 0.5 {np.mean(a >= 0.5):.1%}, "  # noqa: T201
          f"median {np.median(a):.2f}, whole frame {whole}")


if __name__ == "__main__":
    main()
