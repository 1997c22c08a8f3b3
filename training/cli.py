"""``boxinspect train`` and ``boxinspect evaluate``. Registration imports no TensorFlow."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from training.backbones import AUTO, for_recipe  # numpy only at import
from training.model import POOLINGS, Pooling  # no TensorFlow at import

log = logging.getLogger(__name__)

LINEAR_IMG_SIZE = 224  # chosen by cross-validation (docs/RESULTS.md)
LINEAR_POOLING: Pooling = "gap+mid"  # the linear recipe's default --pooling (docs/RESULTS.md "Mid-level pooling")
WEIGHTS_HELP = (
    "the backbone's weights. auto (default): the linear recipe fits its head on both imagenet and boxes features and "
    "keeps the backbone whose head scores better out of fold on the training data (a second feature pass); the "
    "anomaly recipe takes boxes; finetune, or an --alpha other than 0.35, imagenet. imagenet: Keras cache or "
    "download. boxes: built in, the ImageNet backbone fine-tuned once on rendered conveyor boxes (held-out rendered "
    "scenes: linear per part AUC +0.09 to +0.35, anomaly +0.08; the real parcel-damage photos: linear -0.03, anomaly "
    "-0.01; docs/RESULTS.md \"A backbone adapted to boxes\"). none: random init. Or PATH to a MobileNetV2 no-top .h5")
POOLING_HELP = ("linear: the feature vector the head reads. gap+mid (default): the backbone's last map averaged "
                "(1280 numbers), and the largest and the mean response of two mid-level blocks over the crop's inner "
                "cells (+576), so a tear or dent that moves a few cells is not averaged away (+0.04 per part on the "
                "held-out synth scenes with `cv`, +0.005 per photo on parcel-damage; docs/RESULTS.md \"Mid-level pooling\"). gap: the "
                "average alone (before 2026-12-07; needed with --scales or --flip-tta). Recorded in the run, so "
                "convert, predict and the daemon compute the same vector")
SCALES_HELP = ("linear: the model averages the pooled features at these input sizes, e.g. 224,288: its one input "
               "is the largest, the smaller ones are resized inside the model through the same backbone "
               "(cost: one backbone pass per size; docs/RESULTS.md). Sets the input size (leave --img-size out)")


def scales_arg(text: str) -> list[int]:
    """``224,288`` -> [224, 288] (argparse type of --scales)."""
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated sizes in px like 224,288, got {text!r}") from None
    if not sizes or len(set(sizes)) != len(sizes) or min(sizes) < 32:
        raise argparse.ArgumentTypeError(f"expected distinct sizes of at least 32 px like 224,288, got {text!r}")
    return sorted(sizes)


def img_size_and_scales(img_size: int | None, scales: list[int] | None, default: int) -> tuple[int, list[int] | None]:
    """The input size and scales of --img-size/--scales: with scales the input size is the largest scale."""
    if not scales:
        return img_size or default, None
    if img_size is not None and img_size != max(scales):
        raise ValueError(f"--img-size {img_size} with --scales {','.join(map(str, scales))}: the model's input size "
                         f"is the largest scale ({max(scales)}); leave --img-size out")
    return max(scales), (scales if len(scales) > 1 else None)

TRAIN_DESCRIPTION = """\
Train a box-defect classifier on a folder-per-class data set with a MobileNetV2 backbone.

DATA holds one folder per class, e.g. DATA/ok/*.jpg and DATA/defective/*.jpg (jpg, png, bmp, webp,
tiff; unreadable files are counted and skipped). The model is binary: it outputs P(positive class).
Files named <part>_<view>.jpg are views of one part and always stay on one side of every split.

What happens:
  1. split   near-duplicates (flipped/rotated/re-encoded copies of one photo, found with a dHash over
             all 8 rotations/mirrors) are grouped, and whole groups go to train, val or test, stratified
             by class, so a copy of a test photo is never trained on. Saved as RUN/split.json.
  2. --recipe linear (default, the cross-validated winner, docs/RESULTS.md): ImageNet MobileNetV2
             features of every train+val image (frozen, cached on disk), standardised, L2 logistic
             regression with C chosen by grouped CV; the operating threshold is chosen on the
             out-of-fold scores of that CV (default: a missed defect costs 2 false rejects; or --cost-ratio
             or --target-recall). The head is
             folded into one Dense layer, so RUN/model.keras is an ordinary Keras model. About a minute.
     --recipe finetune: phase 1 backbone frozen, new head (GAP -> Dropout -> Dense sigmoid) trained with
             Adam --lr up to --epochs with early stopping on val_loss; phase 2 top --unfreeze-blocks
             blocks unfrozen at --fine-tune-lr for up to --fine-tune-epochs (0 = skip), with
             augmentation (flip, rotation, zoom, brightness, contrast) during training only.
  Every image is first cropped to its box (--crop, default auto; see edge/judge/localize.py): a camera over a
  line sees mostly belt, and a model fed the whole frame learns the belt.
  RUN/model.keras takes RGB float32 in [0, 255] and contains the [-1, 1] rescaling.
"""

TRAIN_EPILOG = """\
defaults and why:
  --recipe linear --img-size 224 repeated grouped CV on parcel-damage (docs/RESULTS.md): a linear head on
                                frozen 224 px features beats two-phase fine-tuning and 160 px
  finetune --img-size 160, --alpha 0.35  small enough for a Raspberry Pi (int8 TFLite runs in a few ms),
                                large enough to see dents and tears; see docs/RESULTS.md
  --lr 1e-4, --epochs 25        the reference project's settings, plus early stopping. On small data sets
                                try --lr 1e-3: on parcel-damage the head converged in ~10 epochs with 1e-3
                                and had not after 25 with 1e-4 (docs/RESULTS.md)
  --fine-tune-lr 1e-5           10x lower, so fine-tuning does not wreck the pretrained features
                                (with --lr 1e-3 use --fine-tune-lr 1e-4 --unfreeze-blocks 8)
  --balance weights             defects are usually rarer; weighting the loss costs nothing
  --test-frac 0.2               a held-out test set large enough for a meaningful recall

weights:
  --weights imagenet (default) uses Keras' own download and cache (~/.keras/models/). Offline, copy
  the official mobilenet_v2_weights_tf_dim_ordering_tf_kernels_<alpha>_224_no_top.h5 into
  ~/.keras/models/ (it serves every input size) or pass --weights PATH. --weights none trains from
  random initialisation (much worse on small data).

examples:
  boxinspect train data/boxes --out runs/m1
  boxinspect train data/boxes --out runs/m2 --split-manifest runs/m1/split.json   # same split
  boxinspect evaluate runs/m1
"""

EVAL_DESCRIPTION = """\
Evaluate a trained run: classification report, ROC AUC, ROC and PR curves, confusion matrix, training
curves, a threshold table and the trade-off curve. The operating threshold is chosen on the run's
OUT-OF-FOLD scores (runs of the linear recipe: every train+val image scored by a model that did not see it)
or, for finetune runs, on the VALIDATION split: the highest threshold whose defect recall is >=
--target-recall, or the one minimising --cost-ratio x missed defects + false rejects. The test split is
then reported at that threshold and at 0.5, and in the line's terms: "N of 1,000 good boxes rejected, M of
100 defects missed" with 95% intervals. Writes RUN/metrics.json and RUN/report/ (PNGs + report.html).
"""


def _data_command(sub: argparse._SubParsersAction, name: str, help: str, description: str, epilog: str,
                  out_help: str) -> argparse.ArgumentParser:
    """A subcommand that reads a folder-per-class DATA set and writes into --out (train and cv)."""
    p = sub.add_parser(name, help=help, description=description, epilog=epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path, help="data folder with one sub-folder per class")
    p.add_argument("--out", type=Path, required=True, help=out_help)
    return p


SELF_BELT_HELP = ("do not learn each camera's empty belt from the data set's own photos. By default, with --crop "
                  "auto and no --background/--empty, the linear and finetune recipes group the photos by camera "
                  "(frame size and view) and each group of >= 8 photos gets a belt model learned from its photos "
                  "with their boxes masked (edge/judge/selfbelt.py; docs/RESULTS.md); smaller groups use the "
                  "reference-free search. DATA/empty/ (empty-belt frames, for --empty) is not learned from. "
                  "The anomaly recipe skips it unless --self-belt")
SELF_BELT_ON_HELP = ("anomaly recipe: learn the self-learned belt anyway (off by default for it: on the dev line scenes "
                     "it cost the patch bank AUC, docs/RESULTS.md 'issue 29, fourth pass'); other recipes: the default")


def _add_self_belt_arg(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--no-self-belt", action="store_true", help=SELF_BELT_HELP)
    g.add_argument("--self-belt", action="store_true", help=SELF_BELT_ON_HELP)


def wants_self_belt(crop_method: str, args: argparse.Namespace) -> bool:
    """Whether to learn the data set's belts from its own photos: only for --crop auto with no reference given,
    not when --no-self-belt says so, and for the anomaly recipe only when --self-belt asks for it (its patch bank
    scored better on the localiser's own crops on the dev set: docs/RESULTS.md, issue 29, fourth pass)."""
    if (crop_method != "auto" or getattr(args, "no_self_belt", False) or getattr(args, "background", None)
            or getattr(args, "empty", None)):
        return False
    if getattr(args, "recipe", None) == "anomaly" and not getattr(args, "self_belt", False):
        log.info("self-learned belt: off for the anomaly recipe (--self-belt to learn it)")
        return False
    return True


def self_belt(data: Path, crop_method: str, args: argparse.Namespace) -> bool:
    """Learn the data set's belts from its own photos (``selfbelt.data_photos``: DATA/empty/ is not among them, as
    for ``boxinspect localize``) when :func:`wants_self_belt` says so; whether it did."""
    if not wants_self_belt(crop_method, args):
        return False
    from edge.judge.localize import EMPTY_DIR, CropSpec
    from edge.judge.selfbelt import data_photos, learn_stills

    finder = getattr(args, "finder", None)
    if finder:
        from edge.judge.crops import finder_boxes_all, open_finder

        if finder_boxes_all(data_photos(Path(data)), open_finder(finder), CropSpec(method=crop_method)):
            return False
    if (Path(data) / EMPTY_DIR).is_dir():
        log.info("self-learned belt: %s holds empty-belt frames, which it does not learn from; --empty %s uses them "
                 "(better crops where they match the cameras: docs/RESULTS.md)", Path(data) / EMPTY_DIR,
                 Path(data) / EMPTY_DIR)
    learn_stills(data_photos(Path(data)), CropSpec(method="auto"))
    return True


def register(sub: argparse._SubParsersAction) -> None:
    _add_train(sub)
    _add_evaluate(sub)
    register_cv(sub)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = _data_command(sub, "train", "train a MobileNetV2 defect classifier (run directory out)",
                      TRAIN_DESCRIPTION, TRAIN_EPILOG, "run directory to create (e.g. runs/m1)")
    p.add_argument("--classes", default=None,
                   help="comma-separated class folders in index order (default: all sub-folders, sorted)")
    p.add_argument("--positive-class", default=None,
                   help="the defect class (default: 'defective' or 'damaged' if such a folder exists)")
    _add_recipe_args(p)
    _add_finetune_args(p)
    _add_split_args(p)
    p.add_argument("--save-phase1", action="store_true",
                   help="also keep the frozen-backbone model as RUN/phase1/ (a run dir of its own, for comparison)")
    p.add_argument("--overwrite", action="store_true", help="allow writing into a run directory with a model")
    p.add_argument("--quiet", action="store_true", help="no Keras progress bars (one log line per epoch stays)")
    p.add_argument("--evaluate", action="store_true", help="run 'boxinspect evaluate' on the run afterwards")
    _add_self_belt_arg(p)
    p.set_defaults(func=_train)


def _add_recipe_args(p: argparse.ArgumentParser) -> None:
    """train: the recipe, input size, crop, backbone, linear head, operating point and anomaly options."""
    from edge.judge.localize import CROP_SHAPES, DEFAULT_SHAPE

    p.add_argument("--recipe", choices=["linear", "finetune", "anomaly"], default="linear",
                   help="linear (default): frozen MobileNetV2 features + L2 logistic head, C by grouped CV, "
                        "threshold on out-of-fold scores; finetune: two-phase transfer learning; anomaly: from "
                        "GOOD parts only (DATA/ok only, or both classes with defects for evaluation only): "
                        "patch features + PatchCore memory bank, threshold at --target-frr (training/anomaly.py); "
                        "its crop is the box turned upright and cut tight (margin 0.02 unless --crop-margin sets "
                        "another), the grid's edge ring is left out of the score, and --crop auto does not learn the "
                        "self-learned belt (--self-belt to force it)")
    p.add_argument("--img-size", type=int, default=None,
                   help=f"square input size in px (default {LINEAR_IMG_SIZE} for linear, 160 for finetune)")
    p.add_argument("--crop", choices=["auto", "background", "salient", "none"], default="auto",
                   help="find the box and crop it before resizing (edge/judge/localize.py; recorded in the run and the "
                        "model package, so convert, predict and the daemon crop alike). auto (default): the "
                        "built-in learned box finder first (see --finder), else background difference if "
                        "--background is given, else the region that stands out from the image border; the whole "
                        "image when the box fills the frame or none is found. none: the whole image")
    p.add_argument("--background", type=Path, default=None, metavar="FILE",
                   help="empty-belt reference image for --crop background/auto (stills; the daemon uses its "
                        "own running background)")
    p.add_argument("--empty", type=Path, default=None, metavar="DIR", help=EMPTY_HELP)
    p.add_argument("--finder", default=None, metavar="F.tflite|none", help=FINDER_HELP)
    p.add_argument("--crop-shape", choices=CROP_SHAPES, default=DEFAULT_SHAPE, help=CROP_SHAPE_HELP)
    p.add_argument("--crop-margin", type=float, default=0.08, metavar="FRAC",
                   help="margin around the box, share of its longer side (default 0.08)")
    p.add_argument("--alpha", type=float, default=0.35, help="MobileNetV2 width multiplier (default 0.35)")
    p.add_argument("--weights", default=AUTO, help=WEIGHTS_HELP)
    p.add_argument("--C", type=float, default=None, dest="C",
                   help="linear: inverse L2 strength (default: chosen by inner grouped CV on train+val)")
    p.add_argument("--flip-tta", action="store_true",
                   help="linear: the model averages the features of the image and its mirror (2x compute)")
    p.add_argument("--scales", type=scales_arg, default=None, metavar="PX,PX", help=SCALES_HELP)
    p.add_argument("--pooling", choices=POOLINGS, default=None, help=POOLING_HELP)
    _add_operating_args(p)
    _add_anomaly_args(p, train=True)


def _add_finetune_args(p: argparse.ArgumentParser) -> None:
    """train: the two phases of the finetune recipe and the class-imbalance correction."""
    p.add_argument("--epochs", type=int, default=25, help="phase 1 max epochs, backbone frozen (default 25)")
    p.add_argument("--fine-tune-epochs", type=int, default=10,
                   help="phase 2 max epochs, top blocks unfrozen (default 10; 0 = frozen backbone only)")
    p.add_argument("--unfreeze-blocks", type=int, default=4,
                   help="MobileNetV2 blocks (of 16) unfrozen in phase 2, counted from the top (default 4)")
    p.add_argument("--batch-size", type=int, default=32, help="default 32")
    p.add_argument("--lr", type=float, default=1e-4, help="phase 1 Adam learning rate (default 1e-4)")
    p.add_argument("--fine-tune-lr", type=float, default=1e-5, help="phase 2 learning rate (default 1e-5)")
    p.add_argument("--dropout", type=float, default=0.2, help="dropout before the output (default 0.2)")
    p.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs (default 5)")
    p.add_argument("--balance", choices=["weights", "oversample", "none"], default="weights",
                   help="class imbalance: loss weights (default), oversample the minority (augmented), none")
    p.add_argument("--no-augment", action="store_true", help="switch off training augmentation")


def _add_split_args(p: argparse.ArgumentParser) -> None:
    """train: the train/val/test split and the seed."""
    p.add_argument("--val-frac", type=float, default=0.15, help="validation fraction (default 0.15)")
    p.add_argument("--test-frac", type=float, default=0.2, help="test fraction (default 0.2, >= 0.15 advised)")
    p.add_argument("--dup-threshold", type=int, default=6,
                   help="near-duplicate dHash Hamming distance, of 64 bits (default 6; -1 = no grouping)")
    p.add_argument("--split-manifest", type=Path, default=None,
                   help="reuse this split.json (from another run) instead of making a new split")
    p.add_argument("--seed", type=int, default=0, help="seed for python/numpy/TensorFlow (default 0)")


EMPTY_HELP = ("with --crop auto: a folder of >= 8 frames of the EMPTY belt from the same fixed camera (the belt moving "
              "between them), or one such sub-folder per camera (DIR/<line>/<view>/*.png, as `boxinspect synth "
              "--scenes belt` writes DATA/empty/). The crop learns the belt's range per pixel and takes what lies "
              "outside it as the box (each image against the camera it matches best), as the daemon does once it "
              "has learned its belt; recorded in the run (crop.empty_belt). Check it first: boxinspect localize "
              "DATA --empty DIR")


FINDER_HELP = ("the learned box finder: each image is cropped to the finder's box first, and the --crop search runs "
               "only where the finder finds no box (as `localize`; the self-learned belt is learned only when the "
               "finder misses a photo). Default with --crop auto and no --background / --empty: the built-in finder "
               "(edge/assets/boxfinder.tflite, trained on rendered belt and line scenes with known boxes; "
               "docs/RESULTS.md \"The built-in learned box finder\"), for the linear recipe (train: and finetune). "
               "F.tflite: your own (`boxinspect boxfinder build`); none: the --crop search alone. The crop report "
               "counts its boxes as method learned; the run records the file's path and sha256, and the feature cache "
               "key holds that hash. convert puts the finder in the package (<name>.finder beside the .tflite, its "
               "sha256 in the sidecar), so predict and the daemon crop as training did")
CROP_SHAPE_HELP = ("the crop's shape around a found box (linear recipe): aligned (default): the box turned upright (long "
                   "side horizontal) and cut tight (margin 0.02), as the anomaly recipe crops, so every crop shows "
                   "the box at one orientation and scale (per part +0.03-0.04 AUC on held-out line and belt scenes, "
                   "docs/RESULTS.md); square: its bounding box plus a 0.08 margin, padded to a square (the default "
                   "before). A whole frame is the same either way. Recorded in the run and the package, so convert, "
                   "predict and the daemon crop alike")


def finder_arg(value: str | None, crop: str, recipe_takes_it: bool = True,
               reference: bool = False) -> str | None:
    """The --finder file resolved and checked (it loads as a box finder; a crop method is set), before any slow
    step; raises ValueError with one line naming --finder. Absent: the built-in finder with --crop auto when the
    recipe takes a finder and no empty-belt reference (--background / --empty) was given (that reference is the
    user's own camera, which the crop then trusts); ``none``: no finder."""
    from edge.judge.crops import finder_choice, open_finder

    if value is None and not recipe_takes_it:
        return None
    path = finder_choice(value, crop, reference)
    if not path:
        return None
    if crop == "none":
        raise ValueError("--finder needs a crop method: add --crop auto (the search where the finder finds no box)")
    open_finder(path)
    if value is None:
        log.info("crop: the built-in learned box finder first (%s; --finder none for the --crop search alone)", path)
    return str(Path(path).resolve())


def _empty_belt(path: Path | None, crop: str) -> str | None:
    """The --empty folder, checked (>= 8 frames per camera; needs --crop auto), as recorded; raises ValueError."""
    if path is None:
        return None
    if crop != "auto":
        raise ValueError(f"--empty needs --crop auto (got --crop {crop})")
    from edge.judge.localize import load_belt

    load_belt(path.resolve())
    return str(path.resolve())


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("evaluate", help="evaluate a run: report, plots, operating threshold",
                       description=EVAL_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("run", type=Path, help="run directory written by 'boxinspect train'")
    eg = e.add_mutually_exclusive_group()
    eg.add_argument("--target-recall", type=float, default=None,
                    help="the threshold is the highest with defect recall >= this on the out-of-fold scores "
                         "(linear recipe) or the validation split (finetune). Default: neither this nor "
                         "--cost-ratio, which means --cost-ratio 2")
    eg.add_argument("--cost-ratio", type=float, default=None,
                    help="instead: the threshold minimising RATIO x missed defects + false rejects")
    e.add_argument("--split", default="test", choices=["test", "val", "train"],
                   help="split to report (default test)")
    e.add_argument("--empty", type=Path, default=None, metavar="DIR",
                   help="the empty-belt frames the run's crop learned its belt from (--empty of train), where they "
                        "are now (the run records the folder it was trained with; default: that one)")
    _add_self_belt_arg(e)
    e.set_defaults(func=_evaluate)


CV_DESCRIPTION = """\
Repeated, stratified, grouped cross-validation of a training recipe: the yardstick for choosing recipes
and the operating threshold (never one small split).

Groups: near-duplicate clusters (the same dHash rule as train's split, on the crop of the box with --crop, so a
fixed camera's belt does not link different boxes) merged with parts: files named
<part>_<view>.<ext> (several views of one part) always stay in one fold, and a multi-view data set also
gets per-part metrics with the view scores fused by max, mean and noisy-OR.

Recipes: linear (frozen MobileNetV2 features, cached on disk, + standardise + L2 logistic regression,
C by inner grouped CV) and finetune (train's two-phase recipe per fold; slow: budget it).

Reports mean +- sd over all folds of ROC AUC, macro F1, defect recall and specificity at each fold's
threshold (chosen on that fold's training side), and the operating point on all out-of-fold scores:
"N of 1,000 good boxes rejected, M of 100 defects missed", with 95% intervals.
Writes OUT/oof_scores.csv, OUT/summary.json and OUT/cv.png.
"""

CV_EPILOG = """\
examples:
  boxinspect cv data/parcels --out runs/cv/linear224 --folds 5 --repeats 2
  boxinspect cv data/parcels --out runs/cv/linear224flip --flip-tta
  boxinspect cv data/parcels --out runs/cv/linear224_288 --scales 224,288
  nice -n 10 boxinspect cv data/parcels --out runs/cv/ft160 --recipe finetune --img-size 160
"""


def _add_operating_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--target-recall", type=float, default=None,
                   help="operating threshold: highest with defect recall >= this (e.g. 0.95; a weak model "
                        "then rejects most good boxes: look at the trade-off curve first)")
    g.add_argument("--cost-ratio", type=float, default=None,
                   help="operating threshold: minimise RATIO x missed defects + false rejects (a missed defect "
                        "costs RATIO good boxes sent to a human). Default when neither is given: 2")


def _add_anomaly_args(p: argparse.ArgumentParser, train: bool) -> None:
    methods = ["patchcore", "padim"] + ([] if train else ["pooled_gaussian"])
    p.add_argument("--anomaly-method", choices=methods, default="patchcore",
                   help="anomaly: patchcore (default, chosen by CV: coreset memory bank of patch features), padim "
                        "(a Gaussian per grid cell)" + ("" if train else ", pooled_gaussian (baseline: one pooled "
                                                        "vector per crop, Mahalanobis)"))
    p.add_argument("--target-frr", type=float, default=0.001, metavar="RATE",
                   help="anomaly: the threshold's false-reject rate on good parts (default 0.001 = 1 in 1,000)")
    p.add_argument("--coreset-max", type=int, default=10000, metavar="N",
                   help="anomaly (patchcore): at most N patch vectors in the bank (default 10000; 10%% of the "
                        "training patches when fewer). Smaller banks score faster (docs/BENCHMARKS.md)")
    p.add_argument("--anomaly-banks", choices=["one", "per-view"], default="one",
                   help="anomaly: one bank for every view (default), or per-view: a bank (and threshold) per view "
                        "name of the files (<part>_<view>.jpg, e.g. top, oblique; each needs >= 20 good crops) next "
                        "to the pooled one; the daemon scores a crop by its source's view's bank, and a crop of no "
                        "view or of another view by the pooled bank (docs/RESULTS.md, issue 29, third pass)")


def pooling_for(asked: Pooling | None, recipe: str, img_size: int, scales: list[int] | None,
                flip_tta: bool) -> Pooling:
    """--pooling as asked, else the linear recipe's default where training.model.check_pooling takes it for this run
    (not with several --scales, --flip-tta or a small --img-size), else gap; an explicit choice the run cannot take is
    refused by train / cv."""
    from training.model import check_pooling, check_scales

    if asked:
        return asked
    if recipe != "linear":
        return "gap"
    try:
        check_pooling(LINEAR_POOLING, check_scales(scales, img_size), flip_tta)
    except ValueError:
        return "gap"
    return LINEAR_POOLING


def cv_crop_shape(asked: str | None, recipe: str) -> str:
    """cv's crop shape: as asked, else the linear recipe's default (the other recipes cut their own crop; asking
    them for one is refused by training.cv)."""
    from edge.judge.localize import DEFAULT_SHAPE

    return asked or (DEFAULT_SHAPE if recipe == "linear" else "square")


def register_cv(sub: argparse._SubParsersAction) -> None:
    from edge.judge.localize import CROP_SHAPES, DEFAULT_SHAPE

    p = _data_command(sub, "cv", "repeated grouped cross-validation of a recipe (mean +- sd, out-of-fold scores)",
                      CV_DESCRIPTION, CV_EPILOG, "output folder (summary.json, oof_scores.csv, cv.png)")
    p.add_argument("--recipe", choices=["linear", "finetune", "anomaly"], default="linear",
                   help="default linear; anomaly: fitted on the good parts of the training folds only (with --crop "
                        "auto: no self-learned belt unless --self-belt, as train)")
    _add_anomaly_args(p, train=False)
    p.add_argument("--folds", type=int, default=5, help="folds per repeat (default 5)")
    p.add_argument("--repeats", type=int, default=2, help="repeats with different shuffles (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of repeat 1; repeat r uses seed + r - 1")
    p.add_argument("--img-size", type=int, default=None, help="square input size in px (default 224)")
    p.add_argument("--alpha", type=float, default=0.35, help="MobileNetV2 width multiplier (default 0.35)")
    p.add_argument("--weights", default=AUTO, help=WEIGHTS_HELP)
    p.add_argument("--flip-tta", action="store_true",
                   help="linear: average the features of each image and its horizontal mirror")
    p.add_argument("--scales", type=scales_arg, default=None, metavar="PX,PX", help=SCALES_HELP)
    p.add_argument("--pooling", choices=POOLINGS, default=None, help=POOLING_HELP)
    p.add_argument("--crop", default="none", help="crop to the box first (edge.judge.localize method; default none)")
    p.add_argument("--empty", type=Path, default=None, metavar="DIR", help=EMPTY_HELP)
    p.add_argument("--finder", default=None, metavar="F.tflite|none", help=FINDER_HELP)
    p.add_argument("--crop-shape", choices=CROP_SHAPES, default=None,
                   help=CROP_SHAPE_HELP.replace("aligned (default)", f"{DEFAULT_SHAPE} (default)", 1))
    p.add_argument("--C", type=float, default=None, dest="C",
                   help="linear: fixed inverse L2 strength (default: chosen by inner grouped CV per fold)")
    p.add_argument("--scaling", choices=["global", "standard"], default="global",
                   help="linear: centre + one global scale (default; int8-friendly) or per-feature standardisation")
    p.add_argument("--no-views", action="store_true",
                   help="do not treat <part>_<view> file names as views of one part")
    p.add_argument("--dup-threshold", type=int, default=6, help="near-duplicate dHash distance (default 6)")
    p.add_argument("--positive-class", default=None, help="the defect class (default: defective/damaged)")
    p.add_argument("--epochs", type=int, default=8, help="finetune: phase-1 max epochs (default 8)")
    p.add_argument("--fine-tune-epochs", type=int, default=6, help="finetune: phase-2 max epochs (default 6)")
    p.add_argument("--lr", type=float, default=1e-3, help="finetune: phase-1 learning rate (default 1e-3)")
    p.add_argument("--fine-tune-lr", type=float, default=1e-4, help="finetune: phase-2 learning rate (default 1e-4)")
    p.add_argument("--unfreeze-blocks", type=int, default=8, help="finetune: blocks unfrozen (default 8)")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="finetune: label smoothing (default 0)")
    p.add_argument("--patience", type=int, default=3, help="finetune: early-stopping patience (default 3)")
    p.add_argument("--resume", action="store_true",
                   help="keep the folds an earlier run in OUT finished (OUT/folds.jsonl) and run only the rest")
    p.add_argument("--only-folds", default=None, metavar="N,N,...",
                   help="run only these folds (1-based, in run order: repeat 1 is 1..folds); the summary is then "
                        "per-fold only unless every image got a score")
    _add_operating_args(p)
    _add_self_belt_arg(p)
    p.set_defaults(func=_cv)


def _cv(args: argparse.Namespace) -> int:
    from training.cv import CVConfig, format_summary, run_cv
    from training.data import DataError
    from training.model import WeightsError
    from training.split import SplitError

    try:
        img_size, scales = img_size_and_scales(args.img_size, args.scales, LINEAR_IMG_SIZE)
        empty = _empty_belt(args.empty, args.crop)
        finder = args.finder = finder_arg(args.finder, args.crop, recipe_takes_it=args.recipe == "linear",
                                          reference=args.empty is not None)
    except ValueError as e:
        log.error("%s", e)
        return 2
    cfg = CVConfig(empty_belt=empty, finder=finder,
        data_dir=args.data, out_dir=args.out, recipe=args.recipe, folds=args.folds, repeats=args.repeats,
        seed=args.seed, img_size=img_size, alpha=args.alpha, weights=for_recipe(args.weights, args.recipe, args.alpha),
        flip_tta=args.flip_tta,
        scales=scales, pooling=pooling_for(args.pooling, args.recipe, img_size, scales, args.flip_tta),
        crop=args.crop, crop_shape=cv_crop_shape(args.crop_shape, args.recipe), C=args.C, scaling=args.scaling, target_recall=args.target_recall, cost_ratio=args.cost_ratio,
        dup_threshold=args.dup_threshold, positive_class=args.positive_class, views=not args.no_views,
        epochs=args.epochs, fine_tune_epochs=args.fine_tune_epochs, learning_rate=args.lr,
        fine_tune_learning_rate=args.fine_tune_lr, unfreeze_blocks=args.unfreeze_blocks,
        label_smoothing=args.label_smoothing, patience=args.patience, resume=args.resume,
        anomaly_method=args.anomaly_method, target_frr=args.target_frr, coreset_max=args.coreset_max,
        anomaly_banks=args.anomaly_banks,
    )
    try:
        if args.only_folds:
            cfg.only_folds = [int(v) for v in args.only_folds.split(",") if v.strip()]
            bad = [v for v in cfg.only_folds if not 1 <= v <= args.folds * args.repeats]
            if bad:
                raise ValueError(f"--only-folds: {bad} outside 1..{args.folds * args.repeats}")
        self_belt(args.data, args.crop, args)
        s = run_cv(cfg)
    except (DataError, SplitError, WeightsError, ValueError) as e:
        log.error("%s", e)
        return 2
    print(format_summary(s))
    if "operating_point" in s:
        print("operating point (out-of-fold): " + s["operating_point"]["sentence"])
    if s.get("crops"):
        print(f"crops: {s['crops']['sentence']}; contact sheet {Path(args.out) / 'crops.png'}")
        if s["crops"].get("warning"):
            print(f"WARNING: {s['crops']['warning']}")
    print(f"out-of-fold scores: {Path(args.out) / 'oof_scores.csv'}; summary: {Path(args.out) / 'summary.json'}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from edge.judge.localize import CropSpec, shaped
    from training.data import DataError
    from training.model import WeightsError
    from training.split import SplitError
    from training.train import TrainConfig, train

    if args.crop == "background" and args.background is None:
        log.error("--crop background needs --background FILE (an empty-belt reference image)")
        return 2
    if args.background is not None and not args.background.is_file():
        log.error("--background %s: no such file", args.background)
        return 2
    try:
        empty = _empty_belt(args.empty, args.crop)
    except ValueError as e:
        log.error("--empty: %s", e)
        return 2
    try:
        finder = args.finder = finder_arg(args.finder, args.crop, recipe_takes_it=args.recipe != "anomaly",
                                          reference=args.empty is not None or args.background is not None)
    except ValueError as e:
        log.error("%s", e)
        return 2
    crop = CropSpec(method=args.crop, margin=args.crop_margin, empty_belt=empty,
                    background_file=str(args.background.resolve()) if args.background else None)
    if args.recipe == "linear":  # the anomaly recipe always cuts the aligned crop (training/anomaly.py)
        crop = shaped(crop, args.crop_shape)

    try:
        img_size, scales = img_size_and_scales(args.img_size, args.scales,
                                                LINEAR_IMG_SIZE if args.recipe != "finetune" else 160)
    except ValueError as e:
        log.error("%s", e)
        return 2
    cfg = TrainConfig(
        data_dir=args.data, out_dir=args.out,
        classes=[c.strip() for c in args.classes.split(",")] if args.classes else None,
        positive_class=args.positive_class,
        img_size=img_size, alpha=args.alpha, scales=scales,
        pooling=pooling_for(args.pooling, args.recipe, img_size, scales, args.flip_tta),
        weights=for_recipe(args.weights, args.recipe, args.alpha), crop=crop, finder=finder, recipe=args.recipe, C=args.C,
        flip_tta=args.flip_tta,
        target_recall=args.target_recall, cost_ratio=args.cost_ratio,
        epochs=args.epochs, fine_tune_epochs=args.fine_tune_epochs, unfreeze_blocks=args.unfreeze_blocks,
        batch_size=args.batch_size, learning_rate=args.lr, fine_tune_learning_rate=args.fine_tune_lr,
        dropout=args.dropout, patience=args.patience, balance=args.balance, augment=not args.no_augment,
        val_frac=args.val_frac, test_frac=args.test_frac, dup_threshold=args.dup_threshold,
        split_manifest=args.split_manifest, seed=args.seed, overwrite=args.overwrite, save_phase1=args.save_phase1,
        verbose=0 if args.quiet else "auto", anomaly_method=args.anomaly_method, target_frr=args.target_frr,
        coreset_max=args.coreset_max, anomaly_banks=args.anomaly_banks,
    )
    try:
        cfg.extra["self_belt"] = self_belt(args.data, args.crop, args)  # recorded: evaluate crops alike
        run = train(cfg)
    except (DataError, SplitError, WeightsError, FileExistsError, ValueError) as e:
        log.error("%s", e)
        return 2
    print(f"run directory: {run}")
    if args.evaluate:
        return _evaluate(argparse.Namespace(run=run, target_recall=args.target_recall, split="test",
                                            cost_ratio=args.cost_ratio, no_self_belt=True,
                                            self_belt=False))  # learned above, if at all
    if args.recipe == "anomaly":  # its test-side metrics are in RUN/metrics.json already
        print(f"next: boxinspect convert {run}")
        return 0
    print(f"next: boxinspect evaluate {run}")
    return 0


def evaluate_self_belt(run: Path, args: argparse.Namespace) -> None:
    """Crop the run's images as train did: the self-learned belt when train learned one (train_config.json
    extra.self_belt; runs without that record: the recipe's default), unless --no-self-belt."""
    try:
        cfg = json.loads((run / "train_config.json").read_text())
        crop = cfg.get("crop") or {}
        learned = (cfg.get("extra") or {}).get("self_belt")
        self_belt(Path(cfg["data_dir"]), crop.get("method", "none"),
                  argparse.Namespace(background=crop.get("background_file"), empty=crop.get("empty_belt"),
                                     recipe=cfg.get("recipe"), self_belt=learned is True or args.self_belt,
                                     no_self_belt=args.no_self_belt or learned is False))
    except (OSError, ValueError, KeyError) as e:
        log.warning("self-learned belt skipped: %s", e)


def _evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import EvaluateError, evaluate

    evaluate_self_belt(Path(args.run), args)
    try:
        m = evaluate(args.run, target_recall=args.target_recall, split=args.split,
                     cost_ratio=getattr(args, "cost_ratio", None), empty_belt=getattr(args, "empty", None))
    except EvaluateError as e:
        log.error("%s", e)
        return 2
    print(m["classification_report_text"])
    at = m["at_threshold"]
    sel = m["threshold_selection"]
    print(
        f"ROC AUC {m['roc_auc']:.3f} | threshold {m['threshold']:.3f} ({sel.get('rule')}, on {sel['split']}): "
        f"recall {at['recall']:.3f} precision {at['precision']:.3f} | at 0.5: recall {m['at_0.5']['recall']:.3f} "
        f"precision {m['at_0.5']['precision']:.3f}"
    )
    if "multi_view" in m:
        mv = m["multi_view"]
        views = ", ".join(f"{v} AUC {r['auc']:.3f}" for v, r in mv["per_view"].items() if r["auc"] is not None)
        parts = ", ".join(f"{rule} AUC {r['auc']:.3f}" for rule, r in mv["per_part"].items() if r["auc"] is not None)
        print(f"per view: {views} | per part ({mv['per_part']['max']['n_parts']} parts), fused: {parts}")
    for k, r in m["operating_point"].items():
        print(f"operating point on {k}: {r['sentence']}")
    print(f"report: {Path(args.run) / 'report' / 'report.html'}")
    print(json.dumps({"threshold": m["threshold"], "roc_auc": m["roc_auc"]}))
    return 0
