"""Render a synth belt seed once for :mod:`studies.belt_cache_eval` (issue 25): per line and view the parts (JPEG at
each view's quality, as ``studies/probe_belt_model.py`` renders them), 16 empty-belt frames to fit the camera's
belt model on and 4 more to test for false boxes, in ``runs/probe/cache_<seed>.pkl``. Rendering is the slow part of
the probe; with the cache a localiser change is measured in a minute.

    python studies/belt_cache_render.py SEED PARTS LINES WxH   # e.g. 111 40 4 960x540
"""
from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_belt_model import VIEWS, _empties, _render


def _enc(img: np.ndarray, ext: str, q: int = 95) -> bytes:
    ok, buf = cv2.imencode(ext, img, [cv2.IMWRITE_JPEG_QUALITY, q] if ext == ".jpg" else [])
    assert ok
    return buf.tobytes()


def main() -> None:
    seed, parts, lines = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    w, h = (int(v) for v in sys.argv[4].split("x"))
    out: dict[str, Any] = {"seed": seed, "size": (w, h), "cams": {}}
    members: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for i in range(parts):
        members.setdefault(i % lines, []).append((i, _render(seed, i, i % lines, (w, h))))
    for line, ms in members.items():
        fit = _empties(seed, line, lines, (w, h), 100000, 16)  # JPEG round trip done: stored losslessly
        test = _empties(seed, line, lines, (w, h), 200000, 4)
        for v in VIEWS:
            items = []
            for i, r in ms:
                t = r["truth"]["views"][v]
                items.append({"jpg": _enc(r["views"][v], ".jpg", int(t["scene"]["jpeg_quality"])), "truth": t["bbox"],
                              "kind": t["scene"]["kind"], "view": v, "look": r["truth"]["look"], "part": i,
                              "line": line})
            out["cams"][(line, v)] = {"fit": [_enc(f, ".png") for f in fit[v]],
                                      "test": [_enc(f, ".png") for f in test[v]], "items": items}
    Path("runs/probe").mkdir(parents=True, exist_ok=True)
    with open(f"runs/probe/cache_{seed}.pkl", "wb") as f:
        pickle.dump(out, f)
    print("done", seed)  # noqa: T201


if __name__ == "__main__":
    main()
