"""What the API serves: ``ApiState`` (the daemon builds one, tests build one from real parts), the contracts of the
parts the daemon hands over (``PageState``, ``ModelLifecycle``), and the ``/status`` document.

The routers (one module per concern, assembled by edge/api/app.py) read this state; they never drive the
inspection loop themselves (reload and trigger go through the callables the daemon hands over).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edge import __version__
from edge.capture.source import safe_uri
from edge.config import Config
from edge.judge.crops import localizer_counts
from edge.runtime.liveness import Heartbeat
from edge.runtime.metrics import Metrics
from edge.state import (
    CameraState,
    EventSink,
    FrameSource,
    LatestFrame,
    LoadedModel,
    ModelSlot,
    RecentEvents,
    ReloadResult,
)

if TYPE_CHECKING:
    from edge.deliver.audit import Audit
    from edge.deliver.station import StationStore
    from edge.learn.feedback import FeedbackStore
    from edge.learn.recipes import Recipe
    from edge.learn.shadow import Shadow


class PageState(Protocol):
    """What routers outside the page need of the operator page's state (edge/api/operator.py ``OperatorState``)."""

    @property
    def feedback(self) -> FeedbackStore: ...

    def invalidate(self) -> None:
        """Forget the cached summary: the next poll shows a change at once."""


class ModelLifecycle(Protocol):
    """The model's life cycle as the ``/model*`` routes drive it (edge/learn/lifecycle.py ``ModelControl``).
    Each action returns the document to answer with, or raises ``ControlError`` (with its HTTP status)."""

    @property
    def shadow(self) -> Shadow: ...

    def doc(self) -> dict[str, Any]: ...
    def resolve(self, name: str) -> Path: ...
    def load_candidate(self, path: Path, origin: str = ..., retrain: dict[str, Any] | None = ...) -> dict[str, Any]: ...
    def drop_candidate(self) -> dict[str, Any]: ...
    def start_retrain(self, target_recall: float | None = ..., cost_ratio: float | None = ...,
                      min_per_class: int | None = ..., recipe: Recipe | None = ...,
                      target_frr: float | None = ...) -> dict[str, Any]: ...
    def suggestion(self) -> dict[str, Any] | None: ...
    def promote(self, who: str | None = ...) -> dict[str, Any]: ...
    def rollback(self, who: str | None = ...) -> dict[str, Any]: ...


@dataclass
class ApiState:
    """Everything the API serves. The daemon builds one; tests build one from real parts."""

    config: Config
    metrics: Metrics
    models: ModelSlot
    capture: FrameSource | None = None
    sink: EventSink | None = None
    events: RecentEvents = field(default_factory=RecentEvents)
    latest: LatestFrame = field(default_factory=LatestFrame)
    reload: Callable[[str | None], ReloadResult] | None = None
    trigger: Callable[[str | None], bool] | None = None
    started: float = field(default_factory=time.time)
    counters: Callable[[], dict[str, Any]] | None = None  # live loop figures (fps, frames) from the daemon
    heartbeat: Heartbeat | None = None  # the inspection loop's pulse: /healthz fails when it stops
    operator: PageState | None = None  # the page's images, rates, feedback (edge/api/operator.py; made by create_app if None)
    model_control: ModelLifecycle | None = None  # candidate in shadow, retrain, promote, rollback (/model*, edge/learn/lifecycle.py)
    station: StationStore | None = None  # issue 26: history, shift and lot counters (edge/deliver/station.py)
    audit: Audit | None = None  # issue 26: who changed what (edge/deliver/audit.py); see edge/api/changes.py

    def audited(self, action: str, what: str, before: Any = None, after: Any = None) -> None:
        """Record a change in the audit trail (log, station records, retained <base>/audit), if there is one."""
        if self.audit is not None:
            self.audit.record(action, what, before, after)

    def threshold(self, model: LoadedModel) -> float:
        return model.threshold(self.config.model.threshold)

    def not_ready_reasons(self) -> list[str]:
        reasons: list[str] = []
        model = self.models.get()
        if model is None:
            reasons.append("model: not loaded")
        elif not model.self_test_passed:
            reasons.append("model: self-test failed: " + "; ".join(model.self_test_failures))
        if self.capture is None:
            reasons.append("camera: not started")
        else:
            state = self.capture.state
            if state != CameraState.OK:
                reasons.append(f"camera: {state} (source {safe_uri(self.config.source.uri)})")
            elif self.capture.frozen:
                reasons.append("camera: picture frozen (identical frames)")
        if self.config.mqtt.enabled:
            if self.sink is None:
                reasons.append("mqtt: not started")
            else:
                if not self.sink.connected:
                    why = self.sink.last_error
                    reasons.append(
                        f"mqtt: not connected to {self.config.mqtt.host}:{self.config.mqtt.port}" + (f" ({why})" if why else "")
                    )
                if (problem := self.sink.not_ready_reason()) is not None:  # e.g. disk full, events only in memory
                    reasons.append(f"mqtt: {problem}")
        return reasons


def config_summary(cfg: Config) -> dict[str, Any]:
    """The config without secrets: SecretStr fields are masked, and so are credentials in a stream URL."""
    summary = cfg.summary()
    summary["source"]["uri"] = safe_uri(cfg.source.uri)
    return summary


def model_info(state: ApiState, model: LoadedModel | None) -> dict[str, Any]:
    """The live model as ``/status`` shows it."""
    if model is None:
        return {"loaded": False}
    clf = model.classifier
    meta = clf.metadata
    return {
        "loaded": True, "model_id": clf.model_id, "path": str(clf.path), "runtime": clf.runtime_name,
        "delegate": clf.delegate, "threshold": state.threshold(model), "labels": list(meta.labels),
        "positive_class": meta.positive_class, "format": getattr(meta, "format", None),
        "crop": meta.crop.model_dump(mode="json"), "self_test_passed": model.self_test_passed,
        "self_test_failures": list(model.self_test_failures), "loaded_at": model.loaded_at,
    }


def status_of(state: ApiState) -> dict[str, Any]:
    """The ``/status`` document: config without secrets, counters, camera, MQTT, model."""
    m = state.metrics
    value = m.value
    model = state.models.get()
    camera: dict[str, Any] = {"state": "not started"}
    if state.capture is not None:
        camera = {"state": state.capture.state, "frozen": bool(state.capture.frozen)}
        try:
            camera["stats"] = state.capture.stats()
        except Exception as e:  # stats are informative only; /status must not fail because of them
            camera["stats_error"] = str(e)
    mqtt: dict[str, Any] = {"enabled": state.config.mqtt.enabled}
    if state.sink is not None:
        mqtt.update(state.sink.status())
    labels = model.classifier.metadata.labels if model is not None else []
    counters = {
        "frames_processed": value(m.frames_processed),
        "frames_captured": value(m.frames_captured),
        "no_box": value(m.no_box),
        "no_box_parts": value(m.no_box_parts),
        "localizer": localizer_counts(m),  # frames per localiser outcome/reason (edge/judge/crops.py)
        "decisions": {lbl: value(m.decisions, label=lbl) for lbl in labels},
        "defects": value(m.defects),
        "events_published": value(m.events_published),
        "events_failed": value(m.events_failed),
        "events_dropped": value(m.events_dropped),
    }
    reasons = state.not_ready_reasons()
    out: dict[str, Any] = {
        "version": __version__,
        "uptime_s": round(time.time() - state.started, 3),
        "ready": not reasons,
        "not_ready_reasons": reasons,
        "line": state.config.line,
        "camera_id": state.config.camera,
        "model": model_info(state, model),
        "camera": camera,
        "mqtt": mqtt,
        "counters": counters,
        "config": config_summary(state.config),
    }
    if state.counters is not None:
        out["loop"] = state.counters()
    return out
