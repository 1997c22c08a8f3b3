"""Belt models learned from a data set's own photos (issue 25): cluster by camera, mask the boxes, fit, locate.

Renders ``boxinspect synth --scenes belt`` parts in memory (JPEG round trip at each view's quality, cached under
``runs/selfprobe/``), then per image:

* ``v5``: ``auto`` without a model (the reference-free search: what stills get today);
* ``empties``: ``auto`` with a :class:`BeltModel` fitted on 16 frames of that camera's EMPTY belt (the bar: what
  ``--empty DIR`` or the daemon gives);
* ``self``: ``auto`` with the model :func:`edge.judge.selfbelt.fit_self_belt` learns from the photos of the
  camera group :func:`edge.judge.selfbelt.group_cameras` found (no line/view labels); groups under MIN_PHOTOS: v5;
* ``self_true``: the same fit on the true camera groups (line, view): what clustering costs.

Cluster purity: the share of photos whose group's majority camera is their own, and groups vs true cameras.

    python studies/probe_self_belt.py --seed 121 --parts 60 --lines 4 --size 960x540 [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from boxinspect.synth import belt as belt_synth
from boxinspect.synth.belt import render_belt_part
from boxinspect.synth.layout import DEFECTS
from edge.judge import localize, selfbelt
from edge.judge.beltmodel import BeltModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_belt_model import by_view_and_kind, summary

VIEWS = ("top", "oblique")
CACHE = Path("runs/selfprobe")


def _jpeg(img: np.ndarray, q: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
    assert ok
    return buf.tobytes()


def _dec(b: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)


def _render(seed: int, index: int, line: int, size: tuple[int, int], empty: bool = False) -> dict[str, Any]:
    label = "ok" if index % 2 == 0 else "defective"
    defect = None if label == "ok" else DEFECTS[index % len(DEFECTS)]
    return render_belt_part(seed, index, label, defect, line, size, empty=empty)


def scenes(seed: int, parts: int, lines: int, size: tuple[int, int], n_empty: int = 16) -> dict[str, Any]:
    """Photos (JPEG bytes) with their camera and truth, and n_empty empty frames per camera; cached."""
    area = "" if belt_synth.BELT_AREA_RANGE == (0.02, 0.25) else "_a{}-{}".format(*belt_synth.BELT_AREA_RANGE)
    path = CACHE / f"s{seed}_p{parts}_l{lines}_{size[0]}x{size[1]}{area}.pkl"
    if path.exists():
        with path.open("rb") as f:
            return pickle.load(f)  # type: ignore[no-any-return]
    photos: list[dict[str, Any]] = []
    for i in range(parts):
        r = _render(seed, i, i % lines, size)
        for v in VIEWS:
            t = r["truth"]["views"][v]
            photos.append({"part": i, "line": i % lines, "view": v, "kind": t["scene"]["kind"],
                           "bbox": t["bbox"], "area": t["area_frac"],
                           "jpg": _jpeg(r["views"][v], int(t["scene"]["jpeg_quality"]))})
    empties: dict[str, list[bytes]] = defaultdict(list)
    for line in range(lines):
        for k in range(n_empty):
            r = _render(seed, 100000 + line + k * lines, line, size, empty=True)
            for v in VIEWS:
                q = int(r["truth"]["views"][v]["scene"]["jpeg_quality"])
                empties[f"{line}/{v}"].append(_jpeg(r["empty"][v], q))
    res = {"photos": photos, "empties": dict(empties)}
    CACHE.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(res, f)
    return res


def _score(loc: localize.Located, truth: list[int]) -> tuple[float, bool]:
    box = loc.found and not loc.whole and loc.bbox is not None
    return (localize.iou(loc.bbox, truth) if box and loc.bbox is not None else 0.0), not box


def _purity(groups: list[list[int]], cams: list[str]) -> dict[str, Any]:
    majority = sum(Counter(cams[i] for i in g).most_common(1)[0][1] for g in groups)
    return {"purity": majority / len(cams), "groups": len(groups), "cameras": len(set(cams)),
            "sizes": [len(g) for g in groups]}


def _fit_groups(imgs: list[np.ndarray], groups: list[list[int]], spec: localize.CropSpec,
                out: list[tuple[float, bool]], truths: list[list[int]]) -> None:
    for g in groups:
        if len(g) < selfbelt.MIN_PHOTOS:
            for i in g:
                out[i] = _score(localize.locate_for_still(imgs[i], spec), truths[i])
            continue
        sb = selfbelt.fit_self_belt([imgs[i] for i in g], spec)
        for i, loc in zip(g, sb.located, strict=True):  # each photo with the model of the others
            out[i] = _score(loc, truths[i])


def run(args: argparse.Namespace) -> dict[str, Any]:
    size = (int(args.size.split("x")[0]), int(args.size.split("x")[1]))
    if args.area:
        belt_synth.BELT_AREA_RANGE = tuple(float(v) for v in args.area.split(","))  # type: ignore[assignment]
    for name in ("GROW", "MIN_VALID", "TRIM"):
        if getattr(args, name.lower()) is not None:
            setattr(selfbelt, name, type(getattr(selfbelt, name))(getattr(args, name.lower())))
    if args.no_fill:
        selfbelt.FILL_SIGMAS = ()
    spec = localize.CropSpec(method="auto")
    data = scenes(args.seed, args.parts, args.lines, size)
    photos = data["photos"]
    imgs = [_dec(p["jpg"]) for p in photos]
    cams = [f"{p['line']}/{p['view']}" for p in photos]
    truths = [p["bbox"] for p in photos]
    t0 = time.perf_counter()
    groups = selfbelt.group_cameras([selfbelt.thumbnail(im) for im in imgs], [im.shape[:2] for im in imgs],
                                    args.camera_distance)
    purity = _purity(groups, cams) | {"s": time.perf_counter() - t0}
    n = len(imgs)
    res: dict[str, list[tuple[float, bool]]] = {k: [(0.0, True)] * n for k in ("v5", "empties", "self", "self_true")}
    res["v5"] = [_score(localize.locate_for_still(im, spec), t) for im, t in zip(imgs, truths, strict=True)]
    by_cam: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(cams):
        by_cam[c].append(i)
    for c, idx in by_cam.items():
        m = BeltModel.fit([_dec(b) for b in data["empties"][c]], spec.work_size)
        for i in idx:
            res["empties"][i] = _score(localize.locate_for_still(imgs[i], spec, belt=m), truths[i])
    t0 = time.perf_counter()
    _fit_groups(imgs, groups, spec, res["self"], truths)
    fit_s = time.perf_counter() - t0
    if purity["purity"] < 1.0:
        _fit_groups(imgs, list(by_cam.values()), spec, res["self_true"], truths)
    else:
        res["self_true"] = res["self"]
    rows = [{k: photos[i][k] for k in ("part", "line", "view", "kind", "area")} | {m: res[m][i] for m in res}
            for i in range(n)]
    return {"seed": args.seed, "size": list(size), "lines": args.lines, "parts": args.parts, "purity": purity,
            "area": belt_synth.BELT_AREA_RANGE, "grow": selfbelt.GROW, "trim": selfbelt.TRIM,
            "min_valid": selfbelt.MIN_VALID, "fill": selfbelt.FILL_SIGMAS,
            "fit_s": fit_s, "rows": rows}


def report(res: dict[str, Any]) -> None:
    groups = by_view_and_kind(res["rows"])
    print(f"seed {res['seed']} size {res['size']} lines {res['lines']} parts {res['parts']} "  # noqa: T201
          f"purity {res['purity']} fit {res['fit_s']:.1f}s")
    for g, rs in groups.items():
        for name in ("v5", "empties", "self", "self_true"):
            print(f"  {g:14s} {name:9s} {summary(rs, name)}")  # noqa: T201


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--parts", type=int, default=60)
    ap.add_argument("--lines", type=int, default=4)
    ap.add_argument("--size", default="960x540")
    ap.add_argument("--camera-distance", type=float, default=selfbelt.CAMERA_DISTANCE)
    ap.add_argument("--area", help="box area range, e.g. 0.02,0.08 (the synth default 0.02-0.25)")
    ap.add_argument("--grow", type=float)
    ap.add_argument("--min-valid", type=int)
    ap.add_argument("--trim", type=float)
    ap.add_argument("--no-fill", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    res = run(args)
    report(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res))


if __name__ == "__main__":
    main()
