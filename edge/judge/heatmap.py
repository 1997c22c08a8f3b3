"""Where the defect is: the map of a decision, from the loop to its event and evidence (issue 29).

The daemon scores a crop with :func:`heat_of` (one invoke, as ``Classifier.score``); for a package with a map it
also keeps the map and the model input of that crop (references, no copy) in the frame's record
(``FrameRecord.heat``, edge/judge/records.py). The decision carries its records; when it is published :func:`attach`
adds the map of its representative record (the frame that decided, whose crop is the evidence) to the event

    "anomaly_map": {"kind": "anomaly" | "head", "rows": 14, "cols": 14, "unit": "...",
                    "values": [...], "max": 137, "score": 0.578, "region": [x0, y0, x1, y1] | null,
                    "input": path | null, "view": "top"}

Two kinds (``MapKind``), one unit: ``values`` is the coarse grid row-major, each cell in percent of the threshold
(100 = at it).

* ``anomaly`` (an anomaly package, edge/judge/anomaly.py): a cell's distance to the nearest good patch in percent of
  the threshold distance; the crop is a defect when a cell (inside ``border``) reaches 100.
* ``head`` (a supervised package whose .tflite has the ``cells`` output, edge/judge/head_map.py): the head applied
  to each cell of the last feature map, as its odds in percent of the decision threshold's odds (the event's
  ``threshold``); the crop's logit is the mean of the cells' logits, so the crop is a defect when their geometric
  mean reaches 100. (An anomaly score ``d / (d + d_thr)`` has odds ``d / d_thr``: the two units are one.)

``region`` the part of the ROI crop the model input covers (fractions of its width and height; null = all of
it), so the operator page can draw the grid over the crop; ``score`` the package score of that crop (the
representative record's score: ``decided_on.representative_score`` of the event); ``input`` the lossless PNG of
the model input in the evidence folder: scoring it again with the same package gives ``score`` and the same map, so
the decision on the evidence can be re-made; ``view`` (only when the package holds one bank per view and this view
has one) names the bank that scored it, and re-scoring passes it (``Classifier.score_rgb(rgb, view)``). Packages
without a map (converted before maps, or a model whose features are not a global average) add nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from edge.judge.anomaly import heat_grid
from edge.judge.classifier import Classifier
from edge.judge.head_map import odds_ratio
from edge.judge.localize import CropSpec, Located
from edge.judge.model_package import MapKind

if TYPE_CHECKING:  # the store is handed in by the daemon; judge/ does not import deliver/
    from edge.deliver.evidence import EvidenceStore


UNITS = {MapKind.ANOMALY: "percent of the threshold distance",
         MapKind.HEAD: "percent of the threshold's odds (the head's score of each cell)"}


@dataclass
class Heat:
    score: float  # the package score of this crop
    ratio: np.ndarray  # (H, W) each cell over the threshold (1 = at it): anomaly d / d_thr, head odds / threshold odds
    kind: MapKind
    border: int  # edge rings the score leaves out (edge/judge/anomaly.py AnomalyScorer.border; 0 for a head)
    model_input: np.ndarray  # RGB, the model's input size
    region: tuple[float, float, float, float] | None  # the model input's square in the ROI crop (fractions)
    view: str | None = None  # the view that saw it: a package with one bank per view scored it by that bank


def heat_of(clf: Classifier, roi: np.ndarray, located: Located | None, view: str | None = None,
            threshold: float | None = None) -> tuple[float, np.ndarray | None, Heat | None]:
    """(score, pooled features or None, its map or None) of one ROI crop seen by ``view``, one invoke: the score
    ``clf.score(roi, located, view)`` gives. ``threshold``: the one the decision applies (a config override; None: the
    package's), the 100 of a head's map (an anomaly map's 100 is the bank's threshold distance)."""
    got = clf.score_all(roi, located, view)
    if got.cells is None or got.kind is None:
        return got.score, got.features, None
    where = region(roi.shape, located, clf.metadata.crop)
    if got.kind is MapKind.HEAD:  # cell logits -> odds over the decision threshold's odds (edge/judge/head_map.py)
        return got.score, got.features, Heat(got.score, odds_ratio(got.cells, clf.threshold if threshold is None else threshold), got.kind, 0, got.rgb,
                                             where)
    assert clf.anomaly is not None
    sc = clf.anomaly.for_view(view)
    return got.score, got.features, Heat(got.score, got.cells / sc.threshold_distance, got.kind, sc.border, got.rgb,
                                         where, view if sc is not clf.anomaly else None)


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
    m: dict[str, Any] = heat_grid(heat.ratio, 1.0, heat.border)
    m["kind"], m["unit"] = heat.kind.value, UNITS[heat.kind]
    m["score"] = round(float(heat.score), 6)
    m["region"] = [round(v, 4) for v in heat.region] if heat.region else None
    m["input"] = None
    if heat.view is not None:  # scored by that view's bank: re-scoring the input needs the view
        m["view"] = heat.view
    if evidence is not None and event.get("evidence"):
        m["input"] = evidence.save_png(f"{event['event_id']}_input", cv2.cvtColor(heat.model_input, cv2.COLOR_RGB2BGR))
    event["anomaly_map"] = m
