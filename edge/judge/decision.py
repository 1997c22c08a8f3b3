"""Frames -> one decision per box.

``ContinuousDecider`` watches a moving belt: a cheap presence signal (background subtraction, or the
model's score with hysteresis) cuts the frame stream into box passages, and the scores of the frames
of one passage are aggregated into ONE decision. ``TriggeredDecider`` decides on the next few frames
after an external trigger (a PLC or light barrier via MQTT or HTTP) and tags the decision with its
part id. See docs/DECISION.md for the approach and its failure modes.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from edge.config import DecisionConfig, PresenceConfig
from edge.judge.fusion import fuse
from edge.judge.records import Evidence, FrameRecord, make_evidence, nearest_on_side
from edge.runtime.timeutil import iso_utc
from edge.state import verdict

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
IDLE_BLOCK = 4  # idle_skip compares thumbnails of the shrunk ROI averaged over blocks of this many pixels squared
_RESIZE = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}
EDGE_MARGIN = 2  # foreground within this many (downscaled) pixels of the left/right ROI edge "touches" it
FALLBACK_SHARE = 0.8  # no frame fully inside: use frames whose foreground is >= this share of the largest
MAX_PENDING_TRIGGERS = 100
EDGE_GROWTH = 1.2  # entering box: score again once its foreground grew by this factor ...
EDGE_SCORE_EVERY = 5  # ... or after this many unscored present frames


@dataclass
class Decision:
    event_id: str
    part_id: str | None
    label: str
    is_defect: bool
    score: float | None  # the aggregate the decision was made on; None for a timeout decision
    max_score: float | None
    mean_score: float | None
    frame_count: int  # frames whose scores were aggregated (0 for a timeout decision)
    first_frame: int | None  # first frame of the passage (continuous) or first frame used (triggered)
    last_frame: int | None
    threshold: float
    model_id: str
    captured_at: float | None  # capture time of the last frame used; None for a timeout decision
    decided_at: float
    mode: str  # "continuous" | "triggered"
    views: dict[str, dict[str, Any]] | None = None  # several views of one part: per view score, no_box, frames
    fusion: str | None = None  # the rule that fused the views' scores into ``score``
    # Deadline bookkeeping (edge/judge/deadline.py), filled in before the decision is published.
    kind: str = "model"  # "model": the classifier decided; "timeout": no decision by the deadline (fail-safe policy)
    action: str | None = None  # what the reject actuator does: "reject" | "pass" | "hold"
    reason: str | None = None  # why a timeout decision was made
    deadline_at: float | None = None  # when the part reaches the pusher (epoch seconds)
    slack_ms: float | None = None  # deadline_at - decided_at in ms (negative: late)
    late: bool | None = None  # the decision missed its deadline
    # What decided (edge/judge/records.py): the frames used, their scores and the representative record. Several views:
    # ``view_evidence`` has one entry per view that voted and ``evidence`` is the representative view's.
    evidence: Evidence | None = None
    view_evidence: dict[str, Evidence] | None = None

    @property
    def representative(self) -> FrameRecord | None:
        """The record that stands for this decision (evidence JPEGs, page, feedback); None for a timeout."""
        return self.evidence.representative if self.evidence is not None else None

    def to_event(self, line: str, camera: str) -> dict[str, Any]:
        """The JSON event (docs/EVENTS.md, edge/event.schema.json); ``evidence`` is filled by the daemon."""

        def num(x: float | None) -> float | None:
            return None if x is None else round(float(x), 6)

        return {
            "schema_version": SCHEMA_VERSION,
            "event_id": self.event_id,
            "line": line,
            "camera": camera,
            "part_id": self.part_id,
            "kind": self.kind,
            "label": self.label,
            "is_defect": bool(self.is_defect),
            "action": self.action or ("reject" if self.is_defect else "pass"),
            "reason": self.reason,
            "score": num(self.score),
            "max_score": num(self.max_score),
            "mean_score": num(self.mean_score),
            "frame_count": int(self.frame_count),
            "first_frame": None if self.first_frame is None else int(self.first_frame),
            "last_frame": None if self.last_frame is None else int(self.last_frame),
            "threshold": float(self.threshold),
            "model_id": self.model_id,
            "captured_at": None if self.captured_at is None else iso_utc(self.captured_at),
            "decided_at": iso_utc(self.decided_at),
            "deadline_at": None if self.deadline_at is None else iso_utc(self.deadline_at),
            "slack_ms": None if self.slack_ms is None else round(float(self.slack_ms), 1),
            "late": self.late,
            "mode": self.mode,
            "evidence": None,
            **({"fusion": self.fusion, "views": {v: dict(d) for v, d in self.views.items()}} if self.views else {}),
            **({"decided_on": self.evidence.to_json()} if self.evidence is not None else {}),
        }


@dataclass
class _Record:
    index: int
    captured_at: float
    score: float | None
    fraction: float = 0.0  # foreground share of the ROI
    inside: bool = False  # foreground clear of the ROI's left/right edges (the whole box is in view)
    src: FrameRecord | None = None  # what the loop handed in (scored frames; dropped once it cannot be used)


@dataclass
class _Passage:
    first: int
    last: int
    present: int = 0  # present frames
    absent: int = 0  # consecutive absent frames since the last present one
    records: list[_Record] = field(default_factory=list)
    has_inside: bool = False  # a scored frame with the whole box in view
    edge_best: float = 0.0  # largest foreground among scored frames where the box touched an edge
    since_edge_score: int = 0  # present frames since the last such frame was scored


@dataclass
class Foreground:
    fraction: float  # share of ROI pixels that are foreground (0 while learning)
    inside: bool  # foreground present and clear of the left/right edges
    learning: bool  # still learning the empty belt
    restored: bool = False  # the scene went back to the background learned before the last relearn


_IDLE = Foreground(0.0, False, False)  # what an unchanged empty belt measures (idle_skip)


def _labels(labels: Sequence[str]) -> tuple[str, str]:
    labels = tuple(labels)
    if len(labels) != 2 or not all(isinstance(x, str) and x for x in labels):
        raise ValueError(f"labels must be two class names (negative, positive), got {labels!r}")
    return labels[0], labels[1]


class ForegroundDetector:
    """MOG2 background subtraction on a downscaled ROI (shadows off, morphological clean-up).

    The background model learns only while the ROI is (nearly) empty: while anything covers more than a
    quarter of ``fg_min_fraction`` of it, or a passage is open, learning is frozen so a slow or waiting box
    is not absorbed into the background. Partial foreground that persists for ``fg_history`` frames
    outside a passage (a new object parked at the edge, a local lighting change) is accepted as the new
    background: the model is relearned.

    After a relearn the previous model (the empty belt) is kept: while the frame matches its background
    image again (a stopped box finally moved on, a lamp was switched off again) it is restored at once,
    so the spot a parked box uncovers does not show up as a "ghost" box. It is dropped when a normal box
    passage under the new model shows the change was permanent (``confirm()``).
    """

    def __init__(self, cfg: PresenceConfig) -> None:
        self.cfg = cfg
        self.freeze_fraction = 0.25 * cfg.fg_min_fraction
        self._open = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        self._close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
        self.resets = 0
        self.restores = 0
        self.seen = 0
        self._old: cv2.BackgroundSubtractorMOG2 | None = None
        self.mog: cv2.BackgroundSubtractorMOG2
        self._old_bg: np.ndarray | None = None
        self._bg_diff = 2.5 * float(np.sqrt(cfg.fg_var_threshold))  # grey levels that count as "different"
        self.skipped = 0  # frames not measured because nothing changed (idle_skip)
        # buffers reused frame after frame (no allocation per frame for the shrunk and blurred ROI)
        self._small: np.ndarray | None = None
        self._blur: np.ndarray | None = None
        self._idle_ref: np.ndarray | None = None
        self._thumb_buf: np.ndarray | None = None
        self._last: Foreground | None = None
        self.reset()

    @property
    def settled(self) -> bool:
        """The empty belt is learned, no relearn is in progress and (nearly) nothing was foreground in the last
        frame measured: less than the share under which the belt keeps being learned."""
        return (self._old is None and self.seen > self.cfg.learning_frames
                and self.last_fraction < self.freeze_fraction)

    def reset(self, keep_old: bool = False) -> None:
        if not keep_old:
            self._old = self._old_bg = None
        elif self._old is None and self.seen > self.cfg.learning_frames:
            # Keep the last model learned on an empty belt (not one learned with a parked box in view).
            self._old, self._old_bg = self.mog, self.mog.getBackgroundImage()
        self.mog = cv2.createBackgroundSubtractorMOG2(
            history=self.cfg.fg_history, varThreshold=self.cfg.fg_var_threshold, detectShadows=False
        )
        self.seen = 0
        self.stuck = 0
        self.last_fraction = 0.0
        self._last = None
        self.version = getattr(self, "version", 0) + 1
        if not keep_old:
            self.shape: tuple[int, ...] | None = None
        self.mask: np.ndarray | None = None

    def relearn(self, why: str, keep_old: bool = True) -> None:
        log.warning("presence: %s; learning the empty belt again (%d frames)", why, self.cfg.learning_frames)
        self.resets += 1
        self.reset(keep_old=keep_old)

    def confirm(self) -> None:
        """A normal passage was seen with the current model: the scene change that caused the last relearn is
        permanent, forget the model from before it."""
        self._old = self._old_bg = None

    def _clean(self, mask: np.ndarray) -> np.ndarray:
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self._open)
        return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, self._close)

    def _shrink(self, roi_bgr: np.ndarray) -> np.ndarray:
        """The ROI at ``fg_width`` px wide (``fg_resize`` interpolation), into a buffer reused frame after frame."""
        h, w = roi_bgr.shape[:2]
        width = self.cfg.fg_width
        if w <= width:
            return roi_bgr
        size = (width, max(1, round(h * width / w)))
        buf = self._small
        if buf is None or buf.shape[1::-1] != size or buf.shape[2:] != roi_bgr.shape[2:]:
            buf = self._small = np.empty((size[1], size[0], *roi_bgr.shape[2:]), np.uint8)
        return cv2.resize(roi_bgr, size, dst=buf, interpolation=_RESIZE[self.cfg.fg_resize])

    def _thumb(self, small: np.ndarray) -> np.ndarray:
        """The shrunk ROI averaged over IDLE_BLOCK x IDLE_BLOCK blocks: camera noise averages out."""
        h, w = small.shape[:2]
        size = (max(1, w // IDLE_BLOCK), max(1, h // IDLE_BLOCK))
        buf = self._thumb_buf
        if buf is None or buf.shape[1::-1] != size or buf.shape[2:] != small.shape[2:]:
            buf = self._thumb_buf = np.empty((size[1], size[0], *small.shape[2:]), np.uint8)
        return cv2.resize(small, size, dst=buf, interpolation=cv2.INTER_AREA)

    def _unchanged(self, thumb: np.ndarray) -> bool:
        """Idle: no block of ``thumb`` moved by more than ``idle_diff`` grey levels since the last measured frame."""
        ref = self._idle_ref
        if ref is None or ref.shape != thumb.shape:
            return False
        diff = cv2.absdiff(thumb, ref)
        return float(diff.max()) <= self.cfg.idle_diff

    def measure(self, roi_bgr: np.ndarray, in_passage: bool = False) -> Foreground:
        """Foreground of this ROI. ``in_passage`` freezes the background model (a box is in view)."""
        small = self._shrink(roi_bgr)
        if self.cfg.idle_skip:
            thumb = self._thumb(small)
            last = self._last
            if (last is not None and not in_passage and last.fraction == 0.0 and not last.learning
                    and self._old is None and self._unchanged(thumb)):
                self.skipped += 1
                return _IDLE  # belt empty and nothing moved since the last measured frame
            if self._idle_ref is None or self._idle_ref.shape != thumb.shape:
                self._idle_ref = np.empty_like(thumb)
            np.copyto(self._idle_ref, thumb)
        small = cv2.GaussianBlur(small, (3, 3), 0, dst=self._blur if self._blur is not None and
                                 self._blur.shape == small.shape else None)
        self._blur = small
        res = self._measure(small, in_passage)
        self._last = res
        return res

    def _measure(self, small: np.ndarray, in_passage: bool) -> Foreground:
        if self.shape is not None and small.shape != self.shape:
            self.relearn(f"ROI size changed from {self.shape} to {small.shape}", keep_old=False)
        self.shape = small.shape
        restored = False
        if self._old is not None and self._old_bg is not None and self._old_bg.shape == small.shape:
            diff = cv2.absdiff(small, self._old_bg)
            if diff.ndim == 3:
                diff = diff.max(axis=2)
            old = self._clean(((diff > self._bg_diff) * 255).astype(np.uint8))
            if cv2.countNonZero(old) / old.size < self.freeze_fraction:
                log.info("presence: the ROI looks like the empty belt learned before again; restored that background")
                self.mog = self._old
                self.version += 1
                self._old = self._old_bg = None
                self.seen = self.cfg.learning_frames
                self.stuck = 0
                self.restores += 1
                restored = True
        self.seen += 1
        learning = self.seen <= self.cfg.learning_frames
        freeze = in_passage or self.last_fraction >= self.freeze_fraction
        rate = -1.0 if learning else (0.0 if freeze else 1.0 / self.cfg.fg_history)
        mask = self.mog.apply(small, learningRate=rate)
        if rate != 0.0:
            self.version += 1  # the background model changed (frozen while a box is in view)
        if learning:
            return Foreground(0.0, False, True)
        mask = self._clean(mask)
        self.mask = mask
        fraction = cv2.countNonZero(mask) / mask.size
        self.last_fraction = fraction
        inside = False
        if fraction > 0:
            n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
            min_area = 0.02 * mask.size  # ignore specks: only blobs of >= 2 % of the ROI decide "touching"
            blobs = [stats[i] for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= min_area]
            mw = mask.shape[1]
            inside = bool(blobs) and all(
                b[cv2.CC_STAT_LEFT] > EDGE_MARGIN and b[cv2.CC_STAT_LEFT] + b[cv2.CC_STAT_WIDTH] < mw - EDGE_MARGIN
                for b in blobs
            )
        self.stuck = self.stuck + 1 if (freeze and not in_passage) else 0
        if self.stuck >= self.cfg.fg_history:
            self.relearn(f"{fraction:.1%} of the ROI stayed foreground for {self.stuck} frames without a box passage")
        return Foreground(float(fraction), inside, False, restored)


class ContinuousDecider:
    """Cuts a frame stream into box passages and makes one decision per passage.

    Per frame: ``rec = FrameRecord(...)``; ``if decider.needs_score(rec): rec.score = model(rec.roi)``, then
    ``decider.update(rec)`` with the SAME record (the presence measured by ``needs_score`` on ``rec.roi`` is
    reused). ``update`` returns a Decision when a passage ends, else None; the Decision carries the records its
    score was aggregated from (edge/judge/records.py).
    """

    def __init__(self, cfg: DecisionConfig, labels: Sequence[str], threshold: float, model_id: str) -> None:
        self.cfg = cfg
        self.presence_cfg = cfg.presence
        self.labels = _labels(labels)
        self.threshold = float(threshold)
        self.model_id = model_id
        self.method = cfg.presence.method
        self.fg = ForegroundDetector(cfg.presence) if self.method in ("foreground", "both") else None
        # A passage that never ends (stopped belt, sudden lighting change) is decided after this many frames
        # and the empty belt is learned again.
        self.max_passage_frames = max(cfg.presence.fg_history, cfg.presence.min_frames + 1)
        self._passage: _Passage | None = None
        self._hyst = False
        self._present = False
        self._cache: tuple[np.ndarray, Foreground] | None = None
        self._roi_size: tuple[int, int] | None = None  # (width, height) of the last ROI measured
        self._background: tuple[tuple[int, int], np.ndarray] | None = None
        self.passages = 0  # decided passages
        self.discarded = 0  # passages shorter than min_frames
        self.no_box_parts = 0  # continuous mode closes no part for lack of a box (a frame with none is not scored)

    @property
    def present(self) -> bool:
        """A box is in view (as of the last frame)."""
        return self._present

    @property
    def in_passage(self) -> bool:
        """A passage is open (box in view, or gone for fewer than gap_frames frames)."""
        return self._passage is not None

    @property
    def box_in_progress(self) -> bool:
        return self.in_passage

    @property
    def belt_empty(self) -> bool:
        """Presence by foreground, the empty belt learned, no passage open and (nearly) nothing in the foreground of
        the last frame measured: less than the share under which the detector keeps learning the belt. The
        capture may then decode fewer frames (``source.idle_fps``)."""
        return self.method == "foreground" and self.fg is not None and self._passage is None and self.fg.settled

    def trigger(self, part_id: str | None = None, at: float | None = None) -> bool:
        """Continuous mode takes no triggers: refused (the API answers 409 before it gets here)."""
        log.warning("trigger for part %s ignored: decision.mode is 'continuous'", part_id)
        return False

    def cancel(self, part_id: str | None) -> bool:
        """The open passage timed out (the camera hung with a box in view): it is over, so the next frame after
        recovery starts a new passage, never the rest of this one (issue 24)."""
        if self._passage is None:
            return False
        self._passage = None
        return True

    def _foreground(self, roi_bgr: np.ndarray) -> Foreground | None:
        if self.fg is None:
            return None
        if self._cache is not None and self._cache[0] is roi_bgr:
            return self._cache[1]
        res = self.fg.measure(roi_bgr, in_passage=self._passage is not None)
        self._cache = (roi_bgr, res)
        self._roi_size = (int(roi_bgr.shape[1]), int(roi_bgr.shape[0]))
        return res

    def stats(self) -> dict[str, Any]:
        fg = self.fg
        return {
            "mode": "continuous",
            "presence": self.method,
            "present": self._present,
            "in_passage": self._passage is not None,
            "passages": self.passages,
            "discarded": self.discarded,
            "learning": bool(fg is not None and fg.seen <= self.presence_cfg.learning_frames),
            "relearns": fg.resets if fg is not None else 0,
            "restores": fg.restores if fg is not None else 0,
        }

    def needs_score(self, record: FrameRecord) -> bool:
        """Whether this frame needs a model score. With ``foreground`` presence only frames with a box in view
        are scored (and once the box is fully inside, not the frames where it touches the ROI edges)."""
        if self.method != "foreground":
            return True  # score hysteresis needs a score on every frame
        fg = self._foreground(record.roi)
        assert fg is not None
        if fg.learning or fg.fraction < self.presence_cfg.fg_min_fraction:
            return False
        p = self._passage
        if fg.inside or p is None:
            return True
        if p.has_inside:
            return False  # the box is leaving: its fully-visible frames are already scored
        # Entering, or a box that never fits the ROI (the fallback needs some scores): score a frame when the
        # box has grown by a fifth since the last one scored, or every EDGE_SCORE_EVERY frames.
        return fg.fraction >= EDGE_GROWTH * p.edge_best or p.since_edge_score >= EDGE_SCORE_EVERY

    def update(self, record: FrameRecord) -> Decision | None:
        fg = self._foreground(record.roi)
        self._cache = None
        if fg is not None and fg.restored and self._passage is not None:
            # What moved since the relearn was the object that had stood in the ROI (already decided, or
            # learned as background) leaving, plus the spot it uncovered: not a new box.
            log.warning(
                "presence: frames %d-%d were the object that stood in the ROI moving away; not decided again",
                self._passage.first, self._passage.last,
            )
            self._passage = None
        fg_present = fg is not None and not fg.learning and fg.fraction >= self.presence_cfg.fg_min_fraction
        self._present = present = fg_present or self._score_hysteresis(record.score)
        if present:
            return self._in_view(record, fg, fg_present)
        p = self._passage
        if p is None:
            return None
        p.absent += 1
        if p.absent >= self.presence_cfg.gap_frames:
            decision = self._close()
            if decision is not None and self.fg is not None:
                self.fg.confirm()  # a normal passage: the background in use is right
            return decision
        return None

    def _score_hysteresis(self, score: float | None) -> bool:
        """Presence by score (methods other than ``foreground``): on at ``score_on``, off below ``score_off``."""
        if self.method == "foreground":
            return False
        pc = self.presence_cfg
        if score is None:
            self._hyst = False
        elif self._hyst:
            self._hyst = score >= pc.score_off
        else:
            self._hyst = score >= pc.score_on
        return self._hyst

    def _in_view(self, record: FrameRecord, fg: Foreground | None, fg_present: bool) -> Decision | None:
        """A frame with the box in view: open or extend the passage, keep its record; a passage that lasts too
        long (stopped belt, stuck box, lighting change) is decided now."""
        p = self._passage
        if p is None:
            p = self._passage = _Passage(first=record.index, last=record.index)
        p.present += 1
        p.absent = 0
        p.last = record.index
        score = record.score
        rec = _Record(record.index, record.captured_at, score, fg.fraction if fg else 0.0,
                      bool(fg and fg_present and fg.inside), record if score is not None else None)
        p.records.append(rec)
        if score is not None and rec.inside:
            if not p.has_inside:  # only inside frames are used from now on: let the others' frames go
                for r in p.records[:-1]:
                    r.src = None
            p.has_inside = True
        elif score is not None:
            p.edge_best = max(p.edge_best, rec.fraction)
            p.since_edge_score = 0
        else:
            p.since_edge_score += 1
        if p.last - p.first + 1 < self.max_passage_frames:
            return None
        why = (
            f"something stayed in the ROI for {p.last - p.first + 1} frames ({p.first}-{p.last}): stopped "
            "belt, stuck box or a lighting change; deciding it now"
        )
        decision = self._close()
        if self.fg is not None:
            self.fg.relearn(why)
        else:
            log.warning("presence: %s", why)
        return decision

    def box_outline(self) -> tuple[int, int, int, int] | None:
        """Where the presence detector sees the box in the ROI while a passage is open: the bounding box of the
        last foreground mask, scaled to ROI pixels (x0, y0, x1, y1 exclusive); None otherwise."""
        fg = self.fg
        if fg is None or self._passage is None or fg.mask is None or self._roi_size is None:
            return None
        x, y, w, h = cv2.boundingRect(fg.mask)
        if w == 0 or h == 0:
            return None
        sx, sy = self._roi_size[0] / fg.mask.shape[1], self._roi_size[1] / fg.mask.shape[0]
        return int(x * sx), int(y * sy), int(np.ceil((x + w) * sx)), int(np.ceil((y + h) * sy))

    def background(self) -> np.ndarray | None:
        """The empty belt as the presence detector has learned it (downscaled ROI, BGR), or None (not learned,
        or presence by model score only). The localiser's ``background`` crop differences against it."""
        fg = self.fg
        if fg is None or fg.seen <= self.presence_cfg.learning_frames:
            return None
        key = (fg.version, id(fg.mog))
        if self._background is None or self._background[0] != key:  # one image per state of the model: the
            self._background = (key, fg.mog.getBackgroundImage())   # localiser converts it once per box
        return self._background[1]

    def flush(self) -> Decision | None:
        """Decide the passage still open (end of stream / shutdown)."""
        if self._passage is None:
            return None
        return self._close()

    def _close(self) -> Decision | None:
        p, self._passage = self._passage, None
        if p is None:
            return None
        if p.present < self.presence_cfg.min_frames:
            self.discarded += 1
            log.debug("presence: %d frame(s) at %d-%d are shorter than min_frames; ignored", p.present, p.first, p.last)
            return None
        scored = [r for r in p.records if r.score is not None]
        if not scored:
            log.warning("presence: box at frames %d-%d had no scored frame; no decision", p.first, p.last)
            return None
        use = [r for r in scored if r.inside]
        if not use:
            top = max(r.fraction for r in scored)
            if top >= self.presence_cfg.fg_min_fraction:  # a box that never fitted: its largest views
                use = [r for r in scored if r.fraction >= FALLBACK_SHARE * top]
            else:  # found by score hysteresis only: every scored frame
                use = scored
        self.passages += 1
        return make_decision(
            [r.src for r in use if r.src is not None],
            self.cfg.aggregate,
            self.labels,
            self.threshold,
            self.model_id,
            first_frame=p.first,
            last_frame=p.last,
            mode="continuous",
        )


def make_decision(
    records: Sequence[FrameRecord],
    aggregate: str,
    labels: tuple[str, str],
    threshold: float,
    model_id: str,
    *,
    first_frame: int,
    last_frame: int,
    mode: str,
    part_id: str | None = None,
) -> Decision:
    """One decision on the scored ``records`` (at least one): their ``aggregate`` at ``threshold``, with its
    evidence (edge/judge/records.py)."""
    ev = make_evidence(records, aggregate, threshold)
    scores = ev.scores
    label, is_defect = verdict(ev.score, threshold, labels)
    return Decision(
        event_id=str(uuid.uuid4()),
        part_id=part_id,
        label=label,
        is_defect=is_defect,
        score=ev.score,
        max_score=max(scores),
        mean_score=sum(scores) / len(scores),
        frame_count=len(scores),
        first_frame=first_frame,
        last_frame=last_frame,
        threshold=threshold,
        model_id=model_id,
        captured_at=ev.records[-1].captured_at,
        decided_at=time.time(),
        mode=mode,
        evidence=ev,
    )


@dataclass
class _Job:
    part_id: str | None
    at: float
    records: list[FrameRecord] = field(default_factory=list)
    no_box: int = 0  # frames after the trigger in which the localiser found no box


@dataclass
class Outcome:
    """What one view (a TriggeredDecider) concluded about a part: its Decision, or None (no box found)."""

    part_id: str | None
    decision: Decision | None


class TriggeredDecider:
    """One decision per trigger from the next ``cfg.trigger_frames`` scored frames captured after it.

    ``trigger(part_id)`` may be called from any thread. Triggers that arrive while one is being served
    queue up (at most ``max_pending``; beyond that a trigger is refused with an error log, never dropped
    silently). A frame in which the localiser found no box (``record.no_box``) does not count; after
    ``trigger_no_box_frames`` of them the part is decided on the frames it had, or, with none, closed without
    a decision (logged, counted in ``no_box_parts``: the belt is never classified).
    """

    def __init__(
        self,
        cfg: DecisionConfig,
        labels: Sequence[str],
        threshold: float,
        model_id: str,
        max_pending: int = MAX_PENDING_TRIGGERS,
        view: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.labels = _labels(labels)
        self.threshold = float(threshold)
        self.model_id = model_id
        self.max_pending = max_pending
        self.view = view
        self._lock = threading.Lock()
        self._queue: deque[_Job] = deque()
        self._active: _Job | None = None
        self.rejected = 0
        self.decided = 0
        self.no_box_parts = 0

    def trigger(self, part_id: str | None = None, at: float | None = None) -> bool:
        """Queue a part. ``at`` is when it arrived (default now): only frames captured after it are used.
        Returns False (and logs an error) when ``max_pending`` triggers are already waiting."""
        with self._lock:
            waiting = len(self._queue) + (self._active is not None)
            if len(self._queue) >= self.max_pending:
                self.rejected += 1
                log.error(
                    "trigger for part %s REFUSED: %d triggers already waiting (is the camera delivering frames?)",
                    part_id, len(self._queue),
                )
                return False
            self._queue.append(_Job(part_id, time.time() if at is None else at))
        if waiting:
            # Queueing is normal when parts follow each other closely; a long queue means frames are not coming.
            level = logging.WARNING if waiting >= self.max_pending // 2 else logging.INFO
            log.log(level, "trigger for part %s queued behind %d pending trigger(s)", part_id, waiting)
        return True

    def cancel(self, part_id: str | None) -> bool:
        """Forget the oldest undecided trigger of ``part_id`` (its deadline passed and it got a timeout decision),
        so no model time is spent on a part that is already past the pusher. False if there was none."""
        with self._lock:
            if self._active is not None and self._active.part_id == part_id:
                self._active = None
                return True
            for job in self._queue:
                if job.part_id == part_id:
                    self._queue.remove(job)
                    return True
        return False

    @property
    def pending(self) -> int:
        """Triggers not yet decided (including the one being served)."""
        with self._lock:
            return len(self._queue) + (self._active is not None)

    @property
    def present(self) -> bool:
        return self.pending > 0

    @property
    def box_in_progress(self) -> bool:
        return self.pending > 0

    def needs_score(self, record: FrameRecord) -> bool:
        """A trigger is waiting for frames and this frame was captured after it."""
        with self._lock:
            job = self._active or (self._queue[0] if self._queue else None)
        return job is not None and record.captured_at >= job.at

    def stats(self) -> dict[str, Any]:
        return {"mode": "triggered", "pending": self.pending, "rejected": self.rejected, "decided": self.decided,
                "no_box": self.no_box_parts}

    def background(self) -> np.ndarray | None:
        """Triggered mode keeps no background model: the localiser works without a reference."""
        return None

    def box_outline(self) -> tuple[int, int, int, int] | None:
        """Triggered mode has no presence detector: the box is outlined where the localiser finds it."""
        return None

    def _serving(self) -> _Job | None:
        """The trigger being served: the active one, else the next queued one (made active). Lock held."""
        if self._active is None and self._queue:
            self._active = self._queue.popleft()
        return self._active

    def update(self, record: FrameRecord) -> Decision | None:
        out = self.step(record)
        return out.decision if out is not None else None

    def step(self, record: FrameRecord) -> Outcome | None:
        """Feed one frame; the part's Outcome once it is concluded (decided, or closed for lack of a box)."""
        with self._lock:
            job = self._serving()
            if job is None or record.captured_at < job.at:
                return None  # no trigger waiting, or captured before the part was announced
            if record.no_box:
                job.no_box += 1
                if job.no_box < self.cfg.trigger_no_box_frames:
                    return None
                self._active = None
                if not job.records:
                    self.no_box_parts += 1
                    gave_up = True
                else:
                    gave_up = False
            elif record.score is None:
                return None  # not scored
            else:
                job.records.append(record)
                if len(job.records) < self.cfg.trigger_frames:
                    return None
                self._active = None
                gave_up = False
        if gave_up and self.view is not None:  # one view of several: the others may still decide the part
            log.info("part %s: view %s found no box in %d frames; it does not vote", job.part_id or "(no id)",
                     self.view, self.cfg.trigger_no_box_frames)
            return Outcome(job.part_id, None)
        if gave_up:
            log.warning("part %s: no box found in %d frames after its trigger; NOT classified (no decision)",
                        job.part_id or "(no id)", self.cfg.trigger_no_box_frames)
            return Outcome(job.part_id, None)
        if len(job.records) < self.cfg.trigger_frames:
            log.warning("trigger for part %s decided on %d of %d frames (the box left the view)",
                        job.part_id, len(job.records), self.cfg.trigger_frames)
        return Outcome(job.part_id, self._decide(job))

    def flush(self) -> Decision | None:
        out = self.flush_outcome()
        return out.decision if out is not None else None

    def flush_outcome(self) -> Outcome | None:
        """End of stream: decide a trigger that has some frames; report triggers that never got any."""
        with self._lock:
            job, self._active = self._active, None
            lost = list(self._queue)
            self._queue.clear()
        if job is not None and not job.records:
            lost.insert(0, job)
            job = None
        for j in lost:
            log.error("trigger for part %s got no frame before the stream ended: no model decision "
                      "(the deadline fail-safe decides it)", j.part_id)
        if job is None:
            return None
        log.warning(
            "trigger for part %s decided on %d of %d frames (stream ended)",
            job.part_id, len(job.records), self.cfg.trigger_frames,
        )
        return Outcome(job.part_id, self._decide(job))

    def _decide(self, job: _Job) -> Decision:
        self.decided += 1
        recs = job.records
        return make_decision(
            recs,
            self.cfg.aggregate,
            self.labels,
            self.threshold,
            self.model_id,
            first_frame=recs[0].index,
            last_frame=recs[-1].index,
            mode="triggered",
            part_id=job.part_id,
        )


class MultiViewDecider:
    """Triggered mode with several camera views of one part (config ``sources``): one decision per trigger.

    Every trigger goes to one :class:`TriggeredDecider` per view (all or none: a trigger is refused when any
    view's queue is full, so the k-th outcome of every view is the same part). ``update`` routes each record to
    its view (``record.view``); once every view has concluded a part, their scores are fused with
    ``decision.fusion`` (edge/judge/fusion.py) into one Decision that carries the per-view scores and one evidence
    entry per view that voted. A view without a box does not vote; a part whose views all found no box gets
    no decision (logged, counted in ``no_box_parts``).
    """

    def __init__(self, cfg: DecisionConfig, views: Sequence[str], labels: Sequence[str], threshold: float,
                 model_id: str, max_pending: int = MAX_PENDING_TRIGGERS) -> None:
        if not views:
            raise ValueError("MultiViewDecider needs at least one view")
        self.cfg = cfg
        self.rule = cfg.fusion
        self.max_pending = max_pending
        self._views = {v: TriggeredDecider(cfg, labels, threshold, model_id, max_pending, view=v) for v in views}
        # per view, what it concluded, in trigger order
        self._outcomes: dict[str, deque[Outcome]] = {v: deque() for v in views}
        self._lock = threading.Lock()
        self.labels = _labels(labels)
        self._threshold = float(threshold)
        self._model_id = model_id
        self.decided = 0
        self.no_box_parts = 0
        self.rejected = 0

    # the model's threshold, id and labels follow a reload into every view
    @property
    def threshold(self) -> float:
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._threshold = float(value)
        for d in self._views.values():
            d.threshold = float(value)

    @property
    def model_id(self) -> str:
        return self._model_id

    @model_id.setter
    def model_id(self, value: str) -> None:
        self._model_id = value
        for d in self._views.values():
            d.model_id = value

    @property
    def labels(self) -> tuple[str, str]:
        return self._labels

    @labels.setter
    def labels(self, value: Sequence[str]) -> None:
        self._labels = _labels(value)
        for d in getattr(self, "_views", {}).values():
            d.labels = self._labels

    @property
    def view_names(self) -> list[str]:
        return list(self._views)

    def view(self, name: str) -> TriggeredDecider:
        return self._views[name]

    def _view_of(self, record: FrameRecord) -> TriggeredDecider:
        if record.view not in self._views:
            raise ValueError(f"a frame of view {record.view!r}, not one of {', '.join(self._views)}")
        return self._views[record.view]

    @property
    def pending(self) -> int:
        return max(d.pending for d in self._views.values())

    @property
    def box_in_progress(self) -> bool:
        return self.pending > 0

    def trigger(self, part_id: str | None = None, at: float | None = None) -> bool:
        at = time.time() if at is None else at
        with self._lock:
            if any(len(d._queue) >= d.max_pending for d in self._views.values()):  # same module
                self.rejected += 1
                log.error("trigger for part %s REFUSED: a view has %d triggers waiting (are its frames coming?)",
                          part_id, self.max_pending)
                return False
            return all([d.trigger(part_id, at) for d in self._views.values()])

    def needs_score(self, record: FrameRecord) -> bool:
        return self._view_of(record).needs_score(record)

    def update(self, record: FrameRecord) -> Decision | None:
        """Feed one view's frame; the fused Decision once every view has concluded the part."""
        out = self._view_of(record).step(record)
        if out is None:
            return None
        return self.collect(record.view or "", out)

    def background(self) -> np.ndarray | None:
        return None

    def box_outline(self) -> tuple[int, int, int, int] | None:
        return None

    def collect(self, view: str, outcome: Outcome) -> Decision | None:
        """A view concluded a part. When every view has concluded it: the fused Decision (None when no view saw
        a box: logged and counted); else None (wait for the other views)."""
        with self._lock:
            self._outcomes[view].append(outcome)
            if any(not q for q in self._outcomes.values()):
                return None
            outs = {v: q.popleft() for v, q in self._outcomes.items()}
        fused = self._fuse({v: o.decision for v, o in outs.items()})
        if fused is None:
            self.no_box_parts += 1
            log.warning("part %s: no box found in any view; NOT classified (no decision)",
                        outcome.part_id or "(no id)")
        return fused

    def cancel(self, part_id: str | None) -> bool:
        """The part timed out (edge/deliver/plant.py): every view forgets it, and a view that had already concluded it
        drops that outcome (its evidence goes with it). False if no view knew the part."""
        found = False
        with self._lock:
            for v, d in self._views.items():
                if d.cancel(part_id):
                    found = True
                    continue
                for o in self._outcomes[v]:
                    if o.part_id == part_id:
                        self._outcomes[v].remove(o)
                        found = True
                        break
        return found

    def _fuse(self, outs: dict[str, Decision | None]) -> Decision | None:
        # a view's decision comes from its frames' scores, so its score and evidence are set (only timeout
        # decisions of edge/deliver/plant.py have none, and those are not made per view)
        voted = {v: d for v, d in outs.items() if d is not None and d.score is not None and d.evidence is not None}
        if not voted:
            return None
        part_id = next((d.part_id for d in voted.values()), None)

        def num(x: float | None) -> float:
            return 0.0 if x is None else float(x)

        score = fuse([num(d.score) for d in voted.values()], self.rule)
        label, is_defect = verdict(score, self._threshold, self._labels)
        n = sum(d.frame_count for d in voted.values())
        last = max(voted.values(), key=lambda d: num(d.captured_at))
        self.decided += 1
        views: dict[str, dict[str, Any]] = {}
        for v, d in outs.items():
            if d is not None and d.score is not None:
                views[v] = {"score": round(float(d.score), 6), "no_box": False, "frame_count": d.frame_count,
                            "first_frame": d.first_frame, "last_frame": d.last_frame}
                if d.evidence is not None:
                    views[v]["decided_on"] = d.evidence.to_json()
            else:
                views[v] = {"score": None, "no_box": True, "frame_count": 0, "first_frame": None, "last_frame": None}
        view_ev = {v: d.evidence for v, d in voted.items() if d.evidence is not None}
        names = list(view_ev)
        rep_view = names[nearest_on_side([view_ev[v].score for v in names], score, self._threshold)]
        firsts = [d.first_frame for d in voted.values() if d.first_frame is not None]
        return Decision(
            event_id=str(uuid.uuid4()), part_id=part_id, label=label, is_defect=is_defect, score=score,
            max_score=max(num(d.max_score) for d in voted.values()),
            mean_score=sum(num(d.mean_score) * d.frame_count for d in voted.values()) / max(1, n), frame_count=n,
            first_frame=min(firsts) if firsts else None, last_frame=last.last_frame,
            threshold=self._threshold, model_id=self._model_id, captured_at=last.captured_at,
            decided_at=time.time(), mode="triggered", views=views, fusion=self.rule,
            evidence=view_ev[rep_view], view_evidence=view_ev,
        )

    def flush(self) -> Decision | None:
        """End of stream: each view decides what it has; a part every view has then concluded is fused and
        returned (the last one, if several)."""
        out = None
        for v, d in self._views.items():
            got = d.flush_outcome()
            if got is not None:
                fused = self.collect(v, got)
                out = fused if fused is not None else out
        return out

    def stats(self) -> dict[str, Any]:
        return {"mode": "triggered", "views": {v: d.stats() for v, d in self._views.items()}, "fusion": self.rule,
                "pending": self.pending, "decided": self.decided, "no_box": self.no_box_parts,
                "rejected": self.rejected}
