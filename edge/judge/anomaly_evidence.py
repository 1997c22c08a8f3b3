"""Where the defect is: the anomaly map of a decision, from the loop to its event and evidence (issue 29).

The daemon scores a crop with :func:`heat_of` (one invoke, as ``Classifier.score``); for an anomaly package it
also keeps the cell distances and the model input of that crop (references, no copy) in the frame's record
(``FrameRecord.heat``, edge/judge/records.py). The decision carries its records; when it is published :func:`attach`
adds the map of its representative record (the frame that decided, whose crop is the evidence) to the event

    "anomaly_map": {"rows": 14, "cols": 14, "unit": "percent of the threshold distance",
                    "values": [...], "max": 137, "score": 0.578, "region": [x0, y0, x1, y1] | null,
                    "input": path | null, "view": "top"}

``values`` is the coarse grid row-major (100 = at the threshold: the crop is a defect when a cell reaches 100),
``region`` the part of the ROI crop the model input covers (fractions of its width and height; null = all of
it), so the operator page can draw the grid over the crop; ``score`` the package score of that crop (the
representative record's score: ``decided_on.representative_score`` of the event); ``input`` the lossless PNG of
the model input in the evidence folder: scoring it again with the same package gives ``score`` exactly, so the
decision on the evidence can be re-made; ``view`` (only when the package holds one bank per view and this view
has one) names the bank that scored it, and re-scoring passes it (``Classifier.score_rgb(rgb, view)``). Other packages add nothing (their score has no map).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from edge.judge.anomaly import heat_grid
from edge.judge.classifier import Classifier
from edge.judge.localize import CropSpec, Located

if TYPE_CHECKING:  # the store is handed in by the daemon; judge/ does not import deliver/
    from edge.deliver.evidence import EvidenceStore


@dataclass
class Heat:
    score: float  # the package score of this crop
    cells: np.ndarray  # (H, W) cell distances
    threshold_distance: float
    border: int  # edge rings the score leaves out (edge/judge/anomaly.py AnomalyScorer.border)
    model_input: np.ndarray  # RGB, the model's input size
    region: tuple[float, float, float, float] | None  # the model input's square in the ROI crop (fractions)
    view: str | None = None  # the view that saw it: a package with one bank per view scored it by that bank


def heat_of(clf: Classifier, roi: np.ndarray, located: Located | None,
            view: str | None = None) -> tuple[float, Heat | None]:
    """(score, its map or None) of one ROI crop seen by ``view``: the score ``clf.score(roi, located, view)`` gives."""
    score, cells, rgb = clf.score_map(roi, located, view)
    if cells is None or clf.anomaly is None:
        return score, None
    sc = clf.anomaly.for_view(view)
    return score, Heat(score, cells, sc.threshold_distance, sc.border, rgb, region(roi.shape, located, clf.metadata.crop),
                       view if sc is not clf.anomaly else None)


def region(shape: tuple[int, ...], located: Located | None, spec: CropSpec) -> tuple[float, float, float, float] | None:
    """The model input's extent around the located box (its margin included; a square unless ``spec.square`` is
    off) in fractions of the ROI crop; None: the whole crop. An upright-turned crop (``spec.rotated``, the anomaly
    recipe's) is drawn over its turned rectangle's extent, without the turn: approximate; the model input PNG shows
    the map exactly."""
    if located is None or located.whole or located.bbox is None or spec.method == "none":
        return None
    h, w = shape[:2]
    x0, y0, x1, y1 = (float(v) for v in located.bbox)
    if spec.rotated and located.rotated is not None:
        (cx, cy), (rw, rh), _ = located.rotated
        x0, y0, x1, y1 = cx - max(rw, rh) / 2, cy - min(rw, rh) / 2, cx + max(rw, rh) / 2, cy + min(rw, rh) / 2
    m = spec.margin * max(x1 - x0, y1 - y0)  # as localize.crop: on each side, a share of the longer side
    half_w, half_h = (x1 - x0) / 2 + m, (y1 - y0) / 2 + m
    if spec.square:
        half_w = half_h = max(half_w, half_h)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return ((cx - half_w) / w, (cy - half_h) / h, (cx + half_w) / w, (cy + half_h) / h)


def attach(event: dict[str, Any], heat: Heat | None, evidence: EvidenceStore | None) -> None:
    """Add the decision's anomaly map to its event (and the model input PNG to its evidence, when evidence of
    this decision was saved)."""
    if heat is None:
        return
    m: dict[str, Any] = heat_grid(heat.cells, heat.threshold_distance, heat.border)
    m["score"] = round(float(heat.score), 6)
    m["region"] = [round(v, 4) for v in heat.region] if heat.region else None
    m["input"] = None
    if heat.view is not None:  # scored by that view's bank: re-scoring the input needs the view
        m["view"] = heat.view
    if evidence is not None and event.get("evidence"):
        m["input"] = evidence.save_png(f"{event['event_id']}_input", cv2.cvtColor(heat.model_input, cv2.COLOR_RGB2BGR))
    event["anomaly_map"] = m
