"""The inspection daemon: camera -> ROI -> model -> one decision per box -> MQTT, evidence, metrics, API.

Read it top to bottom, it follows the data:

1. ``main()``: config (exit 2 on a bad key), logging, the model (exit 3 with a one-line reason if it
   cannot be loaded), its self-test (a failure makes the daemon not ready; it keeps running so /readyz
   can say why), then ``Daemon.from_config(...)`` builds the parts (MQTT sink with its outbox on disk,
   evidence store, camera) and ``run()`` runs them (exit 0 after a clean stop, 1 if start-up or the loop
   failed). ``Daemon`` itself receives its parts, so tests hand in others (tests/test_loop.py).
2. ``Daemon.run()`` starts the parts in order: MQTT sink, camera, the trigger subscription on the sink's
   connection (triggered mode), the HTTP API; then runs the loop. (The decider is built with the daemon,
   from the model's labels and threshold, unless one is given.)
3. ``Daemon._loop()``: one frame at a time: ``_process(frame)`` crops the ROI, scores it when the decider
   asks for a score, feeds the decider; a finished box goes to ``_on_decision()``: evidence, MQTT
   (defects through the outbox, results optionally), metrics, the recent-events ring, the log.
4. ``Daemon._shutdown()``: stop the camera, flush the decider (a box still in view is decided), drain the
   outbox within ``shutdown_timeout_s``, publish ``offline``, stop the API.

Signals only set flags (SIGTERM/SIGINT: stop, SIGHUP: reload); the main thread acts on them. A reload
loads and self-tests the new model in a worker thread and swaps it in atomically; the old model stays if
anything fails.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge import __version__
from edge.api.app import create_app
from edge.api.page_state import OperatorState
from edge.api.server import ApiServer, raise_fd_limit, start_api
from edge.api.state import ApiState
from edge.capture.frames import Capture, Frame, MultiCapture
from edge.capture.roi import crop, roi_box
from edge.capture.source import TriggerStamp, safe_uri
from edge.config import Config, ConfigError, RoiConfig, load_config
from edge.deliver.audit import Audit
from edge.deliver.evidence import EvidenceStore
from edge.deliver.mqtt import TriggerListener
from edge.deliver.mqtt_sink import MqttSink
from edge.deliver.plant import Plant
from edge.deliver.publisher import OrderedWorker
from edge.deliver.station import StationStore
from edge.judge.beltmodel import BeltLearners
from edge.judge.classifier import Classifier, ModelError
from edge.judge.crops import count_located, learned_box
from edge.judge.decision import ContinuousDecider, Decision, MultiViewDecider, TriggeredDecider
from edge.judge.heatmap import attach, heat_of
from edge.judge.localize import CropSpec, Located, locate
from edge.judge.model_package import PackageError, resolve_model_name
from edge.judge.records import FrameRecord
from edge.judge.signing import check_signature
from edge.learn.feedback_mqtt import publish_answers
from edge.learn.lifecycle import ModelControl, active_model_path
from edge.learn.shadow import Shadow
from edge.runtime import ratelimit
from edge.runtime.hostcheck import export_disk, proc_warning
from edge.runtime.liveness import HangExit, Heartbeat, export_liveness, sd_notify
from edge.runtime.logs import capture_native_stderr, early_format, fatal, setup_logging
from edge.runtime.metrics import Metrics
from edge.runtime.nativelog import quiet_native_libraries
from edge.runtime.ratelimit import RateLimit
from edge.runtime.testhooks import frozen_loop, slow_model_delay
from edge.runtime.trace import PipelineTrace
from edge.state import (
    CameraState,
    Decider,
    EventSink,
    FrameSource,
    LastResult,
    LatestFrame,
    LoadedModel,
    ModelSlot,
    RecentEvents,
    ReloadResult,
)

if TYPE_CHECKING:
    import numpy as np

BELT_PENDING_MAX = 2  # empty-belt frames queued for learning (a few a second at camera pace); more wait (edge/judge/beltmodel.py)
log = logging.getLogger(__name__)
trigger_log = logging.getLogger("edge.triggers")  # client-caused lines: rate-limited (edge/runtime/ratelimit.py)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_MODEL = 0, 1, 2, 3
READ_TIMEOUT_S = 0.5  # how long the loop waits for a frame before it looks at its flags again
STATUS_INTERVAL_S = 60.0  # one status line in the log at least this often (or every stats interval if shorter)
FRAME_TIMES_KEPT = 256  # capture times of recent frames, for the end-to-end latency of a decision
FORCED_EXIT_GRACE_S = 5.0  # beyond shutdown_timeout_s, a hung shutdown is cut short
GIL_SWITCH_INTERVAL_S = 0.001


@dataclass
class _Publish:
    """A decision on its way from the loop (or the deadline watchdog) to the publisher thread."""

    decision: Decision  # with its evidence: the records it was made on (edge/judge/records.py)
    exit_at: float | None  # continuous mode: capture time of the box's last frame (the deadline's start)
    last_captured: float | None  # capture time of the box's last frame (end-to-end latency metric)
    read_at: float | None = None  # when the loop read the frame that produced the decision (trace)
    frame: int | None = None  # that frame's index (trace)
    captured_at: float | None = None  # when the capture thread had decoded it (trace)
    handed_at: float | None = None  # when the loop handed the decision over (trace)


# --------------------------------------------------------------------------------------------------
# 1. Start-up
# --------------------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    """``boxinspect run --config FILE [--max-frames N]``. Returns the process exit code."""
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        setup_logging(None, early_format(args.config))
        fatal(str(e))  # one line (one JSON record with logging.format json from the environment)
        return EXIT_CONFIG
    setup_logging(getattr(args, "log_level", None) or cfg.logging.level, cfg.logging.format)
    capture_native_stderr()  # JSON mode: what native code prints on stderr becomes JSON records too
    # A decision hops threads on its way out (loop -> publisher -> MQTT sender -> paho's network thread and back
    # with the PUBACK); each hop waits for the GIL, which a busy thread gives up only every switch interval
    # (5 ms by default). 1 ms keeps the hops short; the loop's heavy work (OpenCV, the interpreter) runs
    # without the GIL anyway (docs/BENCHMARKS.md, "bench pipeline").
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    ratelimit.install()  # every line a network client can cause is rate-limited
    log.info("native logs: %s", quiet_native_libraries(cfg.logging.opencv))  # issue 24: a corrupt stream cannot flood
    soft, hard = raise_fd_limit()  # idle API sockets must not leave the camera without descriptors
    log.debug("open-file limit %d (hard %d)", soft, hard)
    early_stop = threading.Event()  # a SIGTERM while the model loads still ends in a clean exit
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: early_stop.set())

    try:
        model = load_model(cfg, active_model_path(cfg))  # model.path, or the package promoted since (edge/learn/shadow.py)
    except ModelError as e:
        fatal(f"model: {e}")
        return EXIT_MODEL
    proc_hidden = proc_warning(model.classifier.delegate)
    if proc_hidden:
        log.warning("%s", proc_hidden)
    if not model.self_test_passed:
        log.error(
            "model self-test failed (%s); running, but /readyz reports not ready until a good model is loaded",
            "; ".join(model.self_test_failures),
        )
    try:
        daemon = Daemon.from_config(cfg, model, max_frames=getattr(args, "max_frames", None))
        if getattr(args, "trace", None):
            daemon.set_trace(PipelineTrace(args.trace))
    except Exception as e:  # bad TLS files, an outbox that cannot be opened, ...: one line, exit 1
        log.error("start-up failed: %s", " ".join(str(e).split()) or type(e).__name__)
        return EXIT_FAILED
    if early_stop.is_set():
        daemon.stop_requested.set()
    if cfg.liveness_exit_s:  # a hung loop ends the process, so every runtime restarts it (edge/runtime/liveness.py)
        HangExit(daemon.heartbeat, max(cfg.liveness_exit_s, cfg.liveness_timeout_s)).start()
    return daemon.run()


def load_model(cfg: Config, path: str | Path) -> LoadedModel:
    """Load the .tflite at ``path`` and self-test it (if ``model.self_test``). ModelError if it cannot load."""
    m = cfg.model
    clf = Classifier.load(path, num_threads=m.num_threads, runtime=m.runtime, verify_hash=m.verify_hash or bool(m.trusted_keys))
    if m.trusted_keys:  # issue 24: only signed packages (edge/judge/signing.py)
        check_signature(path, clf.metadata.package_sha256, m.trusted_keys)
    failures: list[str] = []
    if m.self_test:
        try:
            failures = list(clf.self_test())
        except Exception as e:  # a self-test that crashes is a failed self-test, not a crashed daemon
            failures = [f"self-test crashed: {type(e).__name__}: {e}"]
    _note_view_banks(cfg, clf)
    return LoadedModel(clf, tuple(failures))


def _note_view_banks(cfg: Config, clf: Classifier) -> None:
    """An anomaly package with one bank per view scores each source by the bank of its ``view`` name; a source of
    another name (or the single ``source``) is scored by the pooled bank: said once, at load (docs/RESULTS.md)."""
    banks = clf.anomaly.views if clf.anomaly is not None else {}
    if not banks:
        return
    names: list[str] = [v.view for v in cfg.sources]
    other = [n for n in names if n not in banks]
    if other or not names:
        log.warning("%s has a bank per view (%s); %s scored by its pooled bank (name the sources' view as in "
                    "training to use theirs)", clf.model_id, ", ".join(sorted(banks)),
                    f"view(s) {', '.join(other)}" if names else "the single source is")



@dataclass
class _Timers:
    """When the loop next computes the frame rate, publishes its stats and logs its status."""

    stats_every: float
    status_every: float
    next_stats: float
    next_status: float
    fps_t0: float
    fps_n0: int = 0

    @classmethod
    def start(cls, stats_every: float) -> _Timers:
        now = time.monotonic()
        status_every = min(STATUS_INTERVAL_S, stats_every)
        return cls(stats_every, status_every, now + stats_every, now + status_every, now)

class Daemon:
    """One camera, one model, one decision per box. ``run()`` blocks until stopped and returns the exit code.

    The daemon receives its parts; ``Daemon.from_config`` builds the real ones. Tests hand in others (a
    capture that replays frames, a sink that records events, a model loader). A part left out is absent:
    without ``sink`` nothing is published, without ``capture`` ``run()`` fails at start-up.

    - ``capture``: where frames come from (edge/capture/frames.py ``Capture``); started and stopped by ``run()``.
    - ``sink``: where events go (edge/deliver/mqtt_sink.py ``MqttSink``); started and stopped by ``run()``.
    - ``evidence``: where the frames of a decision are kept (edge/deliver/evidence.py).
    - ``decider``: frames -> decisions (edge/judge/decision.py); by default built from ``decision.*`` and the model.
    - ``loader``: path -> LoadedModel, for reloads (default: ``load_model`` with ``model.*``).
    - ``clock``: wall-clock time (``time.time``) for uptime, stats and the end-to-end latency.
    """

    def __init__(
        self,
        cfg: Config,
        model: LoadedModel,
        *,
        capture: FrameSource | None = None,
        sink: EventSink | None = None,
        evidence: EvidenceStore | None = None,
        decider: Decider | None = None,
        metrics: Metrics | None = None,
        loader: Callable[[str | Path], LoadedModel] | None = None,
        clock: Callable[[], float] = time.time,
        max_frames: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.max_frames = max_frames
        self.metrics = metrics or Metrics()
        self.models = ModelSlot(model)
        self.events = RecentEvents()
        self.latest = LatestFrame()
        self.clock = clock
        self.loader = loader or functools.partial(load_model, cfg)
        self.started = clock()
        self.heartbeat = Heartbeat(cfg.liveness_timeout_s)  # /healthz and systemd's watchdog watch the loop
        export_liveness(self.heartbeat, self.metrics.registry)  # boxinspect_loop_alive, boxinspect_loop_age_seconds
        export_disk(cfg.mqtt.outbox_path.parent, self.metrics.registry)  # free space where the outbox grows
        # Flags set by signal handlers and the API; only the main loop acts on them.
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.stop_reason = ""
        self._reload_lock = threading.Lock()
        self._signals_seen = 0
        self.sink = sink
        self.evidence = evidence
        self.capture = capture
        self.api: ApiServer | None = None  # the HTTP API (edge/api/server.py), started by run()
        self.api_url: str | None = None
        self.state: ApiState | None = None
        self.operator: OperatorState | None = None  # the operator page's images, rates and feedback
        self.station: StationStore | None = None  # issue 26: history, shift/lot counters, audit (made by run())
        self.audit: Audit | None = None
        self._init_loop_bookkeeping(cfg)
        # the capture that decodes fewer frames while the belt is empty, and the decider that says when it is;
        # the loop tells the one what the other says after each frame (set by run())
        self._idle_rate: tuple[Capture, ContinuousDecider] | None = None
        # Decisions are published (evidence JPEGs, outbox fsync, MQTT) on this thread, in order, so the loop never
        # waits on the disk or the network; started by run(), else decisions are published on the caller's thread.
        self._publisher = OrderedWorker(self._publish_job, name="publisher")
        self.trace: PipelineTrace | None = None  # `boxinspect run --trace FILE` (edge/runtime/trace.py)
        self._read_at = 0.0  # when the loop read the current frame
        self._scored = False  # the current frame was scored
        # a candidate model beside the live one, promote and roll back (edge/learn/shadow.py)
        self.shadow = Shadow(cfg, self.metrics)
        self.model_control = ModelControl(cfg, self.metrics, self.models, self.shadow, self.loader, self.swap_in)
        self._publish_model_info(model)
        self.decider: Decider = decider or self._make_decider()
        self._model_version = self.models.get_versioned()[1]
        # Deadlines, fail-safe timeouts, reject outputs, OPC UA, Home Assistant, SPC (edge/deliver/plant.py). Timeout
        # decisions come from its watchdog thread: _on_decision runs under this lock.
        self._decision_lock = threading.RLock()
        self.plant = Plant(
            cfg, self.metrics, emit=self._on_decision, context=self._decision_context,
            cancel=self._cancel_part, status=self._plant_status, version=__version__,
        )

    def _init_loop_bookkeeping(self, cfg: Config) -> None:
        """What the loop counts and remembers between frames (main thread only)."""
        self._model_version = -1
        self._frames = 0
        self._decisions = 0
        self._defects = 0
        self._fps = 0.0
        self._frame_times: deque[tuple[int, float]] = deque(maxlen=FRAME_TIMES_KEPT)  # (index, captured_at)
        self._roi_error: str | None = None
        self._open_part: str | None = None  # continuous mode: part id of the box passage in view
        self._frame_errors = 0
        self._frame_error_log = RateLimit(60.0)
        self._no_box = 0  # frames with no box found where a score was wanted
        self._no_box_parts = 0  # parts the decider closed for lack of a box, as counted in the metric so far
        self._view_rois = {v.view: v.roi for v in cfg.sources}  # several views (cfg.sources): the ROI per view
        self._crop_fallback_logged = False
        self.belts = BeltLearners()  # each view's empty belt, learned from frames with no box (edge/judge/beltmodel.py)
        # learning it (features ~2 ms, a refit ~0.1 s) runs on its own thread, not in the frame loop
        self._belt_worker = OrderedWorker(lambda job: self.belts.learn(*job), name="belt", max_pending=BELT_PENDING_MAX)

    @classmethod
    def from_config(cls, cfg: Config, model: LoadedModel, *, max_frames: int | None = None) -> Daemon:
        """The real parts for ``cfg``: the MQTT sink (with its outbox), the evidence store, the camera."""
        metrics = Metrics()
        # With mqtt.enabled false the sink still keeps defect events in the outbox (nothing is lost).
        client_id = cfg.mqtt.client_id or f"boxinspect-{cfg.line}-{cfg.camera}"
        sink = MqttSink(cfg.mqtt, cfg.topic_base, metrics, client_id)
        sink.enable_replay(cfg.api.token.get_secret_value() if cfg.api.token is not None else None)
        try:
            evidence = EvidenceStore(cfg.evidence) if cfg.evidence.enabled else None
            capture: FrameSource = (
                MultiCapture([(v.view, v.source) for v in cfg.sources], metrics) if cfg.sources
                else Capture(cfg.source, metrics)
            )
        except Exception:
            sink.stop(0)
            raise
        return cls(cfg, model, capture=capture, sink=sink, evidence=evidence, metrics=metrics, max_frames=max_frames)

    def set_trace(self, trace: PipelineTrace) -> None:
        """Record frame and decision timestamps (``boxinspect run --trace``), PUBACKs included."""
        self.trace = trace
        if isinstance(self.sink, MqttSink):
            self.sink.on_acked = trace.acked

    # ----------------------------------------------------------------------------------------------
    # 2. Run: start the parts, loop, shut down
    # ----------------------------------------------------------------------------------------------

    def run(self) -> int:
        cfg = self.cfg
        self._install_signal_handlers()
        try:
            self._start_parts()
        except Exception as e:
            log.error("start-up failed: %s", " ".join(str(e).split()) or type(e).__name__)
            self._shutdown()
            return EXIT_FAILED
        model = self.models.get()
        sd_notify(f"READY=1\nSTATUS=inspecting line {cfg.line} camera {cfg.camera}")
        log.info(
            "running: line=%s camera=%s source=%s model=%s mode=%s mqtt=%s",
            cfg.line, cfg.camera,
            ", ".join(f"{v.view}={safe_uri(v.source.uri)}" for v in cfg.sources) or safe_uri(cfg.source.uri),
            model.classifier.model_id if model else None,
            cfg.decision.mode, f"{cfg.mqtt.host}:{cfg.mqtt.port}" if cfg.mqtt.enabled else "disabled",
        )
        try:
            self.stop_reason = self._loop()
        except Exception:
            log.exception("inspection loop failed")
            self.stop_reason = "error"
        failed = self.stop_reason.startswith("error")
        (log.error if failed else log.info)("stopping (%s)", self.stop_reason)
        self.heartbeat.stopped()
        sd_notify(f"STOPPING=1\nSTATUS=stopping ({self.stop_reason})")
        self._shutdown()  # events left in the outbox are delivered on the next start: still a clean exit
        if self.trace is not None:
            try:
                self.trace.dump()
            except OSError as e:
                log.error("trace not written: %s", e)
        return EXIT_FAILED if failed else EXIT_OK

    def _start_parts(self) -> None:
        cfg = self.cfg
        if self.capture is None:
            raise RuntimeError("no frame source (capture) was given to the daemon")
        self._publisher.start()
        self._belt_worker.start()
        if self.sink is not None:
            self.sink.start()  # the model doc was handed to it in __init__: retained from the first connect
        self.plant.start(self.sink)
        # the idle rate (source.idle_fps): the loop tells the camera after each frame whether the belt is empty
        if (isinstance(self.capture, Capture) and isinstance(self.decider, ContinuousDecider)
                and cfg.decision.presence.method == "foreground" and self.capture.enable_idle_rate()):
            self._idle_rate = (self.capture, self.decider)
        self.capture.start()
        if cfg.decision.mode == "triggered" and cfg.mqtt.enabled and self.sink is not None:
            topic = cfg.decision.trigger_topic or f"{cfg.topic_base}/trigger"
            self.sink.subscribe(topic, TriggerListener(topic, self.trigger, self.metrics), what="triggers")
        if cfg.api.enabled and cfg.operator.enabled:
            self.operator = OperatorState(cfg, self.metrics)
            publish_answers(cfg, self.operator.feedback, self.sink if isinstance(self.sink, MqttSink) else None)
        self.station = StationStore(cfg) if cfg.station.enabled else None  # issue 26 (edge/deliver/station.py)
        self.audit = Audit(self.station, self.sink, f"{cfg.topic_base}/audit")
        self.state = ApiState(
            config=cfg,
            metrics=self.metrics,
            models=self.models,
            capture=self.capture,
            sink=self.sink,
            events=self.events,
            latest=self.latest,
            reload=self.reload,
            trigger=self.trigger if cfg.decision.mode == "triggered" else None,
            started=self.started,
            counters=self.loop_counters,
            heartbeat=self.heartbeat,
            operator=self.operator,
            model_control=self.model_control,
            station=self.station,
            audit=self.audit,
        )
        if cfg.api.enabled:
            self.api = start_api(create_app(self.state), cfg.api)
            self.api_url = self.api.url

    def _make_decider(self) -> Decider:
        model = self.models.get()
        assert model is not None
        args = (self.cfg.decision, model.labels, self._threshold(model), model.classifier.model_id)
        if self.cfg.sources:  # several views of each part: one decider per view, fused per trigger
            return MultiViewDecider(self.cfg.decision, [v.view for v in self.cfg.sources], *args[1:])
        return TriggeredDecider(*args) if self.cfg.decision.mode == "triggered" else ContinuousDecider(*args)

    # ----------------------------------------------------------------------------------------------
    # 3. The loop: frame -> ROI -> score -> decider -> decision
    # ----------------------------------------------------------------------------------------------

    def _loop(self) -> str:
        capture = self.capture
        assert capture is not None
        timers = _Timers.start(self.cfg.mqtt.stats_interval_s)
        loop_started = time.monotonic()
        while not self.stop_requested.is_set():
            frozen_loop()  # test-only hang hook (edge/runtime/testhooks.py); a no-op unless its variable is set
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                threading.Thread(target=self.reload, name="reload", daemon=True).start()
            self._follow_model_swap()

            self.heartbeat.beat("waiting for a frame", camera_waiting=capture.state != CameraState.OK)
            frame = capture.read(timeout=READ_TIMEOUT_S)
            if frame is not None:
                self._handle_frame(frame)
            self._periodic(timers)
            self.plant.tick(frame_seen=frame is not None)  # deadlines of open passages move only with frames
            end = self._end_reason(capture, frame, loop_started)
            if end is not None:
                return end
        return "signal"

    def _handle_frame(self, frame: Frame) -> None:
        self._read_at = time.time()
        self._scored = False
        self.heartbeat.beat(f"processing frame {frame.index} (ROI, model, decision)")
        try:
            self._process(frame)
        except Exception as e:  # one bad frame must not stop the line's inspection
            self._frame_error(frame, e)
        if self._idle_rate is not None:
            idle_capture, continuous = self._idle_rate
            idle_capture.presence(frame.index, continuous.belt_empty)
        self._frames += 1
        if self.trace is not None:
            self.trace.frame(self._read_at, time.time(), self._scored)

    def _periodic(self, timers: _Timers) -> None:
        """The frame rate, the stats on MQTT and the status log line, each at its interval."""
        now = time.monotonic()
        if now < timers.next_status and now < timers.next_stats:
            return
        self._fps = (self._frames - timers.fps_n0) / max(now - timers.fps_t0, 1e-6)
        timers.fps_t0, timers.fps_n0 = now, self._frames
        if now >= timers.next_stats:
            self._publish_stats()
            timers.next_stats = now + timers.stats_every
        if now >= timers.next_status:
            self._log_status()
            timers.next_status = now + timers.status_every

    def _end_reason(self, capture: FrameSource, frame: Frame | None, loop_started: float) -> str | None:
        """Why the loop ends now (``--max-frames``, the end of a file or folder, a file that never opened), or None."""
        cfg = self.cfg
        if self.max_frames is not None and self._frames >= self.max_frames:
            return f"--max-frames {self.max_frames} reached"
        if cfg.sources:  # several views: the end when every view's file has ended and none loops
            if frame is None and capture.finished and all(v.source.exit_on_end and not v.source.loop
                                                          for v in cfg.sources):
                return "end of the source"
            return None
        if not (cfg.source.exit_on_end and not cfg.source.loop):
            return None
        if frame is None and capture.finished:
            if capture.truncated:  # not the whole file was inspected: say so in the exit code too
                return f"error: end of the source: video file {capture.truncated}"
            return "end of the source"
        if (
            capture.kind in ("file", "folder")
            and not capture.delivered_any
            and time.monotonic() - loop_started > cfg.source.end_if_not_opened_s
        ):
            return (
                f"error: the source {safe_uri(cfg.source.uri)} delivered no frame within "
                f"{cfg.source.end_if_not_opened_s:g} s (source.end_if_not_opened_s); camera {capture.state}"
            )
        return None

    def _process(self, frame: Frame) -> None:
        """The per-frame hot path, the same in every mode: crop -> locate -> score -> ``decider.update``. No
        logging, no copies (the ROI is a view of the frame; the record keeps references)."""
        self.latest.set_frame(frame)
        if frame.trigger is not None:
            self._camera_triggered(frame.trigger)
        self._frame_times.append((frame.index, frame.captured_at))
        roi_cfg = self._view_rois[frame.view] if frame.view is not None else self.cfg.roi
        try:
            record = FrameRecord.of_frame(frame, crop(frame.image, roi_cfg))
        except ValueError as e:  # the ROI lies outside this frame: say so once, keep going
            if self._roi_error != str(e):
                self._roi_error = str(e)
                log.error("frame %d%s skipped: %s", frame.index, f" of view {frame.view}" if frame.view else "", e)
            return
        if self.decider.needs_score(record):
            self._box_wanted(frame)
            self._score(record, roi_cfg)
        elif self._presence_by_foreground() and not self.decider.box_in_progress:
            self._offer_belt(record)  # the presence detector sees an empty belt
        decision = self.decider.update(record)
        self._after_update(frame, decision)
        if self.latest.inspecting and self.latest.box is None:  # the page outlines the box being inspected
            outline = self.decider.box_outline()
            if outline is not None:
                rx, ry = roi_box(frame.image.shape, roi_cfg)[:2]
                self.latest.set_box((outline[0] + rx, outline[1] + ry, outline[2] + rx, outline[3] + ry))

    def _score(self, record: FrameRecord, roi_cfg: RoiConfig) -> None:
        """Locate the box in the record's ROI and score the model's crop of it into the record (``no_box`` when
        the localiser finds none: the belt is never classified)."""
        model = self.models.get()
        assert model is not None
        clf = model.classifier
        t0 = time.perf_counter()
        slow_model_delay()  # test-only stall hook (edge/runtime/testhooks.py); a no-op unless its variable is set
        record.located, record.crop_spec = self._locate(clf, record.roi, record.view), clf.metadata.crop
        if record.located is not None and not record.located.found:
            self._offer_belt(record)  # the localiser sees no box: the belt as it looks now
            record.no_box = True
            self.metrics.no_box.inc()
            self._no_box += 1
            return
        assert record.frame is not None
        box = record.box_in_frame(roi_box(record.frame.shape, roi_cfg)[:2])
        if box is not None:  # for the operator page: the box in frame pixels (drawn only when the page asks)
            self.latest.set_box(box)
        if getattr(clf, "map_kind", None) is not None:  # the score, its map (per-view banks: this view's) and
            score, features, record.heat = heat_of(clf, record.roi, record.located, record.view,  # the features
                                                   model.threshold(self.cfg.model.threshold))
            if self.shadow.wants_features(clf):  # a head-only candidate on this backbone: the same one invoke
                record.features = features
        elif self.shadow.wants_features(clf):
            score, record.features = clf.score_features(record.roi, record.located, record.view)
        else:
            score = clf.score(record.roi, record.located, record.view)
        record.score = float(score)
        self._scored = True
        self.metrics.inference_seconds.observe(time.perf_counter() - t0)
        self.metrics.frames_processed.inc()

    def _box_wanted(self, frame: Frame) -> None:
        """Continuous mode, presence by foreground: a box is in view, so it is a part from now on (its deadline
        watch starts before the model runs)."""
        if (self.cfg.decision.mode == "continuous" and self._open_part is None
                and self.cfg.decision.presence.method == "foreground"):
            self._open_part = self.plant.passage_opened(frame.captured_at)

    def _after_update(self, frame: Frame, decision: Decision | None) -> None:
        """A decision goes out; continuous mode opens or forgets the part of the passage in view."""
        gave_up = self.decider.no_box_parts - self._no_box_parts  # parts closed for lack of a box
        if gave_up > 0:
            self.metrics.no_box_parts.inc(gave_up)
            self._no_box_parts += gave_up
        self.latest.set_inspecting(self.decider.box_in_progress)
        continuous = self.cfg.decision.mode == "continuous"
        if decision is not None:
            if continuous:
                decision.part_id = decision.part_id or self._open_part
                self._open_part = None
            self._on_decision(decision, frame=frame)
        elif continuous:
            if self.decider.box_in_progress and self._open_part is None:
                self._open_part = self.plant.passage_opened(frame.captured_at)
            elif not self.decider.box_in_progress and self._open_part is not None:
                self.plant.passage_discarded(self._open_part)  # too short to be a box: never a part
                self._open_part = None

    def _presence_by_foreground(self) -> bool:
        return self.cfg.decision.mode == "continuous" and self.cfg.decision.presence.method == "foreground"

    def _offer_belt(self, record: FrameRecord) -> None:
        """A frame with no box teaches the view's empty-belt model (only a model that crops ``auto`` uses it)."""
        model = self.models.get()
        if model is None or model.classifier.metadata.crop.method != "auto":
            return
        if not self.belts.wants(record.view):
            return
        if not self._belt_worker.submit((record.view, record.roi)):  # not running (no run()): learn here
            self.belts.learn(record.view, record.roi)

    def _locate(self, clf: Classifier, roi: np.ndarray, view: str | None = None) -> Located | None:
        """Where the box is in the ROI, with the model's own crop (None: the model takes the whole ROI): the
        package's learned box finder first when it carries one (as training cropped: edge/judge/crops.locate_still),
        then its crop search. ``background`` and ``auto`` difference against the presence detector's learned empty
        belt when there is one; without it they look for the region that stands out from the ROI's border."""
        spec = clf.metadata.crop
        if spec.method == "none":
            return None
        # the package's learned box finder answers first, as in training; the search only where it finds none
        located = learned_box(roi, clf.finder, spec) if clf.finder is not None else None
        if located is None:
            located = self._search(roi, spec, view)
        count_located(self.metrics, located)  # per outcome and reason (boxinspect_localizer_frames)
        return located

    def _search(self, roi: np.ndarray, spec: CropSpec, view: str | None) -> Located:
        """The package's crop search in the ROI, against the presence detector's empty belt where it has one."""
        background = self.decider.background() if spec.method in ("background", "auto") else None
        if spec.method == "background" and background is None:
            if not self._crop_fallback_logged:
                self._crop_fallback_logged = True
                log.warning("crop 'background': no learned empty belt (triggered mode, or presence by score); "
                            "using the reference-free 'salient' search instead")
            spec = spec.model_copy(update={"method": "salient"})
        return locate(roi, spec, background, self.belts.model(view) if spec.method == "auto" else None)

    def _frame_error(self, frame: Frame, e: Exception) -> None:
        """Log a failing frame with its traceback, then at most once a minute with a count."""
        self._frame_errors += 1
        if self._frame_error_log.check()[0]:
            log.error("frame %d failed (%d frame error(s) so far)", frame.index, self._frame_errors, exc_info=e)

    def _on_decision(self, decision: Decision, frame: Frame | None = None) -> None:
        """Hand one decision to the publisher thread (model decisions from the loop, timeout decisions from the
        deadline watchdog; in order). Its evidence travels inside it; what only the loop knows (the capture
        times of the box's frames) is taken here."""
        timeout = decision.kind == "timeout"
        last_captured = exit_at = None
        if not timeout and decision.last_frame is not None:
            last_captured = self._captured_at(decision.last_frame, decision)
            if decision.mode == "continuous":
                exit_at = last_captured  # the box left the ROI
        job = _Publish(decision, exit_at, last_captured)
        if self.trace is not None and not timeout:
            job.read_at, job.handed_at = self._read_at, time.time()
            if frame is not None:
                job.frame, job.captured_at = frame.index, frame.captured_at
        if not self._publisher.submit(job):
            self._publish_job(job)  # not running (tests that drive the daemon by hand), or stopped

    def _publish_job(self, job: _Publish) -> None:
        with self._decision_lock:
            self._publish_decision(job)

    def _publish_decision(self, job: _Publish) -> None:
        cfg = self.cfg
        decision = job.decision
        timeout = decision.kind == "timeout"
        trace = self.trace if job.handed_at is not None else None
        started = time.time()
        if not self.plant.before_publish(decision, job.exit_at):
            return  # its part already got a timeout decision: one decision per part
        event = decision.to_event(cfg.line, cfg.camera)
        self.plant.command(event)  # issue 24: the reject command first, on its own connection (edge/deliver/commands.py)
        if trace is not None:
            trace.decision(event["event_id"], frame=job.frame, last_frame=decision.last_frame,
                           captured_at=job.captured_at, read_at=job.read_at, handed_at=job.handed_at, publish_started=started,
                           is_defect=bool(event["is_defect"]))
        self._save_evidence(decision, event)
        if trace is not None:
            trace.decision_at(event["event_id"], evidence_done=time.time())
        if (event["is_defect"] or cfg.mqtt.outbox_all_decisions) and self.sink is not None:
            try:
                seq = self.sink.publish_defect(event)
                if trace is not None:
                    trace.stored(event["event_id"], seq, time.time())
            except Exception as e:  # cannot be encoded (NaN), or a bug: lost, so counted and logged in full
                reason = "unencodable" if isinstance(e, ValueError) else "error"
                self.metrics.events_lost.labels(reason=reason).inc()
                log.error("DEFECT EVENT LOST (%s: %s); the event: %s", reason, e, json.dumps(event, default=str))
        if self.sink is not None and cfg.mqtt.publish_results:
            try:
                self.sink.publish_result(event)
            except Exception as e:  # telemetry: never keeps a decision out of the metrics, /events and the log
                log.warning("result for %s not published: %s", event["event_id"], e)
        m = self.metrics
        m.decisions.labels(label=event["label"]).inc()
        if event["score"] is not None:
            m.scores.observe(event["score"])
        if event["is_defect"]:
            m.defects.inc()
            self._defects += 1
            if not timeout and job.last_captured is not None:
                m.end_to_end_seconds.observe(max(0.0, self.clock() - job.last_captured))
        self._decisions += 1
        self.events.add(event)
        if self.station is not None:  # issue 26: the history and the shift/lot counters (never raises)
            self.station.on_decision(event)
        self.shadow.on_decision(event, decision, self.models.get())  # queued for the candidate; never raises
        rep = decision.representative
        if self.operator is not None:  # keeps references only: the page encodes on request
            self.operator.on_decision(event, rep.frame if rep else None, rep.model_crop() if rep else None)
        if not timeout:
            self.latest.set_verdict(event["label"], event["score"], event["is_defect"])
            self.latest.set_result(self._result(event, decision))
        self.plant.after_publish(event)
        log.info(
            "decision %s score=%s frames=%s-%s (%d scored) event=%s%s action=%s slack=%sms%s",
            event["label"], "-" if event["score"] is None else f"{event['score']:.3f}", event.get("first_frame"),
            event.get("last_frame"), event["frame_count"], event["event_id"],
            f" part={event['part_id']}" if event.get("part_id") else "", event["action"],
            "-" if event["slack_ms"] is None else f"{event['slack_ms']:.0f}", " LATE" if event["late"] else "",
        )

    def _save_evidence(self, decision: Decision, event: dict[str, Any]) -> None:
        """The evidence JPEGs: the representative record's crop (``_crop.jpg``, the image the model was given)
        and its frame (``_frame.jpg``). Several views: one pair per view (``<event_id>_<view>``); the event's own
        ``evidence`` is the representative view's. The map of the representative record (a package with one) goes
        into the event (with evidence or without; edge/judge/heatmap.py)."""
        if decision.evidence is None:
            return
        rep = decision.evidence.representative
        if self.evidence is not None and decision.view_evidence is None:
            event["evidence"] = self._save_record(event["event_id"], rep, event)
        elif self.evidence is not None and decision.view_evidence is not None:
            for v in event.get("views") or {}:
                ev = decision.view_evidence.get(v)
                event["views"][v]["evidence"] = (
                    None if ev is None else self._save_record(f"{event['event_id']}_{v}", ev.representative, event))
            rep_view = decision.evidence.view
            if rep_view is not None and rep_view in event["views"]:
                event["evidence"] = event["views"][rep_view]["evidence"]
        attach(event, rep.heat, self.evidence)

    def _save_record(self, name: str, record: FrameRecord, event: dict[str, Any]) -> dict[str, Any] | None:
        assert self.evidence is not None
        try:
            return self.evidence.save(name, record.frame, record.model_crop(), event["is_defect"])
        except Exception as e:  # evidence is a by-product: a full disk must not lose the event itself
            log.error("evidence %s not saved: %s", name, e)
            return None

    def _result(self, event: dict[str, Any], decision: Decision) -> LastResult:
        """The operator page's result tile: the verdict on the representative frame of the box decided."""
        rep = decision.representative
        box = None
        if rep is not None and rep.frame is not None:
            roi_cfg = self._view_rois[rep.view] if rep.view is not None else self.cfg.roi
            try:
                box = rep.box_in_frame(roi_box(rep.frame.shape, roi_cfg)[:2])
            except ValueError:
                box = None
        return LastResult(event["event_id"], event["label"], event["score"], bool(event["is_defect"]),
                          float(event["threshold"]), rep.frame if rep else None, rep.index if rep else None,
                          rep.view if rep else None, box, event["decided_at"], rep.captured_at if rep else None)

    def _decision_context(self) -> tuple[tuple[str, str], float, str]:
        """(labels, threshold, model_id) for timeout decisions."""
        d = self.decider
        return d.labels, d.threshold, d.model_id

    def _cancel_part(self, part_id: str) -> None:
        """A part timed out: the decider forgets it (triggered mode), no model time is spent on it."""
        with self._decision_lock:
            self.decider.cancel(part_id)
            if self._open_part == part_id:  # issue 24: a timed-out passage (camera hang) is over; the next frame starts anew
                self._open_part = None

    def _plant_status(self) -> dict[str, Any]:
        model = self.models.get()
        return {
            "model_id": model.classifier.model_id if model else None,
            "self_test_ok": bool(model and model.self_test_passed),
            "camera_state": str(self.capture.state) if self.capture is not None else "not started",
            "outbox_depth": self.sink.outbox_depth if self.sink is not None else 0,
        }

    def _captured_at(self, index: int, decision: Decision) -> float:
        """Capture time of frame ``index`` (the box's last frame) if still known, else of the last frame used."""
        for i, t in reversed(self._frame_times):
            if i == index:
                return t
            if i < index:
                break
        return decision.captured_at if decision.captured_at is not None else decision.decided_at

    # ----------------------------------------------------------------------------------------------
    # Periodic: stats on MQTT, a status line in the log
    # ----------------------------------------------------------------------------------------------

    def loop_counters(self) -> dict[str, Any]:
        return {
            "fps": round(self._fps, 2),
            "frames": self._frames,
            "decisions": self._decisions,
            "defects": self._defects,
            "frame_errors": self._frame_errors,
            "no_box": self._no_box,
            "stop_requested": self.stop_requested.is_set(),
            "evidence": self.evidence.stats() if self.evidence is not None else None,
            **self.plant.stats(),  # deadline bookkeeping, last verdict, defect rate, SPC alarm
        }

    def _stats(self) -> dict[str, Any]:
        model = self.models.get()
        capture = self.capture
        return {
            "ts": self.clock(),
            "line": self.cfg.line,
            "camera": self.cfg.camera,
            "uptime_s": round(self.clock() - self.started, 1),
            **self.loop_counters(),
            "camera_state": str(capture.state) if capture is not None else "not started",
            "frozen": bool(capture is not None and capture.frozen),
            "outbox_depth": self.sink.outbox_depth if self.sink is not None else 0,
            "mqtt_connected": bool(self.sink.connected) if self.sink is not None else False,
            "model_id": model.classifier.model_id if model else None,
            "ready": not self.state.not_ready_reasons() if self.state is not None else False,
        }

    def _publish_stats(self) -> None:
        if self.sink is None:
            return
        try:
            self.sink.publish_stats(self._stats())
        except Exception as e:
            log.warning("stats not published: %s", e)

    def _log_status(self) -> None:
        s = self._stats()
        log.info(
            "status: fps=%.1f camera=%s%s frames=%d decisions=%d defects=%d outbox=%d mqtt=%s",
            s["fps"], s["camera_state"], " (frozen)" if s["frozen"] else "", s["frames"], s["decisions"],
            s["defects"], s["outbox_depth"],
            "connected" if s["mqtt_connected"] else ("disconnected" if self.cfg.mqtt.enabled else "disabled"),
        )

    # ----------------------------------------------------------------------------------------------
    # Model reload (SIGHUP, POST /reload): load + self-test aside, swap atomically, keep the old on failure
    # ----------------------------------------------------------------------------------------------

    def reload(self, path: str | None = None) -> ReloadResult:
        """Load ``path`` (default: the configured ``model.path``, or the package promoted or rolled back to since,
        edge/learn/shadow.py; a name is taken inside model.dir), self-test it and swap it in. SIGHUP reloads the
        default, as does a restart."""
        target = active_model_path(self.cfg)
        if path:  # a name from the network: only a .tflite inside model.dir (edge/judge/model_package.py)
            try:
                target = resolve_model_name(self.cfg.model.dir or self.cfg.model.path.parent, path)
            except PackageError as e:
                old = self.models.get()
                old_id = old.classifier.model_id if old else None
                self.metrics.reloads.labels(outcome="refused").inc()
                log.warning("reload refused, keeping %s: %s", old_id, e)
                return ReloadResult(ok=False, path=path[:80], model_id=old_id, reason=str(e))
        return self.swap_in(target)

    def swap_in(self, target: str | Path, change: dict[str, Any] | None = None) -> ReloadResult:
        """Load the package at the trusted path ``target``, self-test it, swap it in; the old model stays on
        failure. ``change``: a promotion or rollback (edge/learn/shadow.py), published with the retained model doc."""
        with self._reload_lock:
            old = self.models.get()
            old_id = old.classifier.model_id if old else None
            log.info("reloading model from %s", target)
            try:
                new = self.loader(target)
            except ModelError as e:
                self.metrics.reloads.labels(outcome="load_failed").inc()
                log.error("reload failed, keeping %s: %s", old_id, e)
                return ReloadResult(ok=False, path=str(target), model_id=old_id, reason=str(e))
            if not new.self_test_passed:
                self.metrics.reloads.labels(outcome="self_test_failed").inc()
                reason = "self-test failed: " + "; ".join(new.self_test_failures)
                log.error("reload rejected, keeping %s: %s", old_id, reason)
                return ReloadResult(
                    ok=False, path=str(target), model_id=old_id, reason=reason,
                    self_test_failures=list(new.self_test_failures),
                )
            self.models.swap(new)
            self._publish_model_info(new, change)
            self.metrics.reloads.labels(outcome="ok").inc()
            log.info(
                "model swapped: %s -> %s (threshold %s -> %.4f)", old_id, new.classifier.model_id,
                f"{self._threshold(old):.4f}" if old else None, self._threshold(new),
            )
            return ReloadResult(ok=True, path=str(target), model_id=new.classifier.model_id)

    def _follow_model_swap(self) -> None:
        """After a swap, the decider takes the new threshold and model id (between frames, main thread)."""
        model, version = self.models.get_versioned()
        if version == self._model_version or model is None or self.decider is None:
            return
        self._model_version = version
        self.decider.threshold = self._threshold(model)
        self.decider.model_id = model.classifier.model_id
        self.decider.labels = model.labels

    def _threshold(self, model: LoadedModel) -> float:
        return model.threshold(self.cfg.model.threshold)

    def _model_doc(self, model: LoadedModel, change: dict[str, Any] | None = None) -> dict[str, Any]:
        """The model in use, as published on the retained ``<base>/model`` topic."""
        clf = model.classifier
        meta = clf.metadata
        return {
            "model_id": clf.model_id,
            "name": meta.name,
            "format": str(getattr(meta, "format", "")),
            "threshold": self._threshold(model),
            "threshold_source": "config model.threshold" if self.cfg.model.threshold is not None else "package",
            "package_sha256": getattr(meta, "package_sha256", ""),
            "tflite_sha256": meta.sha256,
            "labels": list(meta.labels),
            "positive_class": meta.positive_class,
            "self_test_passed": model.self_test_passed,
            "loaded_at": model.loaded_at,
            **self.model_control.mqtt_fields(change),  # the last promotion/rollback, what a rollback returns to
        }

    def _publish_model_info(self, model: LoadedModel, change: dict[str, Any] | None = None) -> None:
        clf = model.classifier
        self.metrics.model_info.info(
            {
                "model_id": clf.model_id,
                "path": str(clf.path),
                "runtime": clf.runtime_name,
                "delegate": str(clf.delegate),
                "threshold": f"{self._threshold(model):.4f}",
                "format": str(getattr(clf.metadata, "format", "")),
            }
        )
        self.metrics.model_ready.set(1 if model.self_test_passed else 0)
        p50 = getattr(clf, "self_test_invoke_p50_s", None)  # (a test's stand-in classifier has none)
        self.metrics.model_invoke_p50.set(float("nan") if p50 is None else p50)
        for label in model.labels:  # both series exist (at 0) from the start, so rates and ratios work
            self.metrics.decisions.labels(label=label)
        if self.sink is not None:
            self.sink.publish_model(self._model_doc(model, change))

    # ----------------------------------------------------------------------------------------------
    # Triggered mode: parts announced over MQTT or POST /trigger
    # ----------------------------------------------------------------------------------------------

    def trigger(self, part_id: str | None, at: float | None = None, fire: bool = True) -> bool:
        """Announce a part (any thread: MQTT callback, API). Frames captured from now on (or from ``at``) are used
        for it. False if the decider refused it (too many triggers waiting; it logs why). A GenICam camera in
        software trigger mode is then fired for it (``fire``)."""
        at = time.time() if at is None else at
        if not self.plant.admit_trigger(at):  # issue 24: a trigger flood is dropped and counted, not made into parts
            return False
        part_id = self.plant.on_trigger(part_id, at)  # its deadline starts now; a trigger without id gets one
        accepted = bool(self.decider.trigger(part_id, at))
        if accepted:  # a refusal is logged once, by the decider (rate-limited: clients cause it)
            trigger_log.info("trigger: part %s", part_id)
            if fire and self.cfg.source.kind == "genicam" and self.cfg.source.genicam.trigger == "software" \
                    and isinstance(self.capture, Capture):
                self.capture.software_trigger()  # after the part is queued: its frame cannot arrive before it
        else:
            self.plant.trigger_refused(part_id, "trigger refused: too many triggers waiting for frames")
        return accepted

    def _camera_triggered(self, stamp: TriggerStamp) -> None:
        """A frame the camera took on its own trigger (GenICam trigger mode, triggered decisions): a part whose id
        comes from the camera's count, unless a trigger (MQTT, POST /trigger) is already waiting for a frame: then
        the frame is that part's and the part keeps its id."""
        if isinstance(self.decider, TriggeredDecider) and not self.decider.pending:
            self.trigger(stamp.part_id, at=stamp.at, fire=False)

    # ----------------------------------------------------------------------------------------------
    # 4. Signals and shutdown
    # ----------------------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # embedded in a test thread: the caller stops us with stop_requested
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        self._signals_seen += 1
        if self._signals_seen > 1:
            os._exit(128 + signum)  # a second Ctrl-C: the operator does not want to wait (the outbox is on disk)
        self.stop_requested.set()

    def _on_hup(self, signum: int, frame: Any) -> None:
        self.reload_requested.set()

    def _shutdown(self) -> None:
        """Stop everything within ``shutdown_timeout_s``; undelivered defect events stay in the outbox file."""
        cfg = self.cfg
        deadline = time.monotonic() + cfg.shutdown_timeout_s
        watchdog = threading.Timer(cfg.shutdown_timeout_s + FORCED_EXIT_GRACE_S, self._forced_exit)
        watchdog.daemon = True
        watchdog.start()
        try:
            if self.capture is not None:
                # A reader blocked in a network read is abandoned (daemon thread) rather than waited for.
                self.capture.stop(min(3.0, cfg.shutdown_timeout_s / 3))
            if self.decider is not None:
                try:
                    decision = self.decider.flush()  # several views: each view decides what it has, then fused
                    if decision is not None:
                        if decision.mode == "continuous":
                            decision.part_id = decision.part_id or self._open_part
                        self._on_decision(decision)
                    elif self._open_part is not None:
                        self.plant.passage_discarded(self._open_part)
                    self._open_part = None
                except Exception:
                    log.exception("flushing the last decision failed")
            # the decisions made so far are published before the plant gives parts still waiting their timeouts
            self._publisher.drain(max(1.0, deadline - time.monotonic() - 2.0))
            try:
                self.plant.stop()  # parts still waiting get their timeout decisions before the outbox drains
            except Exception:
                log.exception("stopping the plant integration failed")
            # every decision made so far is published (evidence, outbox) before the sink drains and stops
            self._publisher.stop(max(1.0, deadline - time.monotonic() - 2.0))
            self._belt_worker.stop(1.0)
            if self.sink is not None:
                if cfg.mqtt.enabled and self.sink.outbox_depth:
                    # Also while disconnected: the broker may be back before the deadline.
                    log.info("delivering %d defect event(s) before exit (at most %.1f s)",
                             self.sink.outbox_depth, max(0.0, deadline - time.monotonic() - 1.0))
                    self.sink.wait_drained(max(0.0, deadline - time.monotonic() - 1.0))
                # Publishes "offline", disconnects; whatever is still in the outbox stays on disk.
                self.sink.stop(max(1.0, deadline - time.monotonic()))
            log.info("stopped: frames=%d decisions=%d defects=%d", self._frames, self._decisions, self._defects)
        finally:
            if self.api is not None:
                self.api.stop(max(0.5, deadline - time.monotonic()))
            if self.station is not None:
                self.station.close()
            watchdog.cancel()

    def _forced_exit(self) -> None:
        log.error("shutdown took longer than shutdown_timeout_s + %.0fs; exiting now", FORCED_EXIT_GRACE_S)
        logging.shutdown()
        os._exit(EXIT_FAILED)
