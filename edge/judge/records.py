"""What decided a box: the per-frame record the decider receives and the evidence a Decision carries.

The loop builds one :class:`FrameRecord` per frame (crop -> locate -> score) and hands it to the decider. The
decider keeps the records that enter a decision and puts them into the :class:`Evidence` of that Decision:
the frame numbers used, their scores, and ONE representative record. Everything downstream (the evidence JPEGs,
``/events``, the operator page's thumbnails, dialog and result tile, feedback and collection crops, retrain,
the shadow candidate) uses that evidence and only it (docs/DECISION.md, "What decided").

The representative rule (:func:`representative`), the same everywhere: among the frames that entered the
decision, those whose own score gives the decision's verdict (on the same side of the threshold as the
aggregate); of those, the one whose score is nearest the aggregate; ties go to the earliest. With the mean,
median or max aggregate such a frame always exists (the mean lies between the smallest and the largest score).
A fused multi-view decision applies the same rule to its views' aggregates to pick the view whose
representative is the event's own; a noisy-or fusion can put the fused score above every view's, and then
the nearest view is taken.

A record holds references only (the frame the camera delivered, the ROI as a view of it): nothing is copied or
encoded on the frame path. ``extras`` carries optional per-frame attachments (for example a small anomaly heatmap
as an array or PNG bytes) that ride along into the evidence without changing this contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.judge.localize import CropSpec, Located, crop

if TYPE_CHECKING:
    from edge.capture.frames import Frame
    from edge.judge.heatmap import Heat


@dataclass
class FrameRecord:
    """One frame as the decider saw it. ``score`` None: not scored (the decider did not ask, or no box)."""

    index: int
    captured_at: float
    roi: np.ndarray  # the ROI (a view of ``frame``): presence is measured on it, the model crops from it
    score: float | None = None
    frame: np.ndarray | None = None  # the full camera frame (BGR), by reference
    located: Located | None = None  # where the localiser found the box in ``roi`` (None: the model takes the ROI)
    crop_spec: CropSpec | None = None  # how the model cut its input from ``roi`` around ``located``
    features: np.ndarray | None = None  # the live invoke's pooled features (only when a head-only shadow wants them)
    view: str | None = None  # several views: which camera
    no_box: bool = False  # a score was wanted but the localiser found no box (never classified)
    extras: dict[str, np.ndarray | bytes] = field(default_factory=dict)  # optional attachments (heatmap, ...)
    heat: Heat | None = None  # a package with a map: the map of this record's crop (edge/judge/heatmap.py)

    @classmethod
    def of_frame(cls, frame: Frame, roi: np.ndarray) -> FrameRecord:
        return cls(frame.index, frame.captured_at, roi, frame=frame.image, view=frame.view)

    def model_crop(self) -> np.ndarray:
        """The image the model was given, before the resize to its input: the box crop around ``located``
        (``crop`` of edge/judge/localize.py), or the whole ROI when the model takes the ROI. This is the evidence
        ``_crop.jpg``: ``boxinspect predict --crops`` on it reproduces ``score`` (within the package's golden tolerance)."""
        if self.located is None or self.crop_spec is None or self.located.whole or self.located.bbox is None:
            return self.roi
        return crop(self.roi, self.located, self.crop_spec)

    def box_in_frame(self, roi_origin: tuple[int, int]) -> tuple[int, int, int, int] | None:
        """The located box in frame pixels (x0, y0, x1, y1 exclusive), or None (no box, or the whole ROI)."""
        loc = self.located
        if loc is None or loc.bbox is None or loc.whole:
            return None
        x0, y0, x1, y1 = loc.bbox
        return x0 + roi_origin[0], y0 + roi_origin[1], x1 + roi_origin[0], y1 + roi_origin[1]


@dataclass
class Evidence:
    """What decided one box in one view: the records whose scores were aggregated, and the representative."""

    records: tuple[FrameRecord, ...]  # in frame order; every one has a score
    aggregate: str  # how their scores became ``score``: mean, median or max
    score: float  # the aggregate of the records' scores
    representative: FrameRecord
    view: str | None = None

    @property
    def frames(self) -> list[int]:
        return [r.index for r in self.records]

    @property
    def scores(self) -> list[float]:
        return [float(r.score) for r in self.records if r.score is not None]

    def to_json(self) -> dict[str, Any]:
        """The event's ``decided_on`` (docs/EVENTS.md): the frames used, their scores, the representative."""
        rep = self.representative
        return {
            "first_frame": self.records[0].index,
            "last_frame": self.records[-1].index,
            "frames": self.frames,
            "scores": [round(s, 6) for s in self.scores],
            "aggregate": self.aggregate,
            "representative_frame": rep.index,
            "representative_score": None if rep.score is None else round(float(rep.score), 6),
        }


def aggregate(scores: Sequence[float], how: str) -> float:
    """The decision's score from its frames' scores: ``mean``, ``median`` or ``max``."""
    if not scores:
        raise ValueError("aggregate needs at least one score")
    if how == "max":
        return float(max(scores))
    if how == "median":
        return float(np.median(np.asarray(scores, np.float64)))
    return float(sum(scores) / len(scores))


def nearest_on_side(scores: Sequence[float], target: float, threshold: float) -> int:
    """The position of the representative (the module docstring's rule): of the scores on the same side of
    ``threshold`` as ``target``, the one nearest ``target``, the earliest on ties; if none is on that side, the
    nearest of all."""
    if not scores:
        raise ValueError("no scores to choose from")
    side = target >= threshold
    pool = [i for i, s in enumerate(scores) if (s >= threshold) == side] or list(range(len(scores)))
    return min(pool, key=lambda i: (abs(scores[i] - target), i))


def representative(records: Sequence[FrameRecord], score: float, threshold: float) -> FrameRecord:
    """The representative of a decision on ``records`` whose aggregate is ``score`` (see the module docstring)."""
    scored = [r for r in records if r.score is not None]
    return scored[nearest_on_side([float(r.score) for r in scored if r.score is not None], score, threshold)]


def make_evidence(records: Sequence[FrameRecord], how: str, threshold: float) -> Evidence:
    """Evidence of a decision on ``records`` (scored ones; at least one)."""
    used = tuple(r for r in records if r.score is not None)
    score = aggregate([float(r.score) for r in used if r.score is not None], how)
    return Evidence(used, how, score, representative(used, score, threshold), used[0].view if used else None)
