"""``boxinspect boxfinder build``: render training scenes, train the learned box finder, export it as a .tflite.

The steps: synth scenes with known boxes from TRAINING seeds (:func:`render`: per seed a belt set and a mixed line
set) -> the frozen backbone's per-cell features and labels, sampled (training/boxfinder.py) -> the head fitted ->
the whole graph exported as float32 LiteRT (convert/common.py ``convert_bytes``) with a dynamic input, so one file
serves 16:9 and 4:3 frames (edge/judge/boxfinder.py resizes to a long side of 640). Use it with
``boxinspect localize DATA --finder F.tflite``. TensorFlow is imported inside the handler only.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# dev and held-out seeds of the issue-25 studies: never rendered for training
BANNED_SEEDS = frozenset({3, 21, 7, 31, 32, 3001, 3002, 3003, 3004})


def render(out: Path, seeds: list[int], parts: int, sizes: list[str] | None = None,
           kinds: tuple[str, ...] = ("belt", "line")) -> list[Path]:
    """Training scenes (TRAINING seeds only): per seed a belt set and a mixed line set (``kinds``), ``parts`` per
    class; with ``sizes`` (``WxH``, taken in turn by seed) belt sets only, named ``beltsz<seed>``. Existing sets
    are kept. Returns the data set folders."""
    from boxinspect.synth.belt import BELT_FRAME, make_belt_dataset
    from boxinspect.synth.line import make_line_dataset

    made = []
    for s in seeds:
        if s in BANNED_SEEDS:
            raise SystemExit(f"seed {s} is a dev or held-out seed")
        name, size = f"belt{s}", BELT_FRAME
        if sizes:
            w, h = sizes[s % len(sizes)].split("x")
            name, size = f"beltsz{s}", (int(w), int(h))
        if "belt" in kinds or sizes:
            if not (out / name / "parts.json").exists():
                make_belt_dataset(out / name, n_per_class=parts, seed=s, frame_size=size, empty_frames=0,
                                  progress=False)
            made.append(out / name)
        if not sizes and "line" in kinds:
            if not (out / f"line{s}" / "parts.json").exists():
                make_line_dataset(out / f"line{s}", n_per_class=parts, seed=s, difficulty="mixed", progress=False)
            made.append(out / f"line{s}")
        log.info("rendered seed %d", s)
    return made


def build(out: Path, seeds: list[int], parts: int, work: Path, weights: Path, cells: int = 200, epochs: int = 20,
          kinds: tuple[str, ...] = ("belt", "line"), seed: int = 0) -> Path:
    """Render, train and export the finder to ``out`` (float32 .tflite); returns ``out``. ``seed``: of the cell
    sampling and the head's initialisation (not of the scenes)."""
    from convert.common import convert_bytes
    from training.boxfinder import feature_model, finder_model, fit_head, training_cells

    t0 = time.monotonic()
    sets = render(work, seeds, parts, kinds=kinds)
    log.info("%d training sets under %s (%.0f s)", len(sets), work, time.monotonic() - t0)
    fmodel = feature_model(weights)
    x, y = training_cells(fmodel, sets, cells, seed=seed)
    head = fit_head(x, y, epochs=epochs, seed=seed)
    blob = convert_bytes(finder_model(fmodel, head), "float32", None)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(blob)
    log.info("wrote %s (%.1f MB) in %.0f s", out, len(blob) / 1e6, time.monotonic() - t0)
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

Seeds 3, 7, 21, 31, 32 and 3001-3004 are the studies' dev and held-out sets and are refused.
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
          kinds, args.seed)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("boxfinder", help="build the learned box finder (.tflite)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    bsub = p.add_subparsers(dest="boxfinder_command", metavar="ACTION", required=True)
    b = bsub.add_parser("build", help="render training scenes, train the head, export the .tflite", description=HELP,
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="example:\n  boxinspect boxfinder build --out runs/finder.tflite --seeds 1000-1009\n"
                               "  boxinspect localize data/line --finder runs/finder.tflite --json crops.json")
    b.add_argument("--out", required=True, metavar="F.tflite", help="where to write the model")
    b.add_argument("--seeds", type=seeds_arg, default=seeds_arg("1000-1009"),
                   help="training seeds, e.g. 1000-1009 (default; the study's)")
    b.add_argument("--parts", type=int, default=10, help="parts per class per seed and scene kind (default 10)")
    b.add_argument("--scenes", nargs="+", choices=("belt", "line"), default=["belt", "line"],
                   help="scene kinds to render per seed (default both)")
    b.add_argument("--work", default="runs/boxfinder/train", help="folder for the rendered scenes (reused)")
    b.add_argument("--weights", default=None, metavar="FILE", help="MobileNetV2 0.35 ImageNet weights (.h5, no top; "
                   "default: the offline copy training/model.py finds, e.g. ../shared/weights/)")
    b.add_argument("--cells", type=int, default=200, help="positive cells per photo (and as many negatives)")
    b.add_argument("--epochs", type=int, default=20, help="at most this many epochs (early stopping on 10%% of cells)")
    b.add_argument("--seed", type=int, default=0, help="seed of the cell sampling and the head (default 0)")
    b.set_defaults(func=_cmd_build)
