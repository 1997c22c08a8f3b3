"""The daemon's shared state, as types: what the loop writes and the API, the sinks and the tests read.

- ``LoadedModel`` / ``ModelSlot``: the model in use, swapped atomically on reload.
- ``effective_threshold`` (which threshold is in force) and ``verdict`` (defect iff score >= threshold): the
  threshold rule, used by the loop, the API, ``boxinspect predict`` and the classifier.
- ``RecentEvents`` (the /events ring) and ``LatestFrame`` (what /snapshot.jpg draws).
- ``ReloadResult``: the outcome of a reload (SIGHUP, POST /reload).
- ``CameraState``: ok / stalled / disconnected / ended. A ``str`` enum, so JSON, metric labels and log lines
  show the plain value.
- ``Decider``: what the loop needs from a decider (``ContinuousDecider``, ``TriggeredDecider`` and
  ``MultiViewDecider`` are each one).

Nothing here imports the HTTP, MQTT or camera modules at run time, so any of them can import this one.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import numpy as np

    from edge.capture.frames import Frame
    from edge.judge.classifier import Classifier
    from edge.judge.decision import Decision
    from edge.judge.records import FrameRecord

EVENTS_MAX = 1000


class CameraState(str, Enum):
    """The camera's health (edge/capture/frames.py). ``str(state)`` and JSON give the plain value, e.g. ``ok``."""

    OK = "ok"
    STALLED = "stalled"  # open, but no new frame for source.stall_timeout_s
    DISCONNECTED = "disconnected"  # open/read failed, retrying with backoff
    ENDED = "ended"  # a file or folder finished (not looping)

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


def effective_threshold(model_threshold: float, override: float | None) -> float:
    """The decision threshold in force: the override (``model.threshold``, ``--threshold``) if set, else the
    model's own (from its sidecar)."""
    return float(model_threshold if override is None else override)


def verdict(score: float, threshold: float, labels: tuple[str, str]) -> tuple[str, bool]:
    """The one decision rule: defect iff ``score >= threshold``. -> (label, is_defect); labels = (negative, positive)."""
    is_defect = bool(score >= threshold)
    return (labels[1] if is_defect else labels[0]), is_defect


@dataclass(frozen=True)
class LoadedModel:
    """One loaded model and the outcome of its self-test. Immutable: a reload makes a new one."""

    classifier: Classifier
    self_test_failures: tuple[str, ...] = ()
    loaded_at: float = field(default_factory=time.time)

    @property
    def self_test_passed(self) -> bool:
        return not self.self_test_failures

    @property
    def labels(self) -> tuple[str, str]:
        """(negative, positive) class names, the order the deciders take."""
        meta = self.classifier.metadata
        return meta.negative_class, meta.positive_class

    def threshold(self, override: float | None = None) -> float:
        return effective_threshold(self.classifier.threshold, override)


class ModelSlot:
    """The model in use. ``get()`` and ``swap()`` are atomic, so a reload never shows a half-swapped model.

    The inspection loop and /predict may share one Classifier: it serialises its own invokes.
    """

    def __init__(self, model: LoadedModel | None = None) -> None:
        self._lock = threading.Lock()
        self._model = model
        self._version = 0 if model is None else 1

    def get(self) -> LoadedModel | None:
        with self._lock:
            return self._model

    def get_versioned(self) -> tuple[LoadedModel | None, int]:
        with self._lock:
            return self._model, self._version

    def swap(self, model: LoadedModel) -> LoadedModel | None:
        with self._lock:
            old, self._model = self._model, model
            self._version += 1
            return old


class RecentEvents:
    """A bounded ring buffer of the latest decision events (newest last inside, newest first out)."""

    def __init__(self, maxlen: int = EVENTS_MAX) -> None:
        self._lock = threading.Lock()
        self._items: collections.deque[dict[str, Any]] = collections.deque(maxlen=maxlen)

    @property
    def maxlen(self) -> int:
        return self._items.maxlen or 0

    def add(self, event: dict[str, Any]) -> None:
        with self._lock:
            self._items.append(event)

    def latest(self, limit: int) -> list[dict[str, Any]]:
        with self._lock:
            n = min(limit, len(self._items))
            return [self._items[-1 - i] for i in range(n)]

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class LastResult:
    """The last box decided, for the operator page's result tile: the verdict drawn on the frame that decided it
    (the decision's representative record, edge/judge/records.py), not on whatever the camera shows now."""

    event_id: str
    label: str
    score: float | None
    is_defect: bool
    threshold: float
    frame: np.ndarray | None  # the representative frame (a reference)
    frame_index: int | None
    view: str | None
    box: tuple[int, int, int, int] | None  # the located box in that frame (x0, y0, x1, y1 exclusive)
    decided_at: str
    captured_at: float | None = None  # when that frame was captured


class LatestFrame:
    """The newest frame and the last verdict, kept by reference; /snapshot.jpg draws them on demand."""

    def __init__(self) -> None:
        self.frame: Frame | None = None
        self.verdict: tuple[str, float, bool] | None = None  # label, score, is_defect
        self.box: tuple[int, int, int, int] | None = None  # the located box of ``frame`` (x0, y0, x1, y1 exclusive)
        self.inspecting = False  # a box is in the ROI (or a part is being collected): not decided yet
        self.result: LastResult | None = None  # the last box decided, on its own frame

    def set_inspecting(self, inspecting: bool) -> None:
        self.inspecting = bool(inspecting)

    def set_result(self, result: LastResult) -> None:
        self.result = result

    def set_frame(self, frame: Frame) -> None:
        self.frame = frame
        self.box = None  # until the localiser finds one in this frame

    def set_box(self, box: tuple[int, int, int, int]) -> None:
        self.box = box

    def set_verdict(self, label: str, score: float, is_defect: bool) -> None:
        self.verdict = (label, score, is_defect)


class ReloadResult(BaseModel):
    """The outcome of a reload; also the body of the POST /reload response."""

    model_config = ConfigDict(protected_namespaces=())  # a field named model_id: no warning on pydantic < 2.10

    ok: bool
    path: str
    model_id: str | None = None
    reason: str | None = None
    self_test_failures: list[str] = Field(default_factory=list)


class Decider(Protocol):
    """Frames -> one decision per box or part. Per frame the loop builds a ``FrameRecord`` (edge/judge/records.py: the
    frame, its ROI), asks ``needs_score(record)``, and if so locates the box and scores it into the record
    (``no_box`` when the localiser found none), then calls ``update(record)`` with that same record. A Decision
    carries the records it was made on (``Decision.evidence``)."""

    threshold: float
    model_id: str
    labels: tuple[str, str]
    no_box_parts: int  # parts closed without a decision because no frame showed a box (triggered mode)

    @property
    def box_in_progress(self) -> bool:
        """A box or part is being collected: its frames are not yet decided."""
        ...

    def needs_score(self, record: FrameRecord) -> bool: ...

    def update(self, record: FrameRecord) -> Decision | None: ...

    def flush(self) -> Decision | None:
        """Decide what is still open (end of stream, shutdown)."""
        ...

    def trigger(self, part_id: str | None = None, at: float | None = None) -> bool:
        """Announce a part (triggered mode). False if refused."""
        ...

    def cancel(self, part_id: str | None) -> bool:
        """Forget a part that already got a timeout decision (triggered mode). False if there was none."""
        ...

    def stats(self) -> dict[str, Any]: ...

    def background(self) -> np.ndarray | None:
        """The empty-belt reference the localiser may difference against (None: not available)."""
        ...

    def box_outline(self) -> tuple[int, int, int, int] | None:
        """Where the box being collected is in the ROI by presence (x0, y0, x1, y1; None: not known), for the
        operator page's "inspecting..." outline when the model does not locate the box itself."""
        ...


class FrameSource(Protocol):
    """Where the loop gets frames (edge/capture/frames.py ``Capture``; tests replay frames)."""

    kind: str  # usb, rtsp, file, folder (or what a test source calls itself)
    truncated: str | None  # a file that ended early: "truncated at frame N of M"

    @property
    def state(self) -> CameraState: ...

    @property
    def finished(self) -> bool:
        """A finite source ended and every frame was handed out."""
        ...

    @property
    def delivered_any(self) -> bool:
        """At least one frame came from the source."""
        ...

    frozen: bool

    def start(self) -> Any: ...

    def stop(self, timeout: float | None = None) -> None: ...

    def read(self, timeout: float = 1.0) -> Frame | None: ...

    def stats(self) -> dict[str, Any]: ...


class EventSink(Protocol):
    """Where decisions go (edge/deliver/mqtt_sink.py ``MqttSink``; tests record them). ``publish_defect`` must keep
    the event durably or raise: the daemon never drops a defect silently."""

    @property
    def connected(self) -> bool: ...

    @property
    def outbox_depth(self) -> int: ...

    last_error: str | None

    def start(self) -> None: ...

    def stop(self, timeout: float = 10.0) -> None: ...

    def publish_defect(self, event: dict[str, Any]) -> int | None: ...

    def publish_result(self, event: dict[str, Any]) -> bool: ...

    def publish_stats(self, stats: dict[str, Any]) -> bool: ...

    def publish_model(self, info: dict[str, Any]) -> bool:
        """The model in use, retained (sent now if connected and again on every connect)."""
        ...

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        """Anything else (reject commands, alarms, discovery): sent only while connected, never stored."""
        ...

    def subscribe(self, topic: str, handler: Callable[..., None], what: str = "messages", qos: int = 1) -> None: ...

    def wait_drained(self, timeout: float) -> bool: ...

    def status(self) -> dict[str, Any]: ...

    def not_ready_reason(self) -> str | None: ...
