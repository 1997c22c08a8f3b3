"""Which crop for a still: the reference-free search, the self-learned belt, or a policy combining them (issue 25).

Localisation only (no CNN). For every photo of DATA (``selfbelt.data_photos``: what train / cv / localize use)
it records the reference-free answer (``auto`` without a model: localiser v7's salient + texture search) and the
self-learned belt's answer (``selfbelt.learn_stills``, as ``cv --crop auto`` does), each with what the localiser
says about itself (method, contrast, what else stands out), the camera group it fell in, and the IoU with the
known box (synth ``parts.json``, by ``crops.add_truth``). Then the policies, none of which looks at the truth:

* ``free``: the reference-free search only (``--no-self-belt``);
* ``self``: the self-learned belt (today's default);
* ``free_then_self``: the reference-free box; the self-learned belt's where the search falls back (whole frame);
* ``self_then_free``: the self-learned belt's box; the reference-free one where it gives the whole frame;
* ``confident_free``: the reference-free box where it is confident (``localize.confident``: a texture box that
  stands out clearly with little else, or a salient box), else the self-learned belt's;
* ``tight_group``: per camera group, the self-learned belt where the group's photos are alike
  (:func:`group_spread` <= ``--spread``, default ``MAX_SPREAD``: one fixed camera), else the reference-free search;
* ``agree_group``: per camera group, the self-learned belt where its boxes and the reference-free boxes agree
  (IoU >= 0.5) on at least ``--agree`` of the group's photos, else the reference-free search.

IoU >= 0.8 counts a whole-frame crop as 0, as studies/probe_self_belt.py does.

    python studies/self_belt_policy.py DATA... [--json OUT.json] [--rows PREVIOUS.json]
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from edge.judge import crops, localize, selfbelt
from edge.judge.images import read_bgr

log = logging.getLogger("self_belt_policy")
SPEC = localize.CropSpec(method="auto")
# Lab units: dev belt cameras 3.7-6.4 (the unit test's seed-17 scene 6.0-7.1), dev line-scene groups 8.0-10.1.
# 7.0 at first; 7.5 after the seed-17 scene, before any held-out result was read
MAX_SPREAD = 7.5


def group_spread(thumbs: list[np.ndarray], group: list[int]) -> float:
    """How alike a camera group's photos are: the median pairwise thumbnail distance (``selfbelt.thumbnail_distances``,
    the grouping's own) over the group. One fixed camera's photos differ where the box is; photos joined because
    their belts look alike (line scenes: another belt per part) differ more."""
    if len(group) < 2:
        return 0.0
    d = selfbelt.thumbnail_distances(np.stack([thumbs[i] for i in group]))
    return float(np.median(d[np.triu_indices(len(group), 1)]))


def _row(loc: localize.Located) -> dict[str, Any]:
    box = not loc.whole and loc.bbox is not None
    return {"method": loc.method, "whole": not box, "bbox": list(loc.bbox) if box and loc.bbox else None,
            "contrast": round(loc.contrast, 3), "others": round(loc.others, 3),
            "confident": bool(loc.method == "salient" or localize.confident(loc))}


def _ious(data: Path, paths: list[Path], locs: list[localize.Located]) -> list[float]:
    recs = [crops.record(p.relative_to(data).as_posix(), loc) for p, loc in zip(paths, locs, strict=True)]
    if not crops.add_truth(recs, data):
        raise SystemExit(f"{data}: no parts.json (known boxes)")
    return [float(r.iou or 0.0) for r in recs]


def measure(data: Path) -> list[dict[str, Any]]:
    """Per photo: the camera group, both answers and their IoU with the known box."""
    paths = selfbelt.data_photos(data)
    imgs = [read_bgr(p) for p in paths]
    keep = [i for i, im in enumerate(imgs) if im is not None]
    paths, imgs = [paths[i] for i in keep], [imgs[i] for i in keep]
    localize.forget_stills()
    t0 = time.monotonic()
    free = [localize.locate_for_still(im, SPEC) for im in imgs]
    t1 = time.monotonic()
    selfbelt.learn_stills(paths, SPEC)
    own = [localize.locate_for_still(im, SPEC) for im in imgs]
    t2 = time.monotonic()
    log.info("%s: reference-free %.0f s, self-learned belt %.0f s for %d photos", data, t1 - t0, t2 - t1, len(paths))
    rows = [{"path": p.relative_to(data).as_posix(), "free": _row(f) | {"iou": fi}, "self": _row(o) | {"iou": oi}}
            for p, f, o, fi, oi in zip(paths, free, own, _ious(data, paths, free), _ious(data, paths, own),
                                       strict=True)]
    return add_groups(data, rows)


def add_groups(data: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row's camera group (``selfbelt.group_cameras``, as learn_stills finds them), its size and spread."""
    imgs = [read_bgr(data / r["path"]) for r in rows]
    thumbs = [selfbelt.thumbnail(im) for im in imgs if im is not None]
    groups = selfbelt.group_cameras(thumbs, [im.shape[:2] for im in imgs if im is not None])
    for gi, g in enumerate(groups):
        spread = group_spread(thumbs, g)
        for i in g:
            rows[i] |= {"group": gi, "group_n": len(g), "spread": round(spread, 3)}
    return rows


def _pick(rows: list[dict[str, Any]], policy: str, agree: float, spread: float) -> list[dict[str, Any]]:
    if policy in ("free", "self"):
        return [r[policy] for r in rows]
    if policy == "free_then_self":
        return [r["self"] if r["free"]["whole"] else r["free"] for r in rows]
    if policy == "self_then_free":
        return [r["free"] if r["self"]["whole"] else r["self"] for r in rows]
    if policy == "tight_group":
        return [r["self"] if r["group_n"] >= selfbelt.MIN_PHOTOS and r["spread"] <= spread else r["free"] for r in rows]
    if policy == "confident_free":
        return [r["free"] if r["free"]["confident"] and not r["free"]["whole"] else r["self"] for r in rows]
    by_group: dict[int, list[bool]] = defaultdict(list)
    for r in rows:
        f, s = r["free"], r["self"]
        by_group[r["group"]].append(bool(f["bbox"] and s["bbox"] and localize.iou(f["bbox"], s["bbox"]) >= 0.5))
    use_self = {g: r["group_n"] >= selfbelt.MIN_PHOTOS and float(np.mean(by_group[g])) >= agree
                for g, r in ((r["group"], r) for r in rows)}
    return [r["self"] if use_self[r["group"]] else r["free"] for r in rows]


POLICIES = ("free", "self", "free_then_self", "self_then_free", "confident_free", "tight_group", "agree_group")


def summary(rows: list[dict[str, Any]], agree: float, spread: float) -> dict[str, dict[str, float]]:
    out = {}
    for pol in POLICIES:
        got = _pick(rows, pol, agree, spread)
        out[pol] = {"iou08": float(np.mean([g["iou"] >= 0.8 and not g["whole"] for g in got])),
                    "whole": float(np.mean([g["whole"] for g in got])), "n": len(got)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, nargs="+", help="data folders (synth, with parts.json)")
    ap.add_argument("--json", type=Path, help="write the per-photo rows and the summary")
    ap.add_argument("--agree", type=float, default=0.5, help="agree_group: share of a group's photos that agree")
    ap.add_argument("--spread", type=float, default=MAX_SPREAD, help="tight_group: largest group spread")
    ap.add_argument("--rows", type=Path, help="a JSON this wrote: take the rows of DATA from it (groups recomputed)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sets: dict[str, list[dict[str, Any]]] = {}
    for d in a.data:
        cached = json.loads(a.rows.read_text())["sets"].get(d.name) if a.rows else None
        sets[d.name] = add_groups(d, cached["rows"]) if cached else measure(d)
    res = {name: {"rows": rows, "summary": summary(rows, a.agree, a.spread)} for name, rows in sets.items()}
    for name, r in res.items():
        for pol, s in r["summary"].items():
            log.info("%s %-15s IoU>=0.8 %.1f%%  whole %.1f%%  (n %d)", name, pol, 100 * s["iou08"], 100 * s["whole"],
                     s["n"])
    if a.json:
        a.json.write_text(json.dumps({"sets": res}, indent=0))


if __name__ == "__main__":
    main()
