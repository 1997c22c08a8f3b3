"""Say when the localiser cannot: crop statistics, a contact sheet of crops (worst first) and the fallback warning.

Used by ``boxinspect localize`` (check a data set before training), ``train``, ``cv`` and ``evaluate`` (each
writes ``crops.json`` and logs the same summary). A *fallback* is an image whose crop is the whole frame
although the crop method is not ``none``: no box was found, the scene looked cluttered, or the box fills the
frame (a box-centred photo; that one is fine and counted apart). Only OpenCV and numpy: no TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import logging
import weakref
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.judge.beltmodel import BeltModel, BeltSet
from edge.judge.boxfinder import BoxFinder, FoundBox
from edge.judge.localize import (
    CropSpec,
    Located,
    crop,
    grown,
    load_background,
    load_belt,
    locate_for_still,
    shape_of,
    shaped,
)

log = logging.getLogger(__name__)

FALLBACK_WARN = 0.20  # warn when more than this share of the images fall back to the whole frame
_FILLS = "fills the frame"


def reason_key(reason: str) -> str:
    """A reason without its numbers, to count alike reasons together (and label a Prometheus metric)."""
    r = reason.lower()
    for key, words in (("fills_frame", (_FILLS,)), ("cluttered", ("cluttered",)),
                       ("faint", ("stands out only",)), ("too_small", ("min_area",)),
                       ("nothing", ("nothing stands out",)), ("method_none", ("crop method none",)),
                       ("empty_belt", ("learned empty belt",))):
        if any(w in r for w in words):
            return key
    return "other"


@dataclass
class CropRecord:
    """One image's crop: what ``boxinspect localize --json`` lists."""

    path: str
    found: bool  # a box was cropped (not the whole frame)
    method: str  # background, texture, salient, learned (--finder), or whole
    box: list[int] | None  # x0, y0, x1, y1 in image pixels (x1/y1 exclusive), None for the whole frame
    reason: str  # why the whole frame ("" when a box was cropped)
    iou: float | None = None  # against known ground truth (synth parts.json), when there is one


def outcome(loc: Located) -> tuple[str, str]:
    """``(outcome, reason key)`` of one frame: box / whole_frame (fallback or fills the frame) / no_box."""
    if not loc.found:
        return "no_box", reason_key(loc.reason)
    if loc.whole or loc.bbox is None:
        return "whole_frame", reason_key(loc.reason)
    return "box", loc.method


def count_located(metrics: Any, loc: Located) -> None:
    """The daemon's counter call: one frame's localiser outcome into ``boxinspect_localizer_frames``."""
    metrics.localizer.labels(*outcome(loc)).inc()


def localizer_counts(metrics: Any) -> dict[str, int]:
    """``{"outcome/reason": frames}`` from the daemon's counter (for /status and the operator page)."""
    out: dict[str, int] = {}
    for fam in metrics.localizer.collect():
        for smp in fam.samples:
            if smp.name.endswith("_total"):
                out[f"{smp.labels['outcome']}/{smp.labels['reason']}"] = int(smp.value)
    return out


def record(path: str, loc: Located) -> CropRecord:
    found = not loc.whole and loc.bbox is not None
    return CropRecord(path, found, loc.method, list(loc.bbox) if found and loc.bbox else None,
                      "" if found else loc.reason)


@dataclass
class CropStats:
    """How many images were cropped, how many fell back to the whole frame, and why."""

    n: int = 0
    cropped: int = 0
    fills_frame: int = 0  # whole frame because the box fills it (box-centred photos: not a failure)
    fallback: int = 0  # whole frame for any other reason
    reasons: dict[str, int] = field(default_factory=dict)  # reason key -> count (fallbacks and fills_frame)
    methods: dict[str, int] = field(default_factory=dict)
    iou_ge_08: float | None = None  # share of images with ground truth whose crop has IoU >= 0.8

    @property
    def fallback_share(self) -> float:
        return self.fallback / self.n if self.n else 0.0

    def sentence(self) -> str:
        why = ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items(), key=lambda kv: -kv[1]))
        s = (f"box cropped in {self.cropped} of {self.n} images; whole frame: {self.fallback} fallback(s) "
             f"({self.fallback_share:.0%}), {self.fills_frame} where the box fills the frame")
        if why:
            s += f" [reasons: {why}]"
        if self.iou_ge_08 is not None:
            s += f"; IoU >= 0.8 with the known boxes on {self.iou_ge_08:.0%}"
        return s

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fallback_share": round(self.fallback_share, 4), "sentence": self.sentence()}


def summarise(records: list[CropRecord]) -> CropStats:
    st = CropStats(n=len(records))
    reasons: Counter[str] = Counter()
    for r in records:
        st.methods[r.method] = st.methods.get(r.method, 0) + 1
        if r.found:
            st.cropped += 1
            continue
        key = reason_key(r.reason)
        reasons[key] += 1
        if key in ("fills_frame", "method_none"):
            st.fills_frame += 1
        else:
            st.fallback += 1
    st.reasons = dict(reasons)
    with_truth = [r.iou for r in records if r.iou is not None]
    if with_truth:
        st.iou_ge_08 = round(float(np.mean(np.array(with_truth) >= 0.8)), 4)
    return st


def fallback_warning(st: CropStats, spec: CropSpec) -> str | None:
    """The warning a line engineer needs when more than 20% of the images fall back to the whole frame."""
    if spec.method == "none" or not st.n or st.fallback_share <= FALLBACK_WARN:
        return None
    return (f"the localiser fell back to the whole frame on {st.fallback} of {st.n} images "
            f"({st.fallback_share:.0%} > {FALLBACK_WARN:.0%}): the model will partly judge the belt. What to do: "
            "give an empty-belt photo (--background FILE), or use a fixed camera so one can be taken; check the "
            "ROI (roi.* in the config) so the frame shows the belt and little else; run `boxinspect localize DATA "
            "--sheet crops.png` and look at the worst crops; for photos already centred on the box, train with --crop none")


_FOUND: weakref.WeakKeyDictionary[BoxFinder, dict[str, FoundBox]] = weakref.WeakKeyDictionary()
_FOUND_MAX = 50_000  # answers kept per finder (a few hundred bytes each); cleared when full
FILLS_KEEP = 0.9  # a learned box whose crop (margin, square) would keep this share of the image or more fills it
# how a learned box becomes a crop (part of the feature cache key): 1 every box cropped; 2 FILLS_KEEP (the box fills
# the frame: the whole image, as the search says for box-centred photos); 3 a frame smaller than the finder's long
# side is no longer enlarged to it (boxfinder.input_size); 4 the box carries its rotated rectangle (an upright crop
# turns by it), and whether it fills the frame is judged on the square crop whatever the crop's shape
LEARNED_RULE_VERSION = 4


def kept_share(box: tuple[int, int, int, int], shape: tuple[int, ...], spec: CropSpec) -> float:
    """The share of an image of ``shape`` that the square crop (``spec``'s own when it is square, else the default
    margin) around ``box`` would keep: whether a box fills the frame does not depend on the crop's shape (a tight
    upright crop keeps less of a box-centred photo, which is still a box-centred photo)."""
    if shape_of(spec) != "square":
        spec = spec.model_copy(update={"rotated": False, "square": True, "margin": CropSpec().margin})
    x0, y0, x1, y1 = grown(float(box[0]), float(box[1]), float(box[2]), float(box[3]), spec)
    h, w = shape[:2]
    kept = max(0.0, min(x1, w) - max(x0, 0.0)) * max(0.0, min(y1, h) - max(y0, 0.0))
    return kept / float(h * w)


def as_located(got: FoundBox, shape: tuple[int, ...], spec: CropSpec) -> Located | None:
    """The finder's answer as a :class:`Located` (method ``learned``), or None for "no box". A box whose crop would
    keep :data:`FILLS_KEEP` of the image or more fills the frame: the whole image (a box-centred photo, not
    shrunk by the margin with its border smeared). A kept crop is never searched: ``localize.already_cropped``."""
    if got.box is None:
        log.debug("learned finder: no box (%s)", got.reason)
        return None
    x0, y0, x1, y1 = got.box
    area = (x1 - x0) * (y1 - y0) / (shape[0] * shape[1])
    keep = kept_share(got.box, shape, spec)
    if keep >= FILLS_KEEP:
        return Located(True, "whole", (0, 0, shape[1], shape[0]), None, 1.0,
                       f"learned box's crop keeps {keep:.0%} of the image: the box {_FILLS}")
    return Located(True, "learned", got.box, got.rotated, area)


def learned_box(bgr: np.ndarray, finder: BoxFinder, spec: CropSpec) -> Located | None:
    """:func:`as_located` of the finder's answer on ``bgr``. Not remembered: what the daemon calls on each new
    frame."""
    return as_located(finder.find(bgr), bgr.shape, spec)


def learned_first(bgr: np.ndarray, finder: BoxFinder, spec: CropSpec) -> Located | None:
    """:func:`learned_box`, the finder's answer remembered per finder and photo content: train and cv ask for the
    same photo in the self-belt check, the crop report and the features, and the finder runs once."""
    memo = _FOUND.setdefault(finder, {})
    key = hashlib.blake2b(bgr.tobytes() + str(bgr.shape).encode(), digest_size=16).hexdigest()
    got = memo.get(key)
    if got is None:
        got = finder.find(bgr)
        if len(memo) >= _FOUND_MAX:
            memo.clear()
        memo[key] = got
    return as_located(got, bgr.shape, spec)


def locate_still(bgr: np.ndarray, spec: CropSpec, background: np.ndarray | None = None,
                 belt: BeltModel | BeltSet | None = None, finder: BoxFinder | None = None,
                 remember: bool = True) -> Located:
    """One still's box as every still-cropping place takes it (localize, train, cv, evaluate, convert, predict):
    with a ``finder`` its box first (method ``learned``), ``spec``'s search only where it finds none; the whole
    frame with method ``none``. ``remember``: keep the finder's answer per photo content (:func:`learned_first`;
    train and cv ask for a photo several times), False where each image comes once (predict, the API)."""
    loc = None
    if finder is not None:
        loc = learned_first(bgr, finder, spec) if remember else learned_box(bgr, finder, spec)
    if loc is not None:
        return loc
    if spec.method == "none":
        return Located(True, "whole", (0, 0, bgr.shape[1], bgr.shape[0]), None, 1.0, "crop method none")
    return locate_for_still(bgr, spec, background, belt)


_FINDERS: dict[tuple[str, int, int], BoxFinder] = {}  # (resolved path, size, mtime_ns) -> loaded finder


def finder_sha256(path: str | Path) -> str:
    """The finder file's sha256 (recorded with a run; part of the feature cache key)."""
    from edge.judge.model_package import sha256_file

    return sha256_file(path)


def open_finder(path: str | Path) -> BoxFinder:
    """The ``--finder`` model, loaded once per file (path, size and modification time: train and cv ask for it per
    image, so the file is not read again); ValueError (one line naming ``--finder``) when the file is missing or not
    a box finder."""
    from edge.judge.interpreter import ModelError

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--finder {p}: no such file")
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FINDERS:
        try:
            _FINDERS[key] = BoxFinder(p)
        except (ModelError, ValueError) as e:
            raise ValueError("--finder: " + " ".join(str(e).split())) from e  # one line
    return _FINDERS[key]


def finder_boxes_all(paths: list[Path], finder: BoxFinder, spec: CropSpec) -> bool:
    """Whether the finder gives a box on every readable photo: then no photo reaches the --crop search and the
    self-learned belt (minutes) would never be asked, so it need not be learned. Stops at the first miss."""
    from edge.judge.images import read_bgr

    for p in paths:
        bgr = read_bgr(p)
        if bgr is not None and learned_first(bgr, finder, spec) is None:
            log.info("self-learned belt: the finder found no box on %s, so the belts are learned for the search", p)
            return False
    log.info("self-learned belt: not learned, the finder gave a box on all %d photos", len(paths))
    return True


def finder_choice(value: str | None, crop: str, reference: bool = False) -> str | None:
    """The finder a command crops with: ``--finder`` absent -> the built-in finder (:data:`boxfinder.BUILTIN`) when
    the crop is ``auto`` (the default) and no empty-belt ``reference`` of the user's own camera was given
    (--background / --empty: the crop then trusts it), none otherwise; ``none`` -> no finder (the --crop search
    alone); anything else is a path (checked by :func:`open_finder` where it is used)."""
    if value is None:
        if crop != "auto" or reference:
            return None
        from edge.judge.boxfinder import BUILTIN

        if not BUILTIN.is_file():  # an install without its package data: say so, crop as before
            log.warning("the built-in box finder %s is missing (a broken install?): cropping with the --crop search "
                        "alone", BUILTIN)
            return None
        return str(BUILTIN)
    return None if value.strip().lower() == "none" else value


def recorded_finder(rec: dict[str, str] | None) -> str | None:
    """The finder file a run recorded (:func:`finder_record`), or None; ValueError (one line naming ``--finder``)
    when it is missing or its content changed: the images would be cropped otherwise than in training."""
    if not rec:
        return None
    path = Path(rec["path"])
    if not path.is_file() or finder_sha256(path) != rec["sha256"]:
        raise ValueError(f"--finder: the run was cropped with the learned finder {path} (sha256 "
                         f"{rec['sha256'][:12]}...), which is missing or changed here")
    return str(path)


def finder_record(path: str | Path | None) -> dict[str, str] | None:
    """What a run records about its ``--finder`` (path and sha256), or None without one."""
    return None if not path else {"path": str(Path(path).resolve()), "sha256": finder_sha256(path)}


def locate_files(paths: list[Path], spec: CropSpec, root: Path | None = None, background: np.ndarray | None = None,
                 belt: BeltModel | BeltSet | None = None,
                 finder: BoxFinder | None = None) -> tuple[list[CropRecord], list[np.ndarray]]:
    """Locate the box in every readable file; the records (paths relative to ``root``) and small crops. With a
    ``finder``, its box first, and ``spec``'s search only where it finds none (:func:`locate_still`)."""
    if background is None and spec.background_file:
        background = load_background(spec.background_file)
    records: list[CropRecord] = []
    thumbs: list[np.ndarray] = []
    for p in paths:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        loc = locate_still(bgr, spec, background, belt, finder)
        rel = Path(p).relative_to(root).as_posix() if root else str(p)
        records.append(record(rel, loc))
        thumbs.append(_thumb(bgr, loc, spec))
    return records, thumbs


def _thumb(bgr: np.ndarray, loc: Located, spec: CropSpec, side: int = 128) -> np.ndarray:
    """The frame with the box drawn (small) beside the crop the model sees."""
    frame = bgr.copy()
    if not loc.whole and loc.bbox is not None:
        x0, y0, x1, y1 = loc.bbox
        cv2.rectangle(frame, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 255), max(2, bgr.shape[1] // 200))
    f = cv2.resize(frame, (int(round(side * bgr.shape[1] / bgr.shape[0])), side), interpolation=cv2.INTER_AREA)
    c = cv2.resize(crop(bgr, loc, spec), (side, side), interpolation=cv2.INTER_AREA)
    return np.hstack([f, c])


def known_views(data_dir: Path) -> list[dict[str, Any]]:
    """Per photo of a synth data set (its ``parts.json``): file, view, frame bbox and rotated rectangle (None in a
    manifest without one); [] when there is no ``parts.json``."""
    man = Path(data_dir) / "parts.json"
    if not man.is_file():
        return []
    return [{"file": v["file"], "view": view, "bbox": v["bbox"], "rotated": v.get("rotated")}
            for p in json.loads(man.read_text())["parts"] for view, v in p["views"].items()]


def add_truth(records: list[CropRecord], data_dir: Path) -> bool:
    """Fill ``iou`` from a synth ``parts.json`` in ``data_dir`` (known boxes); False when there is none."""
    from edge.judge.localize import iou

    views = known_views(data_dir)
    if not views:
        return False
    truth = {v["file"]: v["bbox"] for v in views}
    for r in records:
        if r.path in truth:
            r.iou = round(iou(r.box, truth[r.path]), 4) if r.box else 0.0
    return True


def worst_first(records: list[CropRecord]) -> list[int]:
    """Indices, worst first: fallbacks, then the lowest IoU (when known), then the rest."""
    def key(i: int) -> tuple[int, float]:
        r = records[i]
        return (0 if not r.found and reason_key(r.reason) != "fills_frame" else 1,
                r.iou if r.iou is not None else 1.0)
    return sorted(range(len(records)), key=key)


def crop_sheet(records: list[CropRecord], thumbs: list[np.ndarray], path: Path, limit: int = 48,
               cols: int = 4) -> Path:
    """A contact sheet: per image the frame (box drawn) and its crop, worst first, labelled with the reason."""
    order = worst_first(records)[:limit]
    if not order:
        raise ValueError("no readable images for the crop sheet")
    tiles = []
    h = max(thumbs[i].shape[0] for i in order)
    w = max(thumbs[i].shape[1] for i in order)
    for i in order:
        t = cv2.copyMakeBorder(thumbs[i], 0, h - thumbs[i].shape[0] + 34, 0, w - thumbs[i].shape[1],
                               cv2.BORDER_CONSTANT, value=(255, 255, 255))
        r = records[i]
        head = (f"{r.method}" + (f" IoU {r.iou:.2f}" if r.iou is not None else "")) if r.found else \
            f"WHOLE: {reason_key(r.reason)}"
        colour = (0, 140, 0) if r.found else (0, 0, 200)
        cv2.putText(t, head, (4, h + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, colour, 1, cv2.LINE_AA)
        cv2.putText(t, Path(r.path).name[:48], (4, h + 28), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (60, 60, 60), 1,
                    cv2.LINE_AA)
        tiles.append(cv2.copyMakeBorder(t, 3, 3, 3, 3, cv2.BORDER_CONSTANT, value=(255, 255, 255)))
    while len(tiles) % cols:
        tiles.append(np.full_like(tiles[0], 255))
    rows = [np.hstack(tiles[i:i + cols]) for i in range(0, len(tiles), cols)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.vstack(rows)):
        raise OSError(f"could not write {path}")
    return path


def write_json(records: list[CropRecord], st: CropStats, spec: CropSpec, path: Path,
               finder: dict[str, str] | None = None) -> Path:
    doc = {"crop": spec.model_dump(mode="json"), "summary": st.to_dict(),
           "images": [{k: v for k, v in asdict(r).items() if k != "iou" or v is not None} for r in records]}
    if finder:
        doc["finder"] = finder
    Path(path).write_text(json.dumps(doc, indent=1))
    return Path(path)


def report_crops(paths: list[Path], spec: CropSpec, out_dir: Path, root: Path | None = None,
                 sheet: bool = True, finder: str | None = None) -> CropStats:
    """What train / cv / evaluate call: locate every image (the ``finder`` file's box first, when given), write
    ``out_dir/crops.json`` (and ``crops.png``, worst first), log the summary and, above 20% fallbacks, the
    warning."""
    records, thumbs = locate_files(paths, spec, root, finder=open_finder(finder) if finder else None)
    if root is not None:
        add_truth(records, root)
    st = summarise(records)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(records, st, spec, out_dir / "crops.json", finder_record(finder))
    if sheet and records:
        crop_sheet(records, thumbs, out_dir / "crops.png", limit=24)  # the report embeds it: the worst 24
    first = f"learned finder {finder} (box on {st.methods.get('learned', 0)}), else " if finder else ""
    log.info("crop %s%s: %s", first, spec.describe(), st.sentence())
    warn = fallback_warning(st, spec)
    if warn:
        log.warning("%s", warn)
    return st


LOCALIZE_HELP = """\
Check the box localiser on a folder of images before training: for every image, where the box is (or why the
crop would be the whole frame). The same code crops for train, convert, predict and the daemon.

--json lists per image: path, found, method, box [x0, y0, x1, y1] and reason (and iou when DATA holds a synth
parts.json with the known boxes). --sheet draws a contact sheet, worst first: each frame with its box beside the
crop the model would see. More than 20% whole-frame fallbacks gets a warning that says what to do.

--empty DIR: frames of the EMPTY belt (the belt moving between them): DIR/*.png for one camera, or one
sub-folder per camera (DIR/<line>/<view>/*.png, as `boxinspect synth --scenes belt` writes DATA/empty/); each
image is judged against the camera whose empty belt it matches best. DATA/empty/ itself is not searched.

--finder: the learned box finder answers first; where it finds no box the --crop search answers (records of the
finder say method "learned"). With --crop auto (the default) it is the built-in finder, a model trained on
rendered belt and line scenes with known boxes (edge/assets/boxfinder.tflite; docs/RESULTS.md "The built-in
learned box finder"); --finder F.tflite uses your own (`boxinspect boxfinder build`), --finder none the search
alone.
"""


def _finder(path: str | None) -> BoxFinder | None:
    """The ``--finder`` model, or None (none given, or it cannot be loaded: logged)."""
    if not path:
        return None
    try:
        return open_finder(path)
    except ValueError as e:
        log.error("localize: %s", e)
        return None


def _cmd_localize(args: Any) -> int:
    from edge.judge.localize import CropSpec

    data = Path(args.data)
    if not data.is_dir():
        log.error("localize: %s is not a folder", data)
        return 2
    if args.background is not None and not Path(args.background).is_file():
        log.error("localize: --background %s: no such file", args.background)
        return 2
    spec = shaped(CropSpec(method=args.crop, background_file=str(args.background) if args.background else None,
                           empty_belt=str(args.empty) if args.empty else None), args.crop_shape)
    try:
        belt = load_belt(args.empty, spec.work_size) if args.empty else None
    except ValueError as e:
        log.error("localize: --empty: %s", e)
        return 2
    from edge.judge.selfbelt import data_photos

    paths = data_photos(data, [Path(args.empty)] if args.empty else [])
    if not paths:
        log.error("localize: no images under %s", data)
        return 2
    finder_path = finder_choice(args.finder, spec.method, reference=bool(args.background or args.empty))
    finder = _finder(finder_path)  # before the belt is learned (minutes): a bad --finder stops at once
    if finder_path and finder is None:
        return 2
    if (spec.method == "auto" and belt is None and not args.background and not args.no_self_belt
            and not (finder is not None and finder_boxes_all(paths, finder, spec))):
        from edge.judge.selfbelt import learn_stills

        learn_stills(paths, spec)
    records, thumbs = locate_files(paths, spec, data, belt=belt, finder=finder)
    add_truth(records, data)
    st = summarise(records)
    if args.json:
        write_json(records, st, spec, Path(args.json), finder_record(finder_path) if finder else None)
    if args.sheet and records:
        crop_sheet(records, thumbs, Path(args.sheet), limit=args.limit)
    warn = fallback_warning(st, spec)
    if warn:
        log.warning("%s", warn)
    first = f"learned finder {finder_path} (box on {st.methods.get('learned', 0)}), else " if finder else ""
    print(f"crop {first}{spec.describe()}: {st.sentence()}")  # noqa: T201 - the CLI's summary
    for p in (args.json, args.sheet):
        if p:
            print(f"wrote {p}")  # noqa: T201
    return 0


def register(sub: Any) -> None:
    import argparse

    from edge.judge.localize import CROP_METHODS, CROP_SHAPES, DEFAULT_SHAPE

    p = sub.add_parser("localize", help="check where the localiser finds the box in a folder of images",
                       description=LOCALIZE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  boxinspect localize data/line --sheet crops.png --json crops.json")
    p.add_argument("data", metavar="DATA", help="folder of images (searched recursively, e.g. DATA/<class>/*.jpg)")
    p.add_argument("--crop", choices=CROP_METHODS, default="auto", help="crop method (default auto, as train)")
    p.add_argument("--background", default=None, metavar="FILE", help="empty-belt reference image")
    p.add_argument("--empty", default=None, metavar="DIR", help="folder of >= 8 frames of the EMPTY belt from the same "
                   "camera (the belt moving between them), or one such sub-folder per camera (DIR/<line>/<view>/): "
                   "learn the belt's range per pixel and look for what lies outside it (what the daemon learns "
                   "from frames with no box)")
    p.add_argument("--no-self-belt", action="store_true",
                   help="do not learn each camera's belt from these photos themselves (default with auto and no "
                        "--background/--empty: photos grouped by camera, groups of >= 8 photos get a belt model "
                        "learned with their boxes masked; edge/judge/selfbelt.py)")
    p.add_argument("--finder", default=None, metavar="F.tflite|none",
                   help="the learned box finder: its box first (method learned in --json), the --crop search only "
                        "where it finds no box (edge/judge/boxfinder.py). Default with --crop auto: the built-in "
                        "finder (edge/assets/boxfinder.tflite); a file from `boxinspect boxfinder build`; none: the "
                        "--crop search alone")
    p.add_argument("--crop-shape", choices=CROP_SHAPES, default=DEFAULT_SHAPE,
                   help="the crop's shape on the sheet, as train cuts it: aligned (default: the box turned upright, "
                        "cut tight) or square (its bounding box plus a margin, padded to a square)")
    p.add_argument("--sheet", default=None, metavar="PNG", help="write a contact sheet of crops, worst first")
    p.add_argument("--json", default=None, metavar="FILE", help="write per-image results as JSON")
    p.add_argument("--limit", type=int, default=48, metavar="N", help="images on the sheet (default 48)")
    p.set_defaults(func=_cmd_localize)
