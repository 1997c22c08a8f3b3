"""Localiser IoU on synth line scenes with known boxes (parts.json): python studies/probe_localize_iou.py DATA."""
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from edge.judge import localize

root = Path(sys.argv[1])
d = json.loads((root / "parts.json").read_text())
spec = localize.CropSpec(method="auto")
ious, found = [], 0
for p in d["parts"]:
    for v in p["views"].values():
        bgr = cv2.imread(str(root / v["file"]))
        loc = localize.locate_for_still(bgr, spec)
        box = loc.bbox
        if loc.found and not loc.whole and box is not None:
            found += 1
            ious.append(localize.iou(box, v["bbox"]))
        else:
            ious.append(0.0)
a = np.array(ious)
print(f"{root.name}: {len(a)} views, box found {found}, IoU median {np.median(a):.2f}, mean {a.mean():.2f}, "  # noqa: T201
      f"IoU>=0.8 {np.mean(a >= 0.8):.2f}, IoU>=0.5 {np.mean(a >= 0.5):.2f}")
