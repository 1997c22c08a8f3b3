"""Prometheus metrics of the daemon, on a registry of its own (so tests can run several daemons)."""

from __future__ import annotations

import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)

from edge.state import CameraState

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SCORE_BUCKETS = tuple(i / 20 for i in range(1, 21))


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.started = time.time()
        self._frames_and_decisions(r)
        self._camera(r)
        self._delivery(r)
        self._model(r)
        self._shadow(r)
        self.uptime = Gauge("boxinspect_uptime_seconds", "Seconds since start", registry=r)
        self.uptime.set_function(lambda: time.time() - self.started)
        # process_resident_memory_bytes, process_cpu_seconds_total, process_open_fds, ... (from /proc; Linux)
        ProcessCollector(registry=r)
        self.set_camera_state(CameraState.DISCONNECTED)

    def _frames_and_decisions(self, r: CollectorRegistry) -> None:
        """Frames read, scored and dropped; the localiser; decisions and scores."""
        self.frames_captured = Counter("boxinspect_frames_captured", "Frames read from the source", registry=r)
        self.frames_processed = Counter("boxinspect_frames_processed", "Frames run through the model", registry=r)
        self.frames_dropped = Counter(
            "boxinspect_frames_dropped", "Frames replaced by a newer one before processing", registry=r
        )
        self.inference_seconds = Histogram(
            "boxinspect_inference_seconds", "Model invoke latency (preprocess + invoke)", buckets=LATENCY_BUCKETS, registry=r
        )
        self.end_to_end_seconds = Histogram(
            "boxinspect_end_to_end_seconds",
            "Capture of the last frame of a box to the defect event being published",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.no_box = Counter(
            "boxinspect_no_box", "Frames the decider wanted scored in which the localiser found no box (not classified)",
            registry=r,
        )
        self.no_box_parts = Counter(
            "boxinspect_no_box_parts", "Triggered parts closed without a decision: no box in trigger_frames frames",
            registry=r,
        )
        self.localizer = Counter(
            "boxinspect_localizer_frames",
            "Frames the localiser looked at, by outcome (box, whole_frame, no_box) and reason (edge/judge/crops.py)",
            ["outcome", "reason"], registry=r,
        )
        self.decisions = Counter("boxinspect_decisions", "Box decisions by label", ["label"], registry=r)
        self.defects = Counter("boxinspect_defects", "Defective boxes found", registry=r)
        self.scores = Histogram("boxinspect_score", "Box scores (probability of the defect class)", buckets=SCORE_BUCKETS, registry=r)

    def _camera(self, r: CollectorRegistry) -> None:
        """The camera's state and picture, and what a GenICam stream lost (edge/capture/genicam.py)."""
        self.camera_state = Gauge("boxinspect_camera_state", "1 for the current camera state", ["state"], registry=r)
        self.camera_frozen = Gauge("boxinspect_camera_frozen", "1 while the picture is frozen", registry=r)
        self.frame_brightness = Gauge("boxinspect_frame_brightness", "Mean grey level of the latest frame (0-255)", registry=r)
        self.frame_sharpness = Gauge("boxinspect_frame_sharpness", "Variance of the Laplacian of the latest frame", registry=r)
        # GenICam cameras (edge/capture/genicam.py): what the GigE Vision / USB3 Vision stream lost
        self.camera_lost_packets = Counter(
            "boxinspect_camera_lost_packets", "Stream packets the camera sent that never arrived (GenICam)", registry=r)
        self.camera_incomplete_frames = Counter(
            "boxinspect_camera_incomplete_frames", "Frames dropped because packets were missing or late (GenICam)",
            registry=r)

    def _delivery(self, r: CollectorRegistry) -> None:
        """MQTT and the outbox: what was published, failed, dropped or lost; refused triggers."""
        self.mqtt_connected = Gauge("boxinspect_mqtt_connected", "1 while connected to the broker", registry=r)
        self.outbox_depth = Gauge("boxinspect_outbox_depth", "Defect events on disk waiting for PUBACK", registry=r)
        self.events_published = Counter("boxinspect_events_published", "Defect events acknowledged by the broker", registry=r)
        self.events_failed = Counter("boxinspect_events_failed", "Publish attempts that failed (they stay in the outbox)", registry=r)
        self.events_dropped = Counter(
            "boxinspect_events_dropped", "Defect events lost to outbox overflow (see mqtt.outbox_overflow)", registry=r
        )
        self.events_lost = Counter(
            "boxinspect_events_lost", "Defect events lost for another reason than overflow, by reason (disk_full, ...)",
            ["reason"], registry=r,
        )
        self.events_unstored = Counter(
            "boxinspect_events_unstored",
            "Defect events the outbox could not store (disk full), by what happened: direct (published without the "
            "outbox) or memory (held in memory)", ["route"], registry=r,
        )
        self.mqtt_callback_errors = Counter(
            "boxinspect_mqtt_callback_errors", "Exceptions caught in MQTT callbacks (the connection lives on)", ["callback"],
            registry=r,
        )
        self.triggers_rejected = Counter(
            "boxinspect_triggers_rejected", "Trigger messages refused as malformed, by reason (docs/EVENTS.md)", ["reason"],
            registry=r,
        )

    def _model(self, r: CollectorRegistry) -> None:
        """The model in use and its reloads."""
        self.model_info = Info("boxinspect_model", "The model in use", registry=r)
        self.model_ready = Gauge("boxinspect_model_ready", "1 when the model is loaded and its self-test passed", registry=r)
        self.reloads = Counter("boxinspect_model_reloads", "Model reloads by outcome", ["outcome"], registry=r)
        self.model_invoke_p50 = Gauge(
            "boxinspect_model_invoke_p50_seconds", "Median model invoke time in the self-test of the model in use "
            "(NaN without one); far above docs/BENCHMARKS.md's figure: the runtime lacks XNNPACK", registry=r)
        self.model_invoke_p50.set(float("nan"))

    def _shadow(self, r: CollectorRegistry) -> None:
        """Shadow mode (edge/learn/shadow.py): a candidate model judges every decided box beside the live one."""
        # shadow mode (edge/learn/shadow.py): a candidate model judges every decided box beside the live one
        self.shadow_boxes = Counter(
            "boxinspect_shadow_boxes", "Decided boxes the shadow candidate judged", registry=r)
        self.shadow_disagreements = Counter(
            "boxinspect_shadow_disagreements", "Boxes where the shadow candidate's verdict differs from the live model's",
            registry=r)
        self.shadow_agreement_ratio = Gauge(
            "boxinspect_shadow_agreement_ratio", "Share of judged boxes where the candidate agrees with the live model "
            "(since the candidate was loaded; NaN before the first box)", registry=r)
        self.shadow_agreement_ratio.set(float("nan"))
        self.shadow_errors = Counter(
            "boxinspect_shadow_errors", "Shadow judgements that failed (the live decision is never affected)", registry=r)
        self.shadow_skipped = Counter(
            "boxinspect_shadow_skipped", "Decided boxes not judged in shadow because its queue was full (shadow.queue)",
            registry=r)

    @staticmethod
    def value(metric: Counter | Gauge, **labels: str) -> float:
        """The current value of one of these metrics (of its child with ``labels``), read through the
        metric object: /status names attributes, not sample names, so a rename cannot silently read 0."""
        for family in metric.collect():
            for sample in family.samples:
                if not sample.name.endswith("_created") and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return 0.0

    def set_camera_state(self, state: CameraState) -> None:
        for s in CameraState:
            self.camera_state.labels(state=s.value).set(1 if s == state else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
