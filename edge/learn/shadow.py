"""Shadow mode, promote and roll back: a candidate model beside the live one, then a swap that can be undone.

- ``Shadow``: a candidate package judges every decided box beside the live model and never publishes. The
  publisher hands over the decision, whose evidence holds the records that entered it (edge/judge/records.py;
  ``on_decision``: O(1), never raises). A worker thread judges the box as the live model did: the candidate
  scores those same records, their scores are aggregated the same way (``decision.aggregate``, and for several
  views fused with ``decision.fusion``) and the candidate's threshold applied by the same rule; agreement is
  the candidate's decision against the live decision. So an identical candidate agrees on every box, and a
  copy with another threshold disagrees exactly on the boxes whose aggregate lies between the two thresholds.
  A head-only candidate that shares the live backbone costs a dot product per record on the features of the
  live invoke; any other candidate costs one invoke per record, in the worker. Disagreements keep the crop
  that decided (the live decision's representative) (``<shadow.dir>/disagreements/``, at most
  ``shadow.keep``) with both decisions' aggregate scores and thresholds, for the operator page, where a
  person's label goes to ``feedback/<class>/`` like any other answer (edge/learn/feedback.py).
  Metrics: ``boxinspect_shadow_agreement_ratio``, ``boxinspect_shadow_disagreements_total`` (+ boxes, errors,
  skipped). A failing judgement is counted and logged; the live decision never waits for or depends on it.
- ``ModelControl``: load a candidate (a .tflite inside ``model.dir`` or a retrain candidate), run
  ``boxinspect retrain`` in the background (edge/learn/retrain.py), promote the candidate through the daemon's
  atomic reload + self-test, roll back to the previous package in one call. Every promotion and rollback is
  logged with both models' metrics and the shadow statistics, and published on the retained
  ``<base>/model`` topic (field ``change``, docs/EVENTS.md).
- ``install_model_api``: ``GET /model`` (+ the open ``GET /ui/model`` for the page), ``POST /model/candidate``,
  ``DELETE /model/candidate``, ``POST /model/retrain``, ``POST /model/promote``, ``POST /model/rollback``,
  ``GET /ui/shadow/{name}.jpg``, ``POST /ui/shadow/{name}`` (label a disagreement). Actions are protected
  like ``POST /reload``: the API token, and refused without one unless ``api.reload_without_token``.
"""

from __future__ import annotations

import importlib
import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import APIRouter, FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from edge.judge.classifier import ModelError
from edge.judge.decision import Decision
from edge.judge.fusion import fuse
from edge.judge.model_package import PackageError, resolve_model_name
from edge.judge.records import FrameRecord, aggregate
from edge.learn.feedback import FeedbackError, _atomic_write, delete_crop, encode_jpeg, safe_name, take_crop
from edge.learn.poison import PromoteNeedsConfirmation, candidate_review, check_promote, label_audit
from edge.runtime.hostcheck import retrain_missing
from edge.runtime.timeutil import iso_utc

if TYPE_CHECKING:
    from edge.config import Config
    from edge.runtime.metrics import Metrics
    from edge.state import LoadedModel, ModelSlot, ReloadResult

log = logging.getLogger(__name__)

DISAGREEMENTS_DIR = "disagreements"
CANDIDATES_DIR = "candidates"
METRIC_KEYS = ("n", "auc", "recall", "specificity", "macro_f1", "accuracy", "threshold")


class ControlError(ValueError):
    """A model action that cannot be done as asked; one sentence (the API answers 4xx with it)."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def package_metrics(model: LoadedModel) -> dict[str, Any]:
    """The metrics a package carries, flat, with where they come from: the grouped cross-validation of its head
    (sidecar ``cv_metrics``: retrain, or convert of a linear-head run), else the test split convert measured."""
    meta = model.classifier.metadata
    out: dict[str, Any] = {"source": None, "threshold": float(model.classifier.threshold)}
    head = getattr(meta, "head", None)
    cv = getattr(meta, "cv_metrics", None)
    if cv:
        cv = cv if isinstance(cv, dict) else cv.model_dump(mode="json")
        out.update({k: cv.get(k) for k in METRIC_KEYS if k in cv and k != "threshold"})
        out["source"] = "grouped CV (" + ("retrained head" if head is not None else "convert") + ")"
        return out
    m = getattr(meta, "metrics", None)
    if m is not None:
        t = m.tflite
        out.update(n=t.n, auc=t.auc, recall=t.recall, specificity=t.specificity, macro_f1=t.macro_f1,
                   accuracy=t.accuracy, source=f"{m.split} split (convert)")
    return out


def model_summary(model: LoadedModel | None, override: float | None = None) -> dict[str, Any] | None:
    if model is None:
        return None
    clf = model.classifier
    return {
        "model_id": clf.model_id,
        "path": str(clf.path),
        "threshold": model.threshold(override),
        "self_test_passed": model.self_test_passed,
        "loaded_at": model.loaded_at,
        "metrics": package_metrics(model),
    }


RECORD_FILE = "active.json"


def record_path(cfg: Config) -> Path:
    return Path(cfg.shadow.dir) / RECORD_FILE


def read_record(cfg: Config) -> dict[str, Any] | None:
    """The last promotion or rollback (``<shadow.dir>/active.json``), if it was made under this ``model.path``
    and its live package still exists; else None (a changed config wins over the record)."""
    path = record_path(cfg)
    try:
        rec = json.loads(path.read_text())
        live = Path(rec["live"]["path"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("ignoring the promotion record %s: %s", path, e)
        return None
    if rec.get("config_model_path") != str(cfg.model.path):
        log.info("promotion record %s was made for model.path %s, not %s: ignored", path,
                 rec.get("config_model_path"), cfg.model.path)
        return None
    if not live.is_file():
        log.warning("promotion record %s names %s, which no longer exists: loading model.path", path, live)
        return None
    return dict(rec)


def active_model_path(cfg: Config) -> Path:
    """The package to load at start-up and on a plain reload: the last promoted or rolled-back one if recorded
    for this ``model.path``, else ``model.path``."""
    rec = read_record(cfg)
    if rec is None:
        return Path(cfg.model.path)
    live = Path(rec["live"]["path"])
    if live != Path(cfg.model.path):
        log.info("model: %s (%s on record in %s) instead of model.path %s; POST /model/rollback goes back",
                 live, (rec.get("history") or [{}])[0].get("action", "promotion"), record_path(cfg), cfg.model.path)
    return live


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
        _atomic_write(self.dir / f"{name}.jpg", encode_jpeg(crop))
        _atomic_write(self.dir / f"{name}.json", json.dumps(dict(record, name=name), default=str).encode())
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
            score = float(clf.score(rec.roi, rec.located))  # a second invoke on the same crop, here in the worker
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


class ModelControl:
    """The model's life cycle on the device. ``swap`` is the daemon's atomic load + self-test + swap of a
    trusted path (``Daemon.swap_in``); ``loader`` loads and self-tests a package without swapping it in."""

    def __init__(
        self,
        cfg: Config,
        metrics: Metrics,
        models: ModelSlot,
        shadow: Shadow,
        loader: Callable[[str | Path], LoadedModel],
        swap: Callable[..., ReloadResult],
        feedback_dirs: Callable[[], list[Path]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.models = models
        self.shadow = shadow
        self.loader = loader
        self.swap = swap
        self.feedback_dirs = feedback_dirs or (lambda: [Path(cfg.operator.feedback_dir), *cfg.shadow.retrain_data])
        self.model_dir = Path(cfg.model.dir or Path(cfg.model.path).parent)
        self.candidate_dir = Path(cfg.shadow.dir) / CANDIDATES_DIR
        self._lock = threading.RLock()
        # the package a rollback returns to: its summary (path, model id, metrics), not a loaded interpreter
        self.previous: dict[str, Any] | None = None
        self.history: deque[dict[str, Any]] = deque(maxlen=cfg.shadow.history)
        self.change: dict[str, Any] | None = None  # the last promotion/rollback: part of the retained model doc
        self.retrain_job: dict[str, Any] = {"state": "idle"}
        self._retrain_thread: threading.Thread | None = None
        self._restore()

    # -- the record that makes a promotion survive a restart ---------------------------------------------------
    def _restore(self) -> None:
        """After a restart on the promoted package: what a rollback returns to, and the history, from the record."""
        rec = read_record(self.cfg)
        live = self.models.get()
        if rec is None or live is None or Path(rec["live"]["path"]) != Path(live.classifier.path):
            return
        self.previous = rec.get("previous")
        self.history.extend(reversed(rec.get("history") or []))

    def _write_record(self) -> None:
        live = self._summary(self.models.get())
        rec = {"config_model_path": str(self.cfg.model.path), "live": live, "previous": self.previous,
               "history": list(self.history)[::-1]}
        path = record_path(self.cfg)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(path, json.dumps(rec, indent=1, default=str).encode())
        except OSError as e:
            log.error("the %s is live, but not recorded in %s (%s): a restart loads model.path",
                      live["model_id"] if live else None, path, e.strerror or e)

    # -- names from the network ----------------------------------------------------------------------------
    def resolve(self, name: str) -> Path:
        """A candidate name: a .tflite inside ``model.dir``, or inside ``<shadow.dir>/candidates/``."""
        try:
            return resolve_model_name(self.model_dir, name)
        except PackageError as first:
            if self.candidate_dir.is_dir():
                try:
                    return resolve_model_name(self.candidate_dir, name)
                except PackageError:
                    pass
            raise ControlError(str(first), 404) from None

    # -- candidate ---------------------------------------------------------------------------------------
    def load_candidate(self, path: Path, origin: str = "model.dir", retrain: dict[str, Any] | None = None) -> dict[str, Any]:
        """Load and self-test ``path`` and run it in shadow. ControlError (422) if it cannot load or fails."""
        live = self.models.get()
        try:
            model = self.loader(path)
        except ModelError as e:
            raise ControlError(f"candidate not loaded: {e}", 422) from None
        if not model.self_test_passed:
            raise ControlError("candidate self-test failed: " + "; ".join(model.self_test_failures), 422)
        if live is not None and tuple(model.labels) != tuple(live.labels):
            raise ControlError(f"candidate labels {list(model.labels)} differ from the live model's {list(live.labels)}", 422)
        cand = Candidate(model, origin, retrain)
        with self._lock:
            self.shadow.set_candidate(cand)
        return self.doc()

    def drop_candidate(self) -> dict[str, Any]:
        with self._lock:
            self.shadow.set_candidate(None)
        return self.doc()

    # -- retrain (edge/learn/retrain.py) in the background ------------------------------------------------------------
    def start_retrain(self, target_recall: float | None = None, cost_ratio: float | None = None,
                      min_per_class: int | None = None) -> dict[str, Any]:
        try:
            retrain_mod = importlib.import_module("edge.learn.retrain")
        except ImportError as e:
            raise ControlError(f"retrain is not available in this install ({e})", 404) from None
        missing = retrain_missing()  # the lean edge install: the page says what to install
        if missing:
            raise ControlError(missing, 501)
        live = self.models.get()
        if live is None:
            raise ControlError("no live model to retrain from", 503)
        with self._lock:
            if self._retrain_thread is not None and self._retrain_thread.is_alive():
                raise ControlError("a retrain is already running (GET /model shows its progress)", 409)
            out = self.candidate_dir / time.strftime("%Y%m%d-%H%M%S")
            self.retrain_job = {"state": "running", "started_at": iso_utc(), "progress": "starting",
                                "base_model_id": live.classifier.model_id, "out_dir": str(out)}
            kwargs: dict[str, Any] = {}
            if target_recall is not None:
                kwargs["target_recall"] = target_recall
            if cost_ratio is not None:
                kwargs["cost_ratio"] = cost_ratio
            if min_per_class is not None:
                kwargs["min_per_class"] = min_per_class
            t = threading.Thread(target=self._retrain, args=(retrain_mod, Path(live.classifier.path), out, kwargs),
                                 name="retrain", daemon=True)
            self._retrain_thread = t
            t.start()
        return dict(self.retrain_job)

    def _retrain(self, mod: Any, package: Path, out: Path, kwargs: dict[str, Any]) -> None:
        t0 = time.monotonic()

        def progress(text: str, done: int | None = None, total: int | None = None) -> None:
            self.retrain_job["progress"] = str(text)[:200] + (f" ({done}/{total})" if total else "")

        try:
            fn = mod.retrain
            try:
                import inspect

                if "progress" in inspect.signature(fn).parameters:
                    kwargs["progress"] = progress
            except (TypeError, ValueError):
                pass
            progress("extracting features and fitting the head")
            result = fn(package, [d for d in self.feedback_dirs() if Path(d).is_dir()], out, **kwargs)
            cand_path = Path(getattr(result, "candidate", None) or result)
            report = _as_dict(result)
            report["label_audit"] = label_audit(Path(self.cfg.operator.feedback_dir))  # issue 24 (edge/learn/poison.py)
            progress("loading the candidate")
            self.load_candidate(cand_path, "retrain", report)
            self.retrain_job.update(state="done", progress="candidate running in shadow", finished_at=iso_utc(),
                                    seconds=round(time.monotonic() - t0, 2), candidate=str(cand_path), report=report)
            log.info("retrain: candidate %s ready in %.1f s, running in shadow", cand_path, time.monotonic() - t0)
        except Exception as e:  # a failed retrain is a state the page shows, not a crash
            self.retrain_job.update(state="failed", finished_at=iso_utc(), seconds=round(time.monotonic() - t0, 2),
                                    error=" ".join(str(e).split())[:500] or type(e).__name__)
            log.error("retrain failed: %s", self.retrain_job["error"])

    # -- promote and roll back -------------------------------------------------------------------------------
    def promote(self, who: str | None = None) -> dict[str, Any]:
        with self._lock:
            cand = self.shadow.candidate
            if cand is None:
                raise ControlError("no candidate to promote (load one with POST /model/candidate or POST /model/retrain)")
            change = self._change("promote", self._summary(self.models.get()), self._summary(cand.model), who)
            result = self.swap(cand.path, change=change)
            if not result.ok:
                raise ControlError(f"promotion refused, the live model stays: {result.reason}", 422)
            self.previous = change["from"]
            self.shadow.set_candidate(None)
            self._record(change)
        return self.doc()

    def rollback(self, who: str | None = None) -> dict[str, Any]:
        with self._lock:
            prev = self.previous
            if prev is None:
                raise ControlError("nothing to roll back to: no promotion on record")
            change = self._change("rollback", self._summary(self.models.get()), prev, who)
            result = self.swap(Path(prev["path"]), change=change)
            if not result.ok:
                raise ControlError(f"rollback refused, the live model stays: {result.reason}", 422)
            if result.model_id != prev["model_id"]:
                log.warning("rollback: %s holds %s now, not %s as when it was live", prev["path"], result.model_id,
                            prev["model_id"])
            self.previous = change["from"]
            self._record(change)
        return self.doc()

    def _summary(self, model: LoadedModel | None) -> dict[str, Any] | None:
        return model_summary(model, self.cfg.model.threshold)

    def _change(self, action: str, old: dict[str, Any] | None, new: dict[str, Any] | None,
                who: str | None) -> dict[str, Any]:
        return {"action": action, "at": iso_utc(), "who": who, "from": old, "to": new, "shadow": self.shadow.doc()}

    def _record(self, change: dict[str, Any]) -> None:
        self.change = change
        self.history.append(change)
        self._write_record()
        sh = change.get("shadow") or {}
        fm = (change.get("from") or {}).get("metrics") or {}
        tm = (change.get("to") or {}).get("metrics") or {}
        def f(x: Any) -> str:
            return "-" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)

        log.info(
            "model %s: %s -> %s; metrics from %s (auc %s, recall %s, specificity %s) to %s (auc %s, recall %s, "
            "specificity %s); shadow: %s boxes, agreement %s, %s disagreement(s)",
            change["action"], (change.get("from") or {}).get("model_id"), (change.get("to") or {}).get("model_id"),
            fm.get("source"), f(fm.get("auc")), f(fm.get("recall")), f(fm.get("specificity")),
            tm.get("source"), f(tm.get("auc")), f(tm.get("recall")), f(tm.get("specificity")),
            sh.get("judged"), f(sh.get("agreement_ratio")), sh.get("disagreed"),
        )

    # -- views ---------------------------------------------------------------------------------------------------
    def mqtt_fields(self, change: dict[str, Any] | None = None) -> dict[str, Any]:
        """Added to the retained ``<base>/model`` document: ``change`` (the promotion or rollback that made this
        model live; null after a start or a plain reload) and ``previous_model_id`` (what a rollback returns to)."""
        if change is not None:
            prev_id = (change.get("from") or {}).get("model_id")
        else:
            prev_id = self.previous["model_id"] if self.previous is not None else None
        return {"previous_model_id": prev_id, "change": change}

    def doc(self) -> dict[str, Any]:
        cand = self.shadow.candidate
        candidate = None
        if cand is not None:
            candidate = self._summary(cand.model)
            assert candidate is not None
            candidate.update(origin=cand.origin, since=cand.since, retrain=cand.retrain)
        return {
            "live": self._summary(self.models.get()),
            "candidate": candidate,
            "previous": self.previous,
            "shadow": self.shadow.doc(),
            "retrain": dict(self.retrain_job),
            "history": list(self.history)[::-1],
        }


PATH_KEYS = ("path", "out_dir", "report", "candidate", "package", "label_dirs", "sources")


def _without_paths(doc: Any) -> Any:
    """``doc`` without file-system paths (for the open page): keys naming files or folders are dropped where
    their value is a string or a list of strings."""
    if isinstance(doc, dict):
        return {k: _without_paths(v) for k, v in doc.items()
                if not (k in PATH_KEYS and (isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))))}
    if isinstance(doc, list):
        return [_without_paths(x) for x in doc]
    return doc


def _as_dict(result: Any) -> dict[str, Any]:
    """A retrain result (dataclass, pydantic model, dict or path) as JSON-able data."""
    if hasattr(result, "to_json"):
        d = result.to_json()
    elif isinstance(result, dict):
        d = dict(result)
    elif hasattr(result, "model_dump"):
        d = result.model_dump(mode="json")
    elif hasattr(result, "__dataclass_fields__"):
        import dataclasses

        d = dataclasses.asdict(result)
    else:
        d = {"candidate": str(result)}
    out: dict[str, Any] = json.loads(json.dumps(d, default=str))
    return out


# --------------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------------


class CandidateRequest(BaseModel):
    path: str = Field(min_length=1, max_length=255,
                      description="a .tflite inside model.dir (or a retrain candidate inside <shadow.dir>/candidates/)")


class RetrainRequest(BaseModel):
    target_recall: float | None = Field(default=None, gt=0, le=1, description="pick the threshold for this recall")
    cost_ratio: float | None = Field(default=None, gt=0, le=1000, description="a missed defect costs N false rejects")
    min_per_class: int | None = Field(default=None, ge=2, le=100_000,
                                      description="refuse when a class has fewer labelled images (default: retrain's)")


class ActionRequest(BaseModel):
    who: str | None = Field(default=None, max_length=80, description="operator name or badge (logged)")
    confirm: bool = Field(default=False, description="promote despite the review's warning (edge/learn/poison.py)")


class ShadowLabelRequest(BaseModel):
    label: str = Field(min_length=1, max_length=80, description="a class name of the model, or 'skip'")
    who: str | None = Field(default=None, max_length=80)


def install_model_api(app: FastAPI, state: Any, control: ModelControl, auth: list[Any], token_set: bool) -> None:
    """``/model*`` and the disagreement queue ``/ui/shadow*`` on ``app`` (see the module docstring)."""
    cfg = state.config
    r = APIRouter(tags=["model life cycle"])

    def allowed() -> None:
        if not token_set and not cfg.api.reload_without_token:
            raise HTTPException(403, "model changes over HTTP need api.token (or api.reload_without_token: true)")

    def run(fn: Callable[[], dict[str, Any]]) -> JSONResponse:
        allowed()
        try:
            out = fn()
        except ControlError as e:
            raise HTTPException(e.status, str(e)) from None
        if state.operator is not None:
            state.operator.invalidate()
        return JSONResponse(out)

    @r.get("/model", summary="Live model, candidate in shadow (metrics side by side), shadow statistics, retrain, history",
           dependencies=auth)
    def get_model() -> dict[str, Any]:
        return control.doc()

    @r.get("/ui/model", summary="The operator page's Model panel: GET /model without file paths, plus the "
           "disagreement queue (read-only, open like the page)", tags=["operator page"])
    def ui_model(limit: int = Query(20, ge=1, le=200)) -> dict[str, Any]:
        d: dict[str, Any] = _without_paths(control.doc())
        d["disagreements"] = control.shadow.store.items(limit)
        d["review"] = candidate_review(d, cfg)  # issue 24: CV next to the recent parts, and the warning
        return d

    @r.post("/model/candidate", summary="Load a candidate package and run it in shadow", dependencies=auth,
            responses={404: {"description": "no such package"}, 422: {"description": "cannot load, or self-test failed"}})
    def candidate(body: CandidateRequest) -> JSONResponse:
        return run(lambda: control.load_candidate(control.resolve(body.path)))

    @r.delete("/model/candidate", summary="Stop shadow mode and forget the candidate", dependencies=auth)
    def drop() -> JSONResponse:
        return run(control.drop_candidate)

    @r.post("/model/retrain", status_code=202, dependencies=auth,
            summary="Retrain the head from the operator's labels in the background; GET /model shows the progress",
            responses={404: {"description": "retrain not available in this install"}, 409: {"description": "already running"}})
    def retrain(body: RetrainRequest | None = None) -> JSONResponse:
        b = body or RetrainRequest()
        resp = run(lambda: control.start_retrain(b.target_recall, b.cost_ratio, b.min_per_class))
        resp.status_code = 202
        return resp

    @r.post("/model/promote", summary="Swap the candidate in (atomic reload + self-test); the live one is kept for rollback",
            dependencies=auth, responses={409: {"description": "no candidate"}, 422: {"description": "refused"}})
    def promote(body: ActionRequest | None = None) -> JSONResponse:
        try:  # issue 24: a candidate that disagrees with live on too many recent parts needs a confirmation
            check_promote(control.doc(), cfg, bool(body and body.confirm), body.who if body else None)
        except PromoteNeedsConfirmation as e:
            raise HTTPException(409, str(e)) from None
        return run(lambda: control.promote(body.who if body else None))

    @r.post("/model/rollback", summary="Swap the previous package back in", dependencies=auth,
            responses={409: {"description": "nothing to roll back to"}, 422: {"description": "refused"}})
    def rollback(body: ActionRequest | None = None) -> JSONResponse:
        return run(lambda: control.rollback(body.who if body else None))

    @r.get("/ui/shadow/{name}.jpg", summary="The crop of one disagreement", response_class=Response,
           tags=["operator page"], responses={200: {"content": {"image/jpeg": {}}}})
    def shadow_image(name: str) -> Response:
        try:
            path = control.shadow.store.crop_path(name)
        except FeedbackError:
            path = None
        if path is None or not path.is_file():
            raise HTTPException(404, f"{name} is not in the disagreement queue")
        return Response(path.read_bytes(), media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @r.post("/ui/shadow/{name}", summary="Label (or skip) one disagreement: the crop goes to feedback/<class>/",
            tags=["operator page"], dependencies=auth,
            responses={404: {"description": "not in the queue"}, 422: {"description": "unknown label"}})
    def shadow_label(name: str, body: ShadowLabelRequest) -> dict[str, Any]:
        model = state.models.get()
        if model is None:
            raise HTTPException(503, "no model loaded")
        names = list(model.labels)
        if body.label != "skip" and body.label not in names:
            raise HTTPException(422, f"label must be one of {', '.join(names)} or 'skip'")
        op = state.operator
        if body.label != "skip" and op is None:
            raise HTTPException(503, "the operator page (feedback store) is off: operator.enabled")
        try:
            data, rec = control.shadow.store.pop(name)
        except FeedbackError as e:
            raise HTTPException(404, str(e)) from None
        if body.label == "skip":
            return {"name": name, "label": "skip"}
        decision = rec.get("decision") or {}
        record = {"decision_id": decision.get("event_id"), "source": "shadow disagreement",
                  "model_id": (rec.get("live") or {}).get("model_id"), "score": (rec.get("live") or {}).get("score"),
                  "threshold": (rec.get("live") or {}).get("threshold"), "verdict": decision.get("label"),
                  "candidate": rec.get("candidate"), "who": body.who, "line": cfg.line, "camera": cfg.camera}
        try:
            saved = op.feedback.save(name, body.label, "label", data, None, record)
        except OSError as e:
            raise HTTPException(507, f"label not stored: {e.strerror or e}") from None
        op.invalidate()
        return dict(saved)

    app.include_router(r)

