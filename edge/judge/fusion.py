"""Several views of one part -> one decision: view naming and the fusion rules. numpy only (edge-safe).

A part seen by several cameras gives one image per view, named ``<part>_<view>.<ext>`` (e.g.
``p0042_top.jpg`` and ``p0042_oblique.jpg``). Training keeps a part's views in the same split
(``training/split.py``), evaluation reports per-view and per-part metrics, and the daemon fuses the views of one
trigger's part id into one event, all with the functions here.

Fusion rules (per-view scores are P(defect)):

* ``max``: the part is as bad as its worst view. A defect seen by one camera only is not averaged away.
* ``mean``: the average; steadier when every view sees the whole part.
* ``noisy_or``: 1 - prod(1 - s): every view is independent evidence of a defect; a few moderate scores add up.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

FusionRule = Literal["max", "mean", "noisy_or"]
FUSION_RULES: tuple[str, ...] = ("max", "mean", "noisy_or")
DEFAULT_FUSION: FusionRule = "max"

# the view names a file may end with (after the last "_"); anything else is a single-view image
VIEW_NAMES: tuple[str, ...] = ("top", "oblique", "side", "front", "back", "left", "right", "bottom")
_VIEW_RE = re.compile(r"^(?P<part>.+)_(?P<view>" + "|".join(VIEW_NAMES) + r"|view\d+|cam\d+)$", re.IGNORECASE)


def part_and_view(path: str | Path) -> tuple[str, str | None]:
    """``(part, view)`` of a file named ``<part>_<view>.<ext>``, view one of :data:`VIEW_NAMES`, ``view<N>`` or
    ``cam<N>``; a file of any other name is a part of its own, ``(stem, None)``."""
    stem = Path(path).stem
    m = _VIEW_RE.match(stem)
    if m is None:
        return stem, None
    return m.group("part"), m.group("view").lower()


def part_keys(paths: Sequence[str | Path]) -> list[str]:
    """A part key per file: the part id for multi-view files, the file itself otherwise (so two single-view
    photos that happen to share a stem in different folders stay apart)."""
    keys = []
    for p in paths:
        part, view = part_and_view(p)
        keys.append(f"part:{part}" if view is not None else f"file:{p}")
    return keys


def fuse(scores: Sequence[float] | np.ndarray, rule: str = DEFAULT_FUSION) -> float:
    """One score from the per-view scores of one part."""
    s = np.clip(np.asarray(scores, np.float64).ravel(), 0.0, 1.0)
    if s.size == 0:
        raise ValueError("fuse needs at least one view score")
    if rule == "max":
        return float(s.max())
    if rule == "mean":
        return float(s.mean())
    if rule == "noisy_or":
        return float(1.0 - np.prod(1.0 - s))
    raise ValueError(f"unknown fusion rule {rule!r}; choose one of {', '.join(FUSION_RULES)}")


def fuse_parts(paths: Sequence[str | Path], scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray,
               rule: str = DEFAULT_FUSION) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Group per-view scores by part and fuse them: ``(part keys, fused scores, part labels, views per part)``.

    A part's label is defective (1) when any of its views is labelled so (views of one part normally agree)."""
    keys = part_keys(paths)
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels).astype(int)
    if not (len(keys) == len(scores) == len(labels)):
        raise ValueError("paths, scores and labels must have the same length")
    order: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        order.setdefault(k, []).append(i)
    parts = list(order)
    fused = np.array([fuse(scores[idx], rule) for idx in order.values()])
    part_y = np.array([int(labels[idx].max()) for idx in order.values()])
    n_views = np.array([len(idx) for idx in order.values()])
    return parts, fused, part_y, n_views
