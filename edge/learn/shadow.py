"""Shadow mode: a candidate package judges every decided box beside the live model and never publishes.

The publisher hands over the decision, whose evidence holds the records that entered it (edge/judge/records.py;
``Shadow.on_decision``: O(1), never raises). A worker thread judges the box as the live model did: the candidate
scores those same records, their scores are aggregated the same way (``decision.aggregate``, and for several
views fused with ``decision.fusion``) and the candidate's threshold applied by the same rule; agreement is the
candidate's decision against the live decision. So an identical candidate agrees on every box, and a copy with
another threshold disagrees exactly on the boxes whose aggregate lies between the two thresholds. A head-only
candidate that shares the live backbone costs a dot product per record on the features of the live invoke; any
other candidate costs one invoke per record, in the worker. Disagreements keep the crop that decided (the live
decision's representative) (``<shadow.dir>/disagreements/``, at most ``shadow.keep``) with both decisions'
aggregate scores and thresholds, for the operator page, where a person's label goes to ``feedback/<class>/``
like any other answer (edge/learn/feedback.py). Metrics: ``boxinspect_shadow_agreement_ratio``,
``boxinspect_shadow_disagreements_total`` (+ boxes, errors, skipped). A failing judgement is counted and logged;
the live decision never waits for or depends on it.

Loading, promoting and rolling back a candidate: edge/learn/lifecycle.py; the HTTP routes: edge/api/models.py.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.judge.classifier import ModelError
from edge.judge.decision import Decision
from edge.judge.fusion import fuse
from edge.judge.records import FrameRecord, aggregate
from edge.learn.feedback import FeedbackError, atomic_write, delete_crop, encode_jpeg, safe_name, take_crop
from edge.runtime.timeutil import iso_utc

if TYPE_CHECKING:
    from edge.config import Config
    from edge.runtime.metrics import Metrics
    from edge.state import LoadedModel

log = logging.getLogger(__name__)

DISAGREEMENTS_DIR = "disagreements"


# --------------------------------------------------------------------------------------------------
# Disagreements on disk
# --------------------------------------------------------------------------------------------------


class DisagreementStore:
    """``<dir>/<name>.jpg`` (the box's ROI crop) + ``<name>.json`` (both verdicts); at most ``keep``, oldest out."""

    def __init__(self, root: Path, keep: int) -> None:
        self.dir = Path(root)
        self.keep = keep
        self._lock = threading.Lock()
        self._names: deque[str] = deque()
        if self.dir.is_dir():
            found = sorted(self.dir.glob("*.json"), key=lambda p: (p.stat().st_mtime, p.name))
            self._names.extend(p.stem for p in found)
            self._enforce()

    def save(self, name: str, crop: np.ndarray, record: dict[str, Any]) -> str:
        name = safe_name(name)
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.dir / f"{name}.jpg", encode_jpeg(crop))
        atomic_write(self.dir / f"{name}.json", json.dumps(dict(record, name=name), default=str).encode())
        with self._lock:
            if name in self._names:
                self._names.remove(name)
            self._names.append(name)
        self._enforce()
        return name

    def items(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest ``limit`` disagreements, newest first."""
        with self._lock:
            names = list(self._names)[-limit:][::-1]
        out = []
        for name in names:
            try:
                out.append(json.loads((self.dir / f"{name}.json").read_text()))
            except (OSError, ValueError):
                out.append({"name": name})
        return out

    def crop_path(self, name: str) -> Path | None:
        name = safe_name(name)
        with self._lock:
            if name not in self._names:
                return None
        return self.dir / f"{name}.jpg"

    def pop(self, name: str) -> tuple[bytes, dict[str, Any]]:
        """Take one out of the queue (labelled or skipped). FeedbackError if it is not waiting."""
        name = safe_name(name)
        with self._lock:
            if name not in self._names:
                raise FeedbackError(f"{name} is not in the disagreement queue")
            self._names.remove(name)
        return take_crop(self.dir, name, "shadow")

    def clear(self) -> None:
        with self._lock:
            names, self._names = list(self._names), deque()
        for n in names:
            self._unlink(n)

    def __len__(self) -> int:
        return len(self._names)

    def _enforce(self) -> None:
        while True:
            with self._lock:
                if len(self._names) <= self.keep:
                    return
                name = self._names.popleft()
            self._unlink(name)

    def _unlink(self, name: str) -> None:
        delete_crop(self.dir, name, "shadow")


# --------------------------------------------------------------------------------------------------
# Shadow mode
# --------------------------------------------------------------------------------------------------


@dataclass
class Candidate:
    """A candidate package loaded beside the live model, with where it came from and its metrics."""

    model: LoadedModel
    origin: str  # "model.dir" or "retrain"
    retrain: dict[str, Any] | None = None  # the retrain report (labels, CV metrics, time, memory)
    since: float = field(default_factory=time.time)

    @property
    def path(self) -> Path:
        return Path(self.model.classifier.path)


@dataclass
class _Job:
    """One live decision to judge: per view the records that entered it, and how the live model aggregated them."""

    candidate: Candidate
    live: LoadedModel
    event: dict[str, Any]
    views: dict[str, tuple[FrameRecord, ...]]  # view ("" for a single view) -> its records
    aggregate: str  # how a view's frame scores became its score
    fusion: str | None  # how the views' scores became the part's (several views)
    live_score: float  # the live decision's aggregate
    live_threshold: float
    live_defect: bool
    crop: np.ndarray  # the crop that decided: the live decision's representative


class ShadowStats:
    """Counts for one candidate (reset when another candidate is loaded)."""

    def __init__(self) -> None:
        self.judged = 0
        self.agreed = 0
        self.live_defect_candidate_ok = 0  # the candidate would pass what the live model rejects
        self.live_ok_candidate_defect = 0  # the candidate would reject what the live model passes
        self.errors = 0
        self.skipped = 0
        self.fast_path = 0  # judged on the live invoke's features (a dot product)
        self.last_error: str | None = None

    def doc(self) -> dict[str, Any]:
        dis = self.judged - self.agreed
        return {
            "judged": self.judged,
            "agreed": self.agreed,
            "disagreed": dis,
            "agreement_ratio": round(self.agreed / self.judged, 4) if self.judged else None,
            "live_defect_candidate_ok": self.live_defect_candidate_ok,
            "live_ok_candidate_defect": self.live_ok_candidate_defect,
            "errors": self.errors,
            "skipped": self.skipped,
            "fast_path": self.fast_path,
            "last_error": self.last_error,
        }


def head_on_backbone_of(candidate: Any, live: Any) -> bool:
    """True when ``candidate`` is a head-only package whose backbone is the one ``live`` runs (equal
    ``backbone_sha256``, edge/judge/model_package.py): then the live invoke's features give its score by a dot
    product (``Classifier.head_score``), with no second invoke."""
    try:
        if getattr(getattr(candidate, "metadata", None), "head", None) is None:
            return False
        ident = getattr(candidate, "backbone_sha256", None)
        return bool(ident) and ident == getattr(live, "backbone_sha256", None) and bool(getattr(live, "has_features", False))
    except Exception:  # an odd package is judged the slow way
        return False


class Shadow:
    """Judges every decided box with the candidate, off the frame path. Never publishes, never raises into the loop."""

    def __init__(self, cfg: Config, metrics: Metrics) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.store = DisagreementStore(Path(cfg.shadow.dir) / DISAGREEMENTS_DIR, cfg.shadow.keep)
        self._lock = threading.Lock()
        self._candidate: Candidate | None = None
        self.stats = ShadowStats()
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=cfg.shadow.queue)
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()

    # -- the candidate -------------------------------------------------------------------------------
    @property
    def candidate(self) -> Candidate | None:
        return self._candidate

    def wants_features(self, live: Any) -> bool:
        """The loop should ask the live invoke for its features: the candidate is a head on ``live``'s backbone."""
        c = self._candidate
        return c is not None and head_on_backbone_of(c.model.classifier, live)

    def set_candidate(self, candidate: Candidate | None) -> None:
        """Start judging with ``candidate`` (None: stop). Statistics start again at zero; the disagreement
        queue of the previous candidate is cleared (its crops were judged by another model)."""
        with self._lock:
            old = self._candidate
            self._candidate = candidate
            self.stats = ShadowStats()
        if old is not None and (candidate is None or candidate.model is not old.model):
            self.store.clear()
        self.metrics.shadow_agreement_ratio.set(float("nan"))
        if candidate is not None:
            self._ensure_worker()
            log.info("shadow: judging every decided box with %s (%s)", candidate.model.classifier.model_id, candidate.origin)
        elif old is not None:
            log.info("shadow: off (was %s)", old.model.classifier.model_id)

    # -- the publisher's side: references only, never raises -----------------------------------------------
    def on_decision(self, event: dict[str, Any], decision: Decision, live: LoadedModel | None) -> None:
        """A published decision: queue its records for the candidate (skipped and counted if the queue is full)."""
        cand = self._candidate
        ev = decision.evidence
        if cand is None or live is None or ev is None or event.get("kind") != "model" or decision.score is None:
            return
        try:
            per_view = decision.view_evidence or {"": ev}
            job = _Job(cand, live, {k: event.get(k) for k in ("event_id", "label", "is_defect", "score", "threshold",
                                                              "model_id", "part_id", "decided_at")},
                       {v: e.records for v, e in per_view.items()}, ev.aggregate,
                       decision.fusion if decision.view_evidence else None, float(decision.score),
                       float(decision.threshold), bool(decision.is_defect), ev.representative.model_crop())
            self._queue.put_nowait(job)
            self._idle.clear()
        except queue.Full:
            with self._lock:
                self.stats.skipped += 1
            self.metrics.shadow_skipped.inc()
        except Exception as e:
            self._count_error(e)

    # -- the worker -----------------------------------------------------------------------------------
    def _ensure_worker(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                self.judge(job)
            except Exception as e:  # counted; the worker lives on
                self._count_error(e)
            finally:
                if self._queue.empty():
                    self._idle.set()

    def wait_idle(self, timeout: float) -> bool:
        """True once every queued box was judged (tests, shutdown)."""
        return self._idle.wait(timeout)

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass

    def _count_error(self, e: BaseException) -> None:
        with self._lock:
            self.stats.errors += 1
            first = self.stats.errors == 1
            self.stats.last_error = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
        self.metrics.shadow_errors.inc()
        if first:
            log.error("shadow: judging a box failed (live inspection goes on; counted in "
                      "boxinspect_shadow_errors_total)", exc_info=e)
        else:
            log.debug("shadow: judging a box failed: %s", e)

    def _score_record(self, clf: Any, live: Any, rec: FrameRecord) -> tuple[float, bool]:
        """The candidate's score of one record: (score, judged on the live invoke's features)."""
        if rec.features is not None and head_on_backbone_of(clf, live):
            score = float(clf.head_score(rec.features))  # a dot product on the live invoke's features
            fast = True
        else:
            score = float(clf.score(rec.roi, rec.located, rec.view))  # a second invoke, here in the worker
            fast = False
        if not np.isfinite(score):
            raise ModelError(f"candidate {clf.model_id} returned a non-finite score")
        return score, fast

    def candidate_score(self, job: _Job) -> tuple[float, bool]:
        """The candidate's aggregate for the job's decision, by the live decision's own rule: per view the
        aggregate of its records' scores, the views fused; and whether every record took the fast path."""
        clf: Any = job.candidate.model.classifier  # a Classifier; head_score exists on head-only packages
        view_scores, all_fast = [], True
        for recs in job.views.values():
            scored = [self._score_record(clf, job.live.classifier, r) for r in recs]
            all_fast = all_fast and all(f for _, f in scored)
            view_scores.append(aggregate([x for x, _ in scored], job.aggregate))
        if job.fusion is None:
            return view_scores[0], all_fast
        return fuse(view_scores, job.fusion), all_fast

    def judge(self, job: _Job) -> bool:
        """Decide the job's box with the candidate as the live model decided it, compare the two decisions,
        count; keep the crop that decided if they disagree."""
        cand = job.candidate
        if cand is not self._candidate:
            return True  # the candidate changed meanwhile: not this one's box to count
        clf: Any = cand.model.classifier
        score, fast = self.candidate_score(job)
        thr = cand.model.threshold(self.cfg.model.threshold)
        cand_defect = bool(score >= thr)  # the one decision rule (edge/state.py verdict)
        live_defect = job.live_defect
        agree = cand_defect == live_defect
        with self._lock:
            if cand is not self._candidate:
                return True
            s = self.stats
            s.judged += 1
            s.fast_path += int(fast)
            if agree:
                s.agreed += 1
            elif live_defect:
                s.live_defect_candidate_ok += 1
            else:
                s.live_ok_candidate_defect += 1
            ratio = s.agreed / s.judged
        self.metrics.shadow_boxes.inc()
        self.metrics.shadow_agreement_ratio.set(ratio)
        if not agree:
            self.metrics.shadow_disagreements.inc()
            neg, pos = cand.model.labels
            record = {
                "decision": job.event,
                "live": {"model_id": job.live.classifier.model_id, "score": round(job.live_score, 6),
                         "threshold": job.live_threshold, "label": pos if live_defect else neg},
                "candidate": {"model_id": clf.model_id, "score": round(score, 6), "threshold": thr,
                              "label": pos if cand_defect else neg},
                "aggregate": job.aggregate,
                "fusion": job.fusion,
                "frames": {v or "frames": [r.index for r in recs] for v, recs in job.views.items()},
                "labels": [neg, pos],
                "created_at": iso_utc(),
            }
            try:
                self.store.save(str(job.event.get("event_id") or f"box-{time.time():.3f}"), np.ascontiguousarray(job.crop),
                                record)
            except (OSError, FeedbackError) as e:
                log.warning("shadow: disagreement crop not kept: %s", e)
        return agree

    def doc(self) -> dict[str, Any]:
        with self._lock:
            d = self.stats.doc()
        d["queued"] = self._queue.qsize()
        d["kept_disagreements"] = len(self.store)
        return d


# --------------------------------------------------------------------------------------------------
# Candidate, retrain, promote, roll back
# --------------------------------------------------------------------------------------------------
