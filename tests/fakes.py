"""Stand-ins for the daemon's parts, for in-process loop tests (``Daemon(cfg, model, capture=..., sink=...)``).

Each replaces a part the test is NOT about: the frames are real (the generated conveyor video), the
decider, presence detection, evidence store and the loop are the real ones.

- ``FakeClassifier``: scores from a function instead of a .tflite (the model's output is what the test sets).
- ``ReplayCapture``: hands out the given images as frames, in order, then ends (or waits, ``end=False``).
- ``RecordingSink``: keeps what the daemon publishes; can be told to fail.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np

from edge.capture import Frame
from edge.outbox import OutboxError
from edge.state import CameraState, LoadedModel


class FakeClassifier:
    """What the daemon uses of ``edge.classifier.Classifier``, with ``score`` from ``score_fn(roi)``."""

    def __init__(
        self,
        score_fn: Callable[[np.ndarray], float],
        threshold: float = 0.5,
        model_id: str = "fake@000000000001",
        labels: tuple[str, str] = ("ok", "defective"),
    ) -> None:
        self.score_fn = score_fn
        self.threshold = threshold
        self.model_id = model_id
        self.path = Path(f"/fake/{model_id}.tflite")
        self.runtime_name = "fake"
        self.delegate = "none"
        self.metadata = SimpleNamespace(
            labels=list(labels), negative_class=labels[0], positive_class=labels[1], format="fake"
        )

    def score(self, bgr: np.ndarray) -> float:
        return float(self.score_fn(bgr))

    def self_test(self) -> list[str]:
        return []


def fake_model(score_fn: Callable[[np.ndarray], float], **kw: Any) -> LoadedModel:
    return LoadedModel(FakeClassifier(score_fn, **kw))  # type: ignore[arg-type]


def video_frames(path: Path, limit: int | None = None) -> Iterator[np.ndarray]:
    """The frames of a video file, read lazily (a few hundred 640x360 frames would be hundreds of MB)."""
    cap = cv2.VideoCapture(str(path))
    try:
        n = 0
        while limit is None or n < limit:
            ok, img = cap.read()
            if not ok:
                return
            yield img
            n += 1
    finally:
        cap.release()


class ReplayCapture:
    """A frame source that replays ``images`` as fast as the loop reads them. With ``end=True`` it then
    ends like a video file; with ``end=False`` it keeps the camera "ok" and delivers nothing more.
    ``current`` is the index of the frame read last (for score functions that follow ground truth)."""

    def __init__(self, images: Iterable[np.ndarray], end: bool = True) -> None:
        self._images = iter(images)
        self._end = end
        self._lock = threading.Lock()
        self.state = CameraState.DISCONNECTED
        self.finished = False
        self.frozen = False
        self.current = -1
        self.started = self.stopped = False

    def start(self) -> ReplayCapture:
        self.started = True
        self.state = CameraState.OK
        return self

    def stop(self, timeout: float | None = None) -> None:
        self.stopped = True

    def read(self, timeout: float = 1.0) -> Frame | None:
        with self._lock:
            img = next(self._images, None)
            if img is None:
                if self._end:
                    self.state, self.finished = CameraState.ENDED, True
                else:
                    time.sleep(min(timeout, 0.05))
                return None
            self.current += 1
            return Frame(img, self.current, time.time())

    def stats(self) -> dict[str, Any]:
        return {"kind": "replay", "frames": self.current + 1, "state": str(self.state)}


class RecordingSink:
    """Keeps every published defect, result and stats document. ``fail_defects`` makes the next N
    ``publish_defect`` calls raise OutboxError (the outbox could not store the event)."""

    def __init__(self, fail_defects: int = 0, fail_results: bool = False) -> None:
        self.defects: list[dict[str, Any]] = []
        self.results: list[dict[str, Any]] = []
        self.stats: list[dict[str, Any]] = []
        self.subscriptions: dict[str, Callable[..., None]] = {}
        self.fail_defects = fail_defects
        self.fail_results = fail_results
        self.last_error: str | None = None
        self.started = self.stopped = False
        self.connected = True
        self.outbox_depth = 0

    def start(self) -> None:
        self.started = True

    def stop(self, timeout: float = 10.0) -> None:
        self.stopped = True

    def publish_defect(self, event: dict[str, Any]) -> int | None:
        if self.fail_defects > 0:
            self.fail_defects -= 1
            raise OutboxError("database or disk is full")
        self.defects.append(dict(event))
        return len(self.defects)

    def publish_result(self, event: dict[str, Any]) -> bool:
        if self.fail_results:
            raise RuntimeError("result topic broken")
        self.results.append(dict(event))
        return True

    def publish_stats(self, stats: dict[str, Any]) -> bool:
        self.stats.append(dict(stats))
        return True

    def subscribe(self, topic: str, handler: Callable[..., None], what: str = "messages", qos: int = 1) -> None:
        self.subscriptions[topic] = handler

    def wait_drained(self, timeout: float) -> bool:
        return True

    def status(self) -> dict[str, Any]:
        return {"connected": True, "defects": len(self.defects)}

    def not_ready_reason(self) -> str | None:
        return None
