"""Synthetic data: CLI. Part of :mod:`boxinspect.synth` (see its docstring)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from boxinspect.synth.dataset import make_dataset
from boxinspect.synth.layout import DIFFICULTIES, log
from boxinspect.synth.line import LINE_DIFFICULTIES, VIEWS, line_sheet, make_line_dataset
from boxinspect.synth.sheet import dataset_sheet, video_sheet
from boxinspect.synth.video import make_video

HELP = """\
Generate synthetic training data: cardboard boxes on a conveyor belt seen from above, rendered with
numpy + OpenCV and domain-randomised (box size, rotation, cardboard colour, tape, printed marks and
shipping labels, lighting gradient, white balance, blur, sensor noise, belt texture).

Writes DIR/ok/*.jpg and DIR/defective/*.jpg (one folder per class, ready for `boxinspect train DIR`)
and DIR/manifest.json (per image: file, label, defect type, rendering parameters). Defective images
show one of: dent, tear, open_flap, water_stain, missing_tape, loose_tape (equal shares).
Each image is the camera's region of interest (ROI) with a box in it, the same view the daemon crops
from the conveyor video, so a model trained here works on the video.

--video also writes DIR/conveyor.mp4: boxes riding the belt left to right through a square ROI, one at
a time, and DIR/conveyor.json with the ground truth (ROI, and per box: defect, the frames where it enters,
is fully inside, crosses the centre of and leaves the ROI). Same seed, same output.

--scenes line writes line scenes instead: wide 640x480 frames of textured belt with the box covering 5-25%
of the frame at a random position, rotation and scale, two camera views per part (top, oblique), named
DIR/<class>/<part>_<view>.jpg, and DIR/parts.json with the per-part ground truth (label, defect, and per
view the box's bounding box [x0, y0, x1, y1], rotated rectangle and frame share). --n-per-class counts
parts; --size does not apply (the model's crop is made by the localiser, see `boxinspect train --crop`).
"""


EXAMPLES = """\
examples:
  boxinspect synth --out data/synth                                # 300 + 300 images, 160 px
  boxinspect synth --out data/synth --video --contact-sheet        # + conveyor.mp4/.json and previews
  boxinspect synth --out data/hard --difficulty hard --n-per-class 1000 --seed 7
  boxinspect synth --out data/line --scenes line --n-per-class 150 --contact-sheet   # 2 views per part
  boxinspect synth --out data/belt --scenes belt --n-per-class 100   # slat/roller belts, rails, 960x540
"""


def _cmd_synth(args: argparse.Namespace) -> int:
    out = Path(args.out)
    t0 = time.time()
    try:
        if args.scenes in ("line", "belt"):
            return _cmd_line(args, out, t0)
        if args.difficulty not in DIFFICULTIES:
            raise ValueError(f"--difficulty {args.difficulty} applies to --scenes line only; use one of {DIFFICULTIES}")
        summary = make_dataset(out, n_per_class=args.n_per_class, size=args.size, seed=args.seed,
                               difficulty=args.difficulty, progress=True)
        lines = [f"dataset: {summary['n_images']} images {summary['counts']} ({summary['size']} px) in {out}/ok, "
                 f"{out}/defective; manifest {out / 'manifest.json'}"]
        if args.contact_sheet:
            dataset_sheet(out, out / "contact_sheet.png")
            lines.append(f"contact sheet: {out / 'contact_sheet.png'}")
        if args.video:
            vpath = out / "conveyor.mp4"
            log.info("rendering the conveyor video (%d boxes) ...", args.video_boxes)
            gt = make_video(vpath, n_boxes=args.video_boxes, defect_rate=args.defect_rate, seed=args.seed,
                            fps=args.fps, difficulty=args.difficulty)
            n_def = sum(b["defective"] for b in gt["boxes"])
            r = gt["roi"]
            lines.append(f"video: {vpath} ({gt['frame_count']} frames at {gt['fps']} fps, {len(gt['boxes'])} boxes, "
                         f"{n_def} defective); ground truth {vpath.with_suffix('.json')}; "
                         f"ROI x={r['x']} y={r['y']} width={r['width']} height={r['height']}")
            if args.contact_sheet:
                video_sheet(vpath, out / "conveyor_frames.png")
                lines.append(f"video frames: {out / 'conveyor_frames.png'}")
    except (ValueError, OSError) as e:
        log.error("synth failed: %s", e)
        return 2
    log.info("synth done in %.1f s; output in %s", time.time() - t0, out)
    print("\n".join(lines))  # the CLI's summary
    return 0


def _cmd_line(args: argparse.Namespace, out: Path, t0: float) -> int:
    """--scenes line or belt: wide frames, two views per part, the boxes' ground truth in parts.json."""
    from boxinspect.synth.belt import make_belt_dataset

    if args.video:
        raise ValueError(f"--video renders the ROI conveyor; it does not combine with --scenes {args.scenes}")
    if args.scenes == "belt":
        summary = make_belt_dataset(out, n_per_class=args.n_per_class, seed=args.seed)
        what = (f"patterned-belt scenes on {summary['n_lines']} lines ({summary['empty_belt']['n_frames']} "
                f"empty-belt frames in {out / 'empty'}/line<L>/<view>: pass --empty {out / 'empty'})")
    else:
        summary = make_line_dataset(out, n_per_class=args.n_per_class, seed=args.seed, difficulty=args.difficulty)
        what = "line scenes"
    lines = [f"{what}: {summary['n_parts']} parts x {len(VIEWS)} views ({', '.join(VIEWS)}) {summary['counts']} "
             f"in {out}/ok, {out}/defective; ground truth {out / 'parts.json'}"]
    if args.contact_sheet:
        line_sheet(out, out / "contact_sheet.png")
        lines.append(f"contact sheet: {out / 'contact_sheet.png'}")
    log.info("synth done in %.1f s; output in %s", time.time() - t0, out)
    print("\n".join(lines))  # the CLI's summary
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="generate synthetic box images (ok/defective) and a conveyor video",
                       description=HELP, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--n-per-class", type=int, default=300, metavar="N", help="images per class (default 300)")
    p.add_argument("--size", type=int, default=160, metavar="PX", help="image side in px (default 160)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, identical output (default 0)")
    p.add_argument("--scenes", choices=("roi", "line", "belt"), default="roi",
                   help="roi (default): box-centred ROI images; line: wide belt scenes, 2 views per part; belt: "
                        "960x540 patterned-belt line scenes (slats, rollers, rails, shadows; box 2-25%% of the "
                        "frame; 2 views per part; the boxes' ground truth in parts.json; 16 frames of each camera's "
                        "empty belt in DIR/empty/line<L>/<view>/ for --empty DIR/empty)")
    p.add_argument("--difficulty", choices=LINE_DIFFICULTIES, default="easy",
                   help="easy: large, high-contrast defects; hard: smaller, subtler defects and more clutter; "
                        "mixed (line scenes only): each part easy or hard")
    p.add_argument("--video", action="store_true", help="also write DIR/conveyor.mp4 and its ground truth DIR/conveyor.json")
    p.add_argument("--video-boxes", type=int, default=16, metavar="N", help="boxes in the video (default 16)")
    p.add_argument("--defect-rate", type=float, default=0.4, metavar="RATE",
                   help="share of defective boxes in the video, placed at random (default 0.4)")
    p.add_argument("--fps", type=int, default=15, help="video frame rate (default 15)")
    p.add_argument("--contact-sheet", action="store_true",
                   help="also write DIR/contact_sheet.png (a row of OK images, a row per defect type) and, with "
                        "--video, DIR/conveyor_frames.png (video frames with the ROI drawn)")
    p.set_defaults(func=_cmd_synth)
