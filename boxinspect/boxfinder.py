"""``boxinspect boxfinder build``: render training scenes, train the learned box finder, export it as a .tflite.

The steps: synth scenes with known boxes from TRAINING seeds (:func:`render`: per seed a belt set and a mixed line
set) -> the frozen backbone's per-cell features and labels, sampled (training/boxfinder.py) -> the head fitted ->
the whole graph exported as float32 LiteRT (convert/common.py ``convert_bytes``) with a dynamic input, so one file
serves 16:9 and 4:3 frames (edge/judge/boxfinder.py resizes to a long side of 640). Use it with
``boxinspect localize DATA --finder F.tflite``. TensorFlow is imported inside the handler only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# dev and held-out seeds of the issue-25 studies: never rendered for training
BANNED_SEEDS = frozenset({3, 21, 7, 31, 32, 3001, 3002, 3003, 3004, 4101, 4102})
# --sizes of `boxfinder build`: on dev, mixed sizes lifted 640x480 belts from 66 to 82% IoU >= 0.8 at the same
# photo count and cost no measurable accuracy at 960x540 (docs/RESULTS.md "The learned box finder and frame sizes")
DEFAULT_SIZES = "960x540,640x480,1280x720"
MIN_SIDE, MAX_SIDE = 128, 4096  # px: the frame sizes --sizes accepts


def render(out: Path, seeds: list[int], parts: int, sizes: list[tuple[int, int]] | None = None,
           kinds: tuple[str, ...] = ("belt", "line")) -> list[Path]:
    """Training scenes (TRAINING seeds only): per seed a belt set and a mixed line set (``kinds``), ``parts`` per
    class. ``sizes``: the belt frame sizes (width, height), taken in turn by the seed's place in ``seeds`` (default
    the belt renderer's 960x540 for every seed); a belt set of another size is named ``belt<seed>_<W>x<H>``, so
    sets of every size share one ``work`` folder. Line sets keep the line renderer's 640x480. Existing sets are
    kept. Returns the data set folders."""
    from boxinspect.synth.belt import BELT_FRAME, make_belt_dataset
    from boxinspect.synth.line import make_line_dataset

    made = []
    for i, s in enumerate(seeds):
        if s in BANNED_SEEDS:
            raise SystemExit(f"seed {s} is a dev or held-out seed")
        size = tuple(sizes[i % len(sizes)]) if sizes else BELT_FRAME
        name = f"belt{s}" if size == BELT_FRAME else f"belt{s}_{size[0]}x{size[1]}"
        if "belt" in kinds:
            if not (out / name / "parts.json").exists():
                make_belt_dataset(out / name, n_per_class=parts, seed=s, frame_size=(size[0], size[1]),
                                  empty_frames=0, progress=False)
            made.append(out / name)
        if "line" in kinds:
            if not (out / f"line{s}" / "parts.json").exists():
                make_line_dataset(out / f"line{s}", n_per_class=parts, seed=s, difficulty="mixed", progress=False)
            made.append(out / f"line{s}")
        log.info("rendered seed %d", s)
    return made


def build(out: Path, seeds: list[int], parts: int, work: Path, weights: Path, cells: int = 200, epochs: int = 20,
          kinds: tuple[str, ...] = ("belt", "line"), seed: int = 0, sizes: list[tuple[int, int]] | None = None) -> Path:
    """Render, train and export the finder to ``out`` (float32 .tflite) and its build record ``out`` + ``.json``
    (:func:`build_record`); returns ``out``. ``seed``: of the cell sampling and the head's initialisation (not of
    the scenes); ``sizes``: the belt frame sizes (:func:`render`)."""
    from boxinspect.synth.belt import BELT_FRAME
    from convert.common import convert_bytes
    from training.boxfinder import feature_model, finder_model, fit_head, training_cells

    t0 = time.monotonic()
    sets = render(work, seeds, parts, sizes=sizes, kinds=kinds)
    log.info("%d training sets under %s (%.0f s)", len(sets), work, time.monotonic() - t0)
    fmodel = feature_model(weights)
    x, y = training_cells(fmodel, sets, cells, seed=seed)
    head = fit_head(x, y, epochs=epochs, seed=seed)
    blob = convert_bytes(finder_model(fmodel, head), "float32", None)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(blob)
    record = build_record(blob, sets, {"seeds": seeds, "parts": parts, "scenes": list(kinds), "cells": cells,
                                       "epochs": epochs, "seed": seed,
                                       "sizes": [f"{w}x{h}" for w, h in (sizes or [BELT_FRAME])],
                                       "training_cells": int(len(y)), "positive_share": round(float(y.mean()), 4)})
    record_path(out).write_text(json.dumps(record, indent=1))
    log.info("wrote %s (%.1f MB) and %s in %.0f s", out, len(blob) / 1e6, record_path(out).name,
             time.monotonic() - t0)
    return out


def record_path(model: Path) -> Path:
    """The build record beside a finder: ``F.tflite`` -> ``F.tflite.json``."""
    return model.with_name(model.name + ".json")


def build_record(blob: bytes, sets: list[Path], options: dict[str, Any]) -> dict[str, Any]:
    """What a build wrote and from what: the options, every training set with its frame size and photo count,
    the model's sha256 and the edge decode constants it was built for. A record, not a verified package sidecar."""
    from edge.judge.boxfinder import LONG_SIDE, MIN_AREA, THRESHOLD

    rendered, photos = [], Counter[str]()
    for d in sets:
        man = json.loads((d / "parts.json").read_text())
        size = "x".join(str(v) for v in man["frame_size"])
        rendered.append({"set": d.name, "frame_size": size, "photos": int(man["n_images"])})
        photos[size] += int(man["n_images"])
    return {"kind": "boxfinder", **options, "rendered": rendered, "photos_per_frame_size": dict(photos),
            "sha256": hashlib.sha256(blob).hexdigest(), "size_bytes": len(blob),
            "decode": {"threshold": THRESHOLD, "min_area": MIN_AREA, "long_side": LONG_SIDE}}


def sizes_arg(text: str) -> list[tuple[int, int]]:
    """``960x540,640x480`` -> [(960, 540), (640, 480)]: frame sizes WxH, each side 128-4096 px."""
    out = []
    for item in text.split(","):
        w, sep, h = item.strip().lower().partition("x")
        if not (sep and w.isdigit() and h.isdigit()):
            raise argparse.ArgumentTypeError(f"{item.strip()!r} is not a frame size: expected WxH[,WxH...], e.g. "
                                             "960x540,640x480,1280x720")
        if not (MIN_SIDE <= int(w) <= MAX_SIDE and MIN_SIDE <= int(h) <= MAX_SIDE):
            raise argparse.ArgumentTypeError(f"{item.strip()!r}: each side must be {MIN_SIDE}-{MAX_SIDE} px")
        out.append((int(w), int(h)))
    return out


def seeds_arg(text: str) -> list[int]:
    """``1000-1009`` or ``1000`` -> the seeds."""
    lo, _, hi = text.partition("-")
    try:
        return list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a seed or a range like 1000-1009") from None


HELP = """\
Build the learned box finder (issue 25): a .tflite that gives, for a whole frame, the probability that each
8x8-pixel cell lies on the box; `boxinspect localize DATA --finder F.tflite` turns it into a box.

What it does: renders synth belt and line scenes with known boxes from TRAINING seeds under --work (kept between
runs), runs the frozen MobileNetV2 0.35 backbone on every photo, samples cells (on the box, around it, elsewhere),
fits a small head (two 1x1 convolutions) on them and exports backbone + head as ONE float32 LiteRT model. Measured
in docs/RESULTS.md "A learned box finder"; a 10-seed build takes about half an hour on one core.

Frame sizes: the finder sees every frame at a long side of 640 px, but a head trained on 960x540 belt frames only
finds far fewer boxes on 640x480 belts (dev: 66% IoU >= 0.8 against 82% with mixed sizes). --sizes renders the belt
scenes of successive seeds at successive frame sizes (the same number of photos; default three sizes), and the
build record F.tflite.json lists every training set with its frame size, the options and the model's sha256.

Seeds 3, 7, 21, 31, 32, 3001-3004, 4101 and 4102 are the studies' dev and held-out sets and are refused.
"""


def _cmd_build(args: Any) -> int:
    from training.model import offline_weights_path

    weights = Path(args.weights) if args.weights else offline_weights_path(0.35)
    if weights is None or not weights.is_file():
        log.error("boxfinder build: no MobileNetV2 0.35 ImageNet weights (.h5, no top) at %s; give --weights FILE "
                  "or set BOXINSPECT_WEIGHTS", args.weights or "the offline places (training/model.py)")
        return 2
    kinds = tuple(k for k in ("belt", "line") if k in args.scenes)
    build(Path(args.out), args.seeds, args.parts, Path(args.work), weights, args.cells, args.epochs,
          kinds, args.seed, args.sizes)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("boxfinder", help="build the learned box finder (.tflite)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    bsub = p.add_subparsers(dest="boxfinder_command", metavar="ACTION", required=True)
    b = bsub.add_parser("build", help="render training scenes, train the head, export the .tflite", description=HELP,
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="example:\n  boxinspect boxfinder build --out runs/finder.tflite --seeds 1000-1009\n"
                               "  boxinspect boxfinder build --out runs/finder.tflite --sizes 960x540,640x480,1280x720\n"
                               "  boxinspect localize data/line --finder runs/finder.tflite --json crops.json")
    b.add_argument("--out", required=True, metavar="F.tflite", help="where to write the model")
    b.add_argument("--seeds", type=seeds_arg, default=seeds_arg("1000-1009"),
                   help="training seeds, e.g. 1000-1009 (default; the study's)")
    b.add_argument("--parts", type=int, default=10, help="parts per class per seed and scene kind (default 10)")
    b.add_argument("--scenes", nargs="+", choices=("belt", "line"), default=["belt", "line"],
                   help="scene kinds to render per seed (default both)")
    b.add_argument("--sizes", type=sizes_arg, default=sizes_arg(DEFAULT_SIZES), metavar="WxH[,WxH...]",
                   help="belt frame sizes, taken in turn by seed (seeds 1000-1009 with three sizes: 4 / 3 / 3 belt "
                        f"sets); line scenes stay 640x480 (default {DEFAULT_SIZES}; one size, e.g. 960x540, "
                        "renders every belt set at it; docs/RESULTS.md 2026-12-07)")
    b.add_argument("--work", default="runs/boxfinder/train", help="folder for the rendered scenes (reused)")
    b.add_argument("--weights", default=None, metavar="FILE", help="MobileNetV2 0.35 ImageNet weights (.h5, no top; "
                   "default: the offline copy training/model.py finds, e.g. ../shared/weights/)")
    b.add_argument("--cells", type=int, default=200, help="positive cells per photo (and as many negatives)")
    b.add_argument("--epochs", type=int, default=20, help="at most this many epochs (early stopping on 10%% of cells)")
    b.add_argument("--seed", type=int, default=0, help="seed of the cell sampling and the head (default 0)")
    b.set_defaults(func=_cmd_build)
