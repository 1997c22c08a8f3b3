"""The localiser with a learned empty belt on seeds rendered by ``studies/belt_cache_render.py`` (issue 25): per
line and view a BeltModel fitted on that camera's 16 empty frames, ``locate_for_still`` on every part (IoU with the
known box; a whole frame or no box counts 0 and as a fallback) and ``locate`` on the 4 test empties (a box there
is a false box). Prints the table by view, belt kind, frame size and box look; ``--sheet`` draws the 16 worst
(frame with the true box green and the found one red, beside the belt model's distance map).

    python studies/belt_cache_eval.py 111 112 113 [--sheet]
"""
from __future__ import annotations

import pickle
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_belt_model import _thumb

from edge.judge import localize
from edge.judge.beltmodel import BeltModel


def _dec(b: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)


def _summary(rs: list[dict[str, Any]]) -> str:
    iou = np.array([r["iou"] for r in rs])
    fb = np.array([r["fb"] for r in rs])
    return (f"n={len(rs):4d} >=0.8 {np.mean(iou >= 0.8):6.1%} >=0.5 {np.mean(iou >= 0.5):6.1%} "
            f"p10/50 {np.percentile(iou, 10):.2f}/{np.median(iou):.2f} fb {np.mean(fb):5.1%}")


def main() -> None:
    spec = localize.CropSpec()
    sheet = "--sheet" in sys.argv
    rows: list[dict[str, Any]] = []
    thumbs: list[tuple[float, np.ndarray]] = []
    fp = nfp = 0
    ts: list[float] = []
    for s in [a for a in sys.argv[1:] if not a.startswith("-")]:
        with open(f"runs/probe/cache_{s}.pkl", "rb") as f:
            d = pickle.load(f)
        for cam in d["cams"].values():
            m = BeltModel.fit([_dec(b) for b in cam["fit"]], spec.work_size)
            for it in cam["items"]:
                img = _dec(it["jpg"])
                t0 = time.perf_counter()
                loc = localize.locate_for_still(img, spec, belt=m)
                ts.append(time.perf_counter() - t0)
                ok = loc.found and not loc.whole and loc.bbox is not None
                iou = localize.iou(loc.bbox, it["truth"]) if ok and loc.bbox is not None else 0.0
                rows.append({**{k: it[k] for k in ("kind", "view", "look")}, "iou": iou, "fb": not ok,
                             "size": "x".join(map(str, d["size"]))})
                if sheet:
                    thumbs.append((iou, _thumb(img, m, it["truth"], loc, {**it, "empties": (iou, 0)})))
            for b in cam["test"]:
                loc = localize.locate(_dec(b), spec, belt=m)
                nfp += 1
                fp += int(loc.found and not loc.whole)
    print("all           ", _summary(rows), f"ms {1000 * np.median(ts):.0f}")  # noqa: T201
    for key in ("view", "kind", "size", "look"):
        for val in sorted({r[key] for r in rows}):
            print(f"{key}={val:10s}", _summary([r for r in rows if r[key] == val]))  # noqa: T201
    print("empty false boxes", fp, "of", nfp)  # noqa: T201
    if thumbs:
        thumbs.sort(key=lambda t: t[0])
        tiles = [cv2.resize(t, (640, 180)) for _, t in thumbs[:16]]
        while len(tiles) % 2:
            tiles.append(np.zeros_like(tiles[0]))
        cv2.imwrite("runs/probe/belt_cache_sheet.png", np.vstack([np.hstack(tiles[i:i + 2])
                                                                  for i in range(0, len(tiles), 2)]))


if __name__ == "__main__":
    main()
