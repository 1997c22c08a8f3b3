"""Operator feedback and line data collection, kept in the folder-per-class layout ``boxinspect train`` reads.

::

    feedback/                      (operator.feedback_dir)
      ok/<id>.jpg                  the crop the model saw: what ``boxinspect train feedback/`` learns from
      ok/<id>.json                 the record: decision id, model id, score, threshold, verdict, kind, who, when
      defective/<id>.jpg, .json    (class folders are the model's labels)
      .frames/<id>.jpg             the full frame (a dot-folder: training skips it)
      .unlabelled/<id>.jpg, .json  collection mode: every Nth box crop, waiting in the label queue

A second answer for the same decision replaces the first (the files move to the new class folder), so a
decision is never in two classes. Every answer is counted in ``boxinspect_feedback_total{kind}``.
Files are written to a hidden temporary name and renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from edge.runtime.principal import actor, provenance
from edge.runtime.ratelimit import TokenBucket
from edge.runtime.timeutil import iso_utc

log = logging.getLogger(__name__)

KINDS = ("correct", "false_reject", "missed_defect", "label")
# the version of the JSON records (labels and collected crops); records of 0.1.0 have none and read as 1. A newer
# one (a downgrade) is still listed, read as far as its keys are known, and logged.
FEEDBACK_SCHEMA = 2
RETENTION_REASONS = ("age", "count", "bytes", "review")
FRAMES_DIR = ".frames"
UNLABELLED_DIR = ".unlabelled"
JPEG_QUALITY = 92
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class FeedbackError(ValueError):
    """An answer that cannot be stored as asked (one readable sentence; the API turns it into a 4xx)."""


def safe_name(text: str) -> str:
    """A file-name-safe form of an id (no path separators, no leading dot)."""
    name = _SAFE.sub("_", str(text))[:120].lstrip(".")
    if not name:
        raise FeedbackError("empty id")
    return name


def class_for(kind: str, is_defect: bool, labels: tuple[str, str]) -> str:
    """The class folder an answer puts the crop in; ``labels`` = (negative, positive) of the model.

    correct -> what the model said; false_reject -> negative (the model said defect, the box is fine);
    missed_defect -> positive (the model said OK, the box is defective).
    """
    negative, positive = labels
    if kind == "correct":
        return positive if is_defect else negative
    if kind == "false_reject":
        if not is_defect:
            raise FeedbackError("'false_reject' answers a defect verdict; this one was OK (use 'missed_defect' or 'correct')")
        return negative
    if kind == "missed_defect":
        if is_defect:
            raise FeedbackError("'missed_defect' answers an OK verdict; this one was a defect (use 'false_reject' or 'correct')")
        return positive
    raise FeedbackError(f"unknown feedback kind {kind!r}; one of correct, false_reject, missed_defect")


def parse_iso(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def take_crop(directory: Path, name: str, what: str) -> tuple[bytes, dict[str, Any]]:
    """A queued crop: ``<name>.jpg`` and its record ``<name>.json`` ({} if missing or unreadable), both then
    deleted. OSError if the JPEG cannot be read (its files are deleted all the same)."""
    try:
        data = (directory / f"{name}.jpg").read_bytes()
        try:
            rec = json.loads((directory / f"{name}.json").read_text())
        except (OSError, ValueError):
            rec = {}
    finally:
        delete_crop(directory, name, what)
    return data, rec


def delete_crop(directory: Path, name: str, what: str) -> None:
    """Delete a queued crop's two files; a file that cannot be deleted is logged (``what``: whose queue)."""
    for suffix in (".jpg", ".json"):
        try:
            (directory / f"{name}{suffix}").unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("%s: cannot delete %s%s: %s", what, name, suffix, e)


def is_kept_crop(path: Path) -> bool:
    """Whether ``path`` is a crop this store kept: its record ``<stem>.json`` beside it names it as ``crop``. Such an
    image is the model's crop already (what the model saw), so retrain scores it as it is, without a box search."""
    try:
        doc = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and isinstance(doc.get("crop"), str) and Path(doc["crop"]).name == path.name


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise FeedbackError(f"cannot encode an image of shape {image.shape} as JPEG")
    return buf.tobytes()


@dataclass
class _Label:
    created: float
    cls: str
    kind: str
    size: int = 0  # bytes of its crop + record (+ frame) on disk


@dataclass(frozen=True)
class Quota:
    """Issue 24: the labelled crops under a bound; the oldest labels go first (feedback grew 7.1 MB a request pair)."""

    max_files: int = 20_000
    max_bytes: int = 1_000_000_000
    max_age_s: float = 365 * 86400.0


class FeedbackStore:
    """The labelled crops under ``root``; counts per class and since a given time (in memory, scanned once)."""

    def __init__(self, root: Path, registry: CollectorRegistry | None = None, quota: Quota | None = None) -> None:
        self.root = Path(root)
        self.quota = quota or Quota()
        self._lock = threading.Lock()
        self._labels: dict[str, _Label] = {}  # file stem -> where it is
        self.answers = Counter(
            "boxinspect_feedback", "Operator answers on decisions, manual checks and the label queue", ["kind"],
            registry=registry,
        )
        for k in KINDS:
            self.answers.labels(kind=k)
        self.removed = Counter("boxinspect_feedback_removed", "Labelled crops removed by retention or by a person",
                               ["reason"], registry=registry)
        for reason in RETENTION_REASONS:
            self.removed.labels(reason=reason)
        self.files = Gauge("boxinspect_feedback_files", "Labelled crops on disk", registry=registry)
        self.files.set_function(lambda: len(self._labels))
        self.disk_bytes = Gauge("boxinspect_feedback_bytes", "Bytes of labelled crops on disk", registry=registry)
        self.disk_bytes.set_function(lambda: sum(lbl.size for lbl in list(self._labels.values())))
        self.rate: TokenBucket | None = None
        self.listeners: list[Callable[[dict[str, Any]], object]] = []  # told of every saved record (edge/feedback_mqtt.py)
        self._scan()
        self.enforce()

    def save(
        self,
        name: str,
        cls: str,
        kind: str,
        crop: bytes | np.ndarray,
        frame: bytes | np.ndarray | None,
        record: dict[str, Any],
    ) -> dict[str, Any]:
        """Store one labelled crop (JPEG bytes or a BGR image) as ``<root>/<cls>/<name>.jpg`` plus its record.

        Replaces an earlier answer for the same ``name`` (in any class). Returns the record written.
        Raises FeedbackError for a bad class name and OSError if the disk refuses.
        """
        name = safe_name(name)
        if not cls or cls.startswith(".") or _SAFE.search(cls):
            raise FeedbackError(f"bad class name {cls!r}")
        if kind not in KINDS:
            raise FeedbackError(f"unknown feedback kind {kind!r}")
        if self.rate is not None:  # issue 24: RateLimited -> 429 (edge/api/app.py)
            self.rate.check("too many labels stored: at most operator.feedback_per_minute a minute")
        crop_bytes = crop if isinstance(crop, bytes) else encode_jpeg(crop)
        now = time.time()
        rec = dict(record, kind=kind, label=cls, id=name, created_at=iso_utc(now), schema=FEEDBACK_SCHEMA,
                   **provenance())
        rec["who"] = actor(rec.get("who"))  # issue 26: never null
        folder = self.root / cls
        with self._lock:
            folder.mkdir(parents=True, exist_ok=True)
            self._remove_locked(name)
            if frame is not None:
                frames = self.root / FRAMES_DIR
                frames.mkdir(parents=True, exist_ok=True)
                atomic_write(frames / f"{name}.jpg", frame if isinstance(frame, bytes) else encode_jpeg(frame))
                rec["frame"] = f"{FRAMES_DIR}/{name}.jpg"
            rec["crop"] = f"{cls}/{name}.jpg"
            atomic_write(folder / f"{name}.jpg", crop_bytes)
            rec_bytes = json.dumps(rec, indent=2).encode()
            atomic_write(folder / f"{name}.json", rec_bytes)
            self._labels[name] = _Label(now, cls, kind, len(crop_bytes) + len(rec_bytes))
        self.answers.labels(kind=kind).inc()
        self.enforce()
        log.info("feedback: %s -> %s/%s.jpg (%s)", kind, cls, name, rec.get("who") or "anonymous")
        for listener in self.listeners:
            listener(rec)
        return rec

    def counts(self) -> dict[str, int]:
        with self._lock:
            out: dict[str, int] = {}
            for lbl in self._labels.values():
                out[lbl.cls] = out.get(lbl.cls, 0) + 1
            return out

    def since(self, t: float) -> int:
        """Labels created after ``t`` (unix seconds): the ones a model made at ``t`` has not seen."""
        with self._lock:
            return sum(1 for lbl in self._labels.values() if lbl.created > t)

    def __len__(self) -> int:
        return len(self._labels)

    def _remove_locked(self, name: str) -> None:
        old = self._labels.pop(name, None)
        if old is None:
            return
        for path in (self.root / old.cls / f"{name}.jpg", self.root / old.cls / f"{name}.json",
                     self.root / FRAMES_DIR / f"{name}.jpg"):
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def enforce(self, now: float | None = None) -> dict[str, int]:
        """Retention: labels older than the quota's age, then the oldest beyond its count and bytes, are deleted
        (counted in ``boxinspect_feedback_removed_total{reason}``). Returns how many per reason."""
        now = time.time() if now is None else now
        q = self.quota
        out = dict.fromkeys(RETENTION_REASONS[:3], 0)
        with self._lock:
            oldest = sorted(self._labels.items(), key=lambda kv: kv[1].created)
            total = sum(lbl.size for _, lbl in oldest)
            count = len(oldest)
            for name, lbl in oldest:
                if now - lbl.created > q.max_age_s:
                    reason = "age"
                elif count > q.max_files:
                    reason = "count"
                elif total > q.max_bytes:
                    reason = "bytes"
                else:
                    break
                self._remove_locked(name)
                count, total = count - 1, total - lbl.size
                out[reason] += 1
        for reason, n in out.items():
            if n:
                self.removed.labels(reason=reason).inc(n)
                log.info("feedback retention: %d label(s) removed (%s; operator.feedback_max_*)", n, reason)
        return out

    def remove(self, name: str) -> bool:
        """A person removes one label (review). False if there is no such label."""
        with self._lock:
            if name not in self._labels:
                return False
            self._remove_locked(name)
        self.removed.labels(reason="review").inc()
        return True

    def labels(self, limit: int = 200, who: str | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` labels with their records (for review), optionally only those given by ``who``."""
        with self._lock:
            newest = sorted(self._labels.items(), key=lambda kv: kv[1].created, reverse=True)
        out = []
        for name, lbl in newest:
            try:
                rec = json.loads((self.root / lbl.cls / f"{name}.json").read_text())
            except (OSError, ValueError):
                rec = {}
            if who is not None and rec.get("who") != who and rec.get("principal") != who:
                continue
            out.append(dict(rec, id=name, label=lbl.cls, kind=lbl.kind))
            if len(out) >= limit:
                break
        return out

    def _scan(self) -> None:
        if not self.root.is_dir():
            return
        newer = 0
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            for rec_path in folder.glob("*.json"):
                try:
                    rec = json.loads(rec_path.read_text())
                except (OSError, ValueError):
                    rec = {}
                if isinstance(rec.get("schema"), int) and rec["schema"] > FEEDBACK_SCHEMA:
                    newer += 1
                created = parse_iso(rec.get("created_at")) or rec_path.stat().st_mtime
                try:
                    size = rec_path.stat().st_size + rec_path.with_suffix(".jpg").stat().st_size
                except OSError:
                    size = 0
                self._labels[rec_path.stem] = _Label(created, folder.name, str(rec.get("kind", "label")), size)
        if self._labels:
            log.info("feedback: %d labelled crop(s) already in %s", len(self._labels), self.root)
        if newer:
            log.warning("feedback: %d record(s) in %s were written by a newer boxinspect (schema > %d): kept, "
                        "read as far as understood", newer, self.root, FEEDBACK_SCHEMA)


@dataclass
class _Queued:
    name: str
    created: float


class Collector:
    """Collection mode: every Nth decided box's crop goes to ``<root>/.unlabelled/`` for the label queue.

    Bounded by ``max_files`` and ``max_age_days`` (oldest go first). ``offer`` runs on the inspection loop,
    once per decision, and costs one small JPEG encode every Nth box.
    """

    def __init__(
        self,
        root: Path,
        every: int,
        max_files: int,
        max_age_days: float,
        enabled: bool = False,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.dir = Path(root) / UNLABELLED_DIR
        self.every = every
        self.max_files = max_files
        self.max_age_s = max_age_days * 86400.0
        self.enabled = enabled
        self._lock = threading.Lock()
        self._seen = 0
        self._queue: deque[_Queued] = deque()
        self.collected = Counter("boxinspect_collected", "Box crops saved unlabelled by collection mode", registry=registry)
        self.depth = Gauge("boxinspect_label_queue_depth", "Unlabelled crops waiting in the label queue", registry=registry)
        self.depth.set_function(lambda: len(self._queue))
        self.removed = Counter("boxinspect_collection_removed", "Unlabelled crops removed by retention",
                               ["reason"], registry=registry)
        for reason in ("age", "count"):
            self.removed.labels(reason=reason)
        self._scan()

    def set(self, enabled: bool, every: int | None = None) -> None:
        with self._lock:
            self.enabled = enabled
            if every is not None:
                self.every = every
            self._seen = 0
        log.info("collection mode %s (every %d box(es))", "on" if enabled else "off", self.every)

    def offer(self, event: dict[str, Any], crop: np.ndarray | None) -> str | None:
        """Called once per decision; saves the crop of every ``every``-th box. Returns the name, or None."""
        if not self.enabled or crop is None or crop.size == 0:
            return None
        with self._lock:
            self._seen += 1
            if self._seen % self.every:
                return None
        name = safe_name(event.get("event_id") or f"box-{time.time():.3f}")
        rec = {k: event.get(k) for k in ("event_id", "label", "is_defect", "score", "threshold", "model_id", "decided_at")}
        rec["schema"] = FEEDBACK_SCHEMA
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.dir / f"{name}.jpg", encode_jpeg(crop))
            atomic_write(self.dir / f"{name}.json", json.dumps(rec).encode())
        except (OSError, FeedbackError) as e:
            log.error("collection: crop of %s not saved: %s", name, e)
            return None
        with self._lock:
            self._queue.append(_Queued(name, time.time()))
        self.collected.inc()
        self.enforce()
        return name

    def enforce(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        removed = 0
        while True:
            with self._lock:
                if not self._queue or (
                    len(self._queue) <= self.max_files and now - self._queue[0].created <= self.max_age_s
                ):
                    break
                reason = "age" if now - self._queue[0].created > self.max_age_s else "count"
                item = self._queue.popleft()
            self._unlink(item.name)
            self.removed.labels(reason=reason).inc()
            removed += 1
        return removed

    def items(self, limit: int = 50) -> list[dict[str, Any]]:
        """The oldest ``limit`` waiting crops with their records."""
        with self._lock:
            names = [q.name for q in list(self._queue)[:limit]]
        out = []
        for name in names:
            try:
                rec = json.loads((self.dir / f"{name}.json").read_text())
            except (OSError, ValueError):
                rec = {}
            out.append(dict(rec, name=name))
        return out

    def crop_path(self, name: str) -> Path | None:
        name = safe_name(name)
        with self._lock:
            if not any(q.name == name for q in self._queue):
                return None
        return self.dir / f"{name}.jpg"

    def pop(self, name: str) -> tuple[bytes, dict[str, Any]]:
        """Take a crop out of the queue (to label it or skip it). FeedbackError if it is not waiting."""
        name = safe_name(name)
        with self._lock:
            for i, q in enumerate(self._queue):
                if q.name == name:
                    del self._queue[i]
                    break
            else:
                raise FeedbackError(f"{name} is not in the label queue")
        return take_crop(self.dir, name, "collection")

    def __len__(self) -> int:
        return len(self._queue)

    def _unlink(self, name: str) -> None:
        delete_crop(self.dir, name, "collection")

    def _scan(self) -> None:
        if not self.dir.is_dir():
            return
        found = []
        for p in self.dir.glob("*.jpg"):
            if p.name.startswith("."):
                continue
            found.append(_Queued(p.stem, p.stat().st_mtime))
        found.sort(key=lambda q: (q.created, q.name))
        self._queue = deque(found)
        self.enforce()
