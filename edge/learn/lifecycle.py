"""The model's life cycle on the device: load a candidate into shadow, retrain in the background, promote, roll back.

``ModelControl`` loads a candidate (a .tflite inside ``model.dir`` or a retrain candidate) and hands it to the
shadow worker (edge/learn/shadow.py); runs ``boxinspect retrain`` in the background, by either recipe
(edge/learn/recipes.py: a head, edge/learn/retrain.py, or a new bank of good parts for an anomaly package,
edge/learn/retrain_anomaly.py); while an anomaly package is live, suggests a supervised head once every class has
enough labels (``suggestion``);
promotes the candidate through the daemon's atomic reload + self-test and rolls back to the previous package in
one call. Every promotion and rollback is logged with both models' metrics and the shadow statistics, recorded in
``<shadow.dir>/active.json`` (so it survives a restart) and published on the retained ``<base>/model`` topic
(field ``change``, docs/EVENTS.md). The HTTP routes are edge/api/models.py.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edge.judge.classifier import ModelError
from edge.judge.model_package import PackageError, resolve_model_name
from edge.learn.feedback import atomic_write
from edge.learn.poison import label_audit
from edge.learn.recipes import Recipe, default_recipe, head_suggestion, model_kind
from edge.learn.shadow import Candidate, Shadow
from edge.runtime.hostcheck import retrain_missing
from edge.runtime.timeutil import iso_utc

if TYPE_CHECKING:
    from edge.config import Config
    from edge.runtime.metrics import Metrics
    from edge.state import LoadedModel, ModelSlot, ReloadResult

log = logging.getLogger(__name__)

CANDIDATES_DIR = "candidates"
METRIC_KEYS = ("n", "auc", "recall", "specificity", "macro_f1", "accuracy", "threshold")


class Progress(Protocol):
    def __call__(self, text: str, done: int | None = None, total: int | None = None) -> None: ...


# (package, label dirs, out dir, progress) -> the retrain's result: RetrainResult (head) or the candidate's path (anomaly)
Fitter = Callable[[Path, list[Path], Path, Progress], Any]


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
        "kind": model_kind(clf.metadata).value,  # what it learned from: good parts only, or a supervised head
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
            atomic_write(path, json.dumps(rec, indent=1, default=str).encode())
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

    # -- retrain (edge/learn/retrain.py, retrain_anomaly.py) in the background ------------------------------------
    def start_retrain(self, target_recall: float | None = None, cost_ratio: float | None = None,
                      min_per_class: int | None = None, recipe: Recipe | None = None,
                      target_frr: float | None = None) -> dict[str, Any]:
        """Start a retrain from the labelled folders: ``recipe`` None is the live package's own (edge/learn/recipes.py).
        ControlError: 404/501 retrain not installed, 503 no live model, 422 a recipe or option that does not fit it,
        409 already running."""
        live = self.models.get()
        if live is None:
            raise ControlError("no live model to retrain from", 503)
        chosen = recipe if recipe is not None else default_recipe(live.classifier.metadata)
        fit = fitter(chosen, live, min_per_class=min_per_class, target_recall=target_recall, cost_ratio=cost_ratio,
                     target_frr=target_frr)
        missing = retrain_missing()  # the lean edge install: the page says what to install
        if missing:
            raise ControlError(missing, 501)
        with self._lock:
            if self._retrain_thread is not None and self._retrain_thread.is_alive():
                raise ControlError("a retrain is already running (GET /model shows its progress)", 409)
            out = self.candidate_dir / time.strftime("%Y%m%d-%H%M%S")
            self.retrain_job = {"state": "running", "recipe": chosen.value, "started_at": iso_utc(),
                                "progress": "starting", "base_model_id": live.classifier.model_id, "out_dir": str(out)}
            t = threading.Thread(target=self._retrain, args=(fit, Path(live.classifier.path), out),
                                 name="retrain", daemon=True)
            self._retrain_thread = t
            t.start()
        log.info("retrain (%s recipe) of %s started", chosen.value, live.classifier.model_id)
        return dict(self.retrain_job)

    def _progress(self, text: str, done: int | None = None, total: int | None = None) -> None:
        self.retrain_job["progress"] = str(text)[:200] + (f" ({done}/{total})" if total else "")

    def _retrain(self, fit: Fitter, package: Path, out: Path) -> None:
        t0 = time.monotonic()
        try:
            self._progress("reading the labelled crops")
            result = fit(package, [d for d in self.feedback_dirs() if Path(d).is_dir()], out, self._progress)
            cand_path = Path(getattr(result, "candidate", None) or result)
            report = _as_dict(result)
            report["recipe"] = self.retrain_job.get("recipe")
            report["label_audit"] = label_audit(Path(self.cfg.operator.feedback_dir))  # issue 24 (edge/learn/poison.py)
            self._progress("loading the candidate")
            self.load_candidate(cand_path, "retrain", report)
            self.retrain_job.update(state="done", progress="candidate running in shadow", finished_at=iso_utc(),
                                    seconds=round(time.monotonic() - t0, 2), candidate=str(cand_path), report=report)
            log.info("retrain: candidate %s ready in %.1f s, running in shadow", cand_path, time.monotonic() - t0)
        except Exception as e:  # a failed retrain is a state the page shows, not a crash
            self.retrain_job.update(state="failed", finished_at=iso_utc(), seconds=round(time.monotonic() - t0, 2),
                                    error=" ".join(str(e).split())[:500] or type(e).__name__)
            log.error("retrain failed: %s", self.retrain_job["error"])

    def suggestion(self) -> dict[str, Any] | None:
        """The Model panel's banner while an anomaly package is live (edge/learn/recipes.py ``head_suggestion``)."""
        cand = self.shadow.candidate
        s = head_suggestion(self.models.get(), cand.model if cand is not None else None,
                            self.retrain_job.get("state") == "running", self.feedback_dirs())
        return None if s is None else s.model_dump(mode="json")

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


def _module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ControlError(f"retrain is not available in this install ({e})", 404) from None


def fitter(recipe: Recipe, live: LoadedModel, *, min_per_class: int | None, target_recall: float | None,
           cost_ratio: float | None, target_frr: float | None) -> Fitter:
    """The retrain ``recipe`` with its options for the ``live`` package; ControlError (422) when they do not fit it."""
    if recipe is Recipe.ANOMALY:
        if getattr(live.classifier.metadata, "anomaly", None) is None:
            raise ControlError(f"recipe anomaly needs an anomaly package live (train --recipe anomaly); "
                               f"{live.classifier.model_id} decides with a supervised head: retrain it with recipe head", 422)
        if target_recall is not None or cost_ratio is not None:
            raise ControlError("target_recall and cost_ratio are the head recipe's; recipe anomaly takes target_frr", 422)
        anomaly = _module("edge.learn.retrain_anomaly")
        kw_a: dict[str, Any] = {"target_frr": target_frr}
        if min_per_class is not None:
            kw_a["min_good"] = min_per_class
        return lambda package, dirs, out, progress: anomaly.retrain_anomaly(package, dirs, out, progress=progress, **kw_a)
    if target_frr is not None:
        raise ControlError("target_frr is the anomaly recipe's; recipe head takes target_recall or cost_ratio", 422)
    head = _module("edge.learn.retrain")
    kw_h = {k: v for k, v in (("target_recall", target_recall), ("cost_ratio", cost_ratio),
                              ("min_per_class", min_per_class)) if v is not None}
    return lambda package, dirs, out, progress: head.retrain(package, dirs, out, progress=progress, **kw_h)


PATH_KEYS = ("path", "out_dir", "report", "candidate", "package", "label_dirs", "sources")


def without_paths(doc: Any) -> Any:
    """``doc`` without file-system paths (for the open page): keys naming files or folders are dropped where
    their value is a string or a list of strings."""
    if isinstance(doc, dict):
        return {k: without_paths(v) for k, v in doc.items()
                if not (k in PATH_KEYS and (isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))))}
    if isinstance(doc, list):
        return [without_paths(x) for x in doc]
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
