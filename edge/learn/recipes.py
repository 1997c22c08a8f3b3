"""The two kinds of package on the line and the retrain recipe of each; when to suggest a supervised head (issue 29).

- An *anomaly* package (``train --recipe anomaly``, ``meta.anomaly``): fitted on good parts alone; its retrain
  (``Recipe.ANOMALY``, edge/learn/retrain_anomaly.py) fits a new bank from ``feedback/<good class>/``.
- A *supervised head* (the linear recipe, or ``boxinspect retrain``'s head-only package, ``meta.head``): its retrain
  (``Recipe.HEAD``, edge/learn/retrain.py) fits a logistic head on both classes. An anomaly package has the pooled
  features too, so a head retrain on it gives a supervised head-only candidate on the same backbone: the switch.

``head_suggestion``: while an anomaly package is live, the labelled folders the head retrain would read are counted
(a bounded directory listing, no file read); once every class has ``DEFAULT_MIN_PER_CLASS`` images, the operator
page offers to train a supervised head, which then runs in shadow beside the live model (edge/learn/lifecycle.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from edge.judge.images import IMAGE_EXTS
from edge.learn.retrain import DEFAULT_MIN_PER_CLASS

if TYPE_CHECKING:
    from edge.state import LoadedModel

log = logging.getLogger(__name__)

COUNT_CAP = 10_000  # images counted per class folder: the page's poll lists no more than this, however many are kept


class Recipe(str, Enum):
    """How ``POST /model/retrain`` builds a candidate."""

    HEAD = "head"  # a logistic head on both classes (edge/learn/retrain.py)
    ANOMALY = "anomaly"  # a new bank of good parts (edge/learn/retrain_anomaly.py); anomaly packages only


class ModelKind(str, Enum):
    """What a package learned from, as the Model panel shows it."""

    ANOMALY = "anomaly (good parts only)"
    HEAD = "supervised head"


class SuggestionAction(str, Enum):
    SWITCH_TO_HEAD = "switch_to_head"  # POST /model/retrain {"recipe": "head"}


class HeadSuggestion(BaseModel):
    """The Model panel's banner while an anomaly package is live: the label counts toward a supervised head, and
    the action once every class has ``needed`` (``action`` None: progress only, or the head is already in shadow)."""

    action: SuggestionAction | None
    counts: dict[str, int]  # class -> labelled images in the retrain's folders (at most COUNT_CAP per folder)
    needed: int
    text: str


def model_kind(metadata: Any) -> ModelKind:
    """An anomaly package without a head is ``ANOMALY``; anything else decides with a supervised head."""
    if getattr(metadata, "anomaly", None) is not None and getattr(metadata, "head", None) is None:
        return ModelKind.ANOMALY
    return ModelKind.HEAD


def default_recipe(metadata: Any) -> Recipe:
    """The live package's own recipe: a new bank for an anomaly package, a new head for any other."""
    return Recipe.ANOMALY if model_kind(metadata) is ModelKind.ANOMALY else Recipe.HEAD


def count_images(folder: Path, cap: int = COUNT_CAP) -> int:
    """Image files directly in ``folder`` (as retrain lists them: no dot-files), counting stops at ``cap``."""
    n = 0
    try:
        with os.scandir(folder) as entries:
            for e in entries:
                if not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in IMAGE_EXTS and e.is_file():
                    n += 1
                    if n >= cap:
                        break
    except (FileNotFoundError, NotADirectoryError):
        return 0
    except OSError as e:
        log.warning("cannot list %s: %s", folder, e.strerror or e)
        return 0
    return n


def label_counts(dirs: Iterable[Path], labels: Sequence[str], cap: int = COUNT_CAP) -> dict[str, int]:
    """Images per class over ``<dir>/<class>/`` of every dir (each folder counted up to ``cap``)."""
    counts = dict.fromkeys(labels, 0)
    for d in dirs:
        for cls in labels:
            counts[cls] += count_images(Path(d) / cls, cap)
    return counts


def head_suggestion(live: LoadedModel | None, candidate: LoadedModel | None, retraining: bool,
                    dirs: Iterable[Path], needed: int = DEFAULT_MIN_PER_CLASS) -> HeadSuggestion | None:
    """None unless an anomaly package is live; else the counts, and the switch once every class has ``needed``."""
    if live is None or model_kind(live.classifier.metadata) is not ModelKind.ANOMALY:
        return None
    counts = label_counts(dirs, live.labels)
    progress = ", ".join(f"{c} {min(n, needed)}/{needed}" for c, n in counts.items())
    if candidate is not None and model_kind(candidate.classifier.metadata) is ModelKind.HEAD:
        text = ("A supervised head runs in shadow beside the live anomaly model: compare the two in the table and "
                "the disagreements, then promote it or drop it.")
        return HeadSuggestion(action=None, counts=counts, needed=needed, text=text)
    if any(n < needed for n in counts.values()):
        text = (f"Labels toward a supervised head: {progress}. With {needed} labelled boxes in every class, a head "
                "trained on both classes can run in shadow beside the live model (good parts only).")
        return HeadSuggestion(action=None, counts=counts, needed=needed, text=text)
    if retraining:
        return HeadSuggestion(action=None, counts=counts, needed=needed,
                              text="A retrain is running: its candidate runs in shadow when it is ready.")
    text = (f"Every class has enough labels ({', '.join(f'{c} {n}' for c, n in counts.items())}; {needed} needed): "
            "a supervised head learns from the labelled defects too. Train one: it runs in shadow beside the live "
            "model, which keeps deciding until you promote the head.")
    return HeadSuggestion(action=SuggestionAction.SWITCH_TO_HEAD, counts=counts, needed=needed, text=text)
