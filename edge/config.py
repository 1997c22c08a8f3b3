"""Daemon configuration: one YAML file, validated into typed objects at start-up.

Every key is documented in ``deploy/config.example.yaml``. Secrets (and any other key) can be
overridden from the environment with ``BOXINSPECT_<KEY>`` or ``BOXINSPECT_<SECTION>__<KEY>``, for example
``BOXINSPECT_MQTT__PASSWORD`` (read by pydantic-settings, so values are parsed for the key's type; an empty
variable counts as unset). Errors name the key path, what was expected and, for an environment value, the
variable it came from.

Paths: inputs (``model.path``, the TLS files) relative to the config file's folder; state
(``mqtt.outbox_path``, ``evidence.dir``, ``operator.feedback_dir``) relative to the state directory: ``state_dir`` in the file or
``BOXINSPECT_STATE_DIR``, else ``$STATE_DIRECTORY`` (set by systemd's ``StateDirectory=``), else the
config file's folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

# What kind of source a ``source.uri`` names, from its shape alone (the config check and the capture both use it).
STREAM_SCHEMES = {"rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt"}


def guess_kind(uri: str) -> str:
    """``gstreamer`` (a pipeline), ``usb``, ``rtsp`` (any network stream), ``folder`` or ``file`` from the shape of
    ``uri``."""
    u = uri.strip()
    if "!" in u and "appsink" in u:  # a GStreamer pipeline (edge/capture/gstreamer.py)
        return "gstreamer"
    if u.isdigit() or u.startswith("/dev/video"):
        return "usb"
    if "://" in u and u.split("://", 1)[0].lower() in STREAM_SCHEMES:
        return "rtsp"
    p = Path(u)
    if p.is_dir() or (not p.exists() and (u.endswith("/") or not p.suffix)):
        return "folder"
    return "file"


ENV_PREFIX = "BOXINSPECT_"
ENV_NESTING = "__"


class ConfigError(ValueError):
    """A config file that cannot be used. The message names the key and what was expected."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenICamConfig(_Section):
    """A GenICam camera (``source.kind: genicam``, edge/capture/genicam.py): what is written to it on every open and
    read back. null = leave the camera's own setting. Frame rate, width and height come from ``source``."""

    exposure_us: float | None = Field(default=None, gt=0)  # ExposureTime in microseconds (auto exposure off)
    gain_db: float | None = Field(default=None, ge=0)  # Gain in dB (auto gain off)
    pixel_format: str | None = None  # e.g. Mono8, Mono16, BayerRG8, BayerGB8, RGB8 (as the camera names it)
    offset_x: int = Field(default=0, ge=0)  # ROI on the sensor: left edge; source.width / height its size
    offset_y: int = Field(default=0, ge=0)
    trigger: Literal["off", "software", "hardware"] = "off"  # off = free run at source.fps
    trigger_line: str = "Line0"  # trigger: hardware: the camera's input line (TriggerSource)
    trigger_activation: Literal["RisingEdge", "FallingEdge"] = "RisingEdge"
    packet_size: int | None = Field(default=None, ge=576, le=16000)  # GigE Vision: GevSCPSPacketSize; null = negotiate
    buffers: int = Field(default=4, ge=2, le=64)  # frame buffers queued to the stream
    features: dict[str, str | int | float | bool] = Field(default_factory=dict)  # any other feature, set as given


class SourceConfig(_Section):
    """Where frames come from. ``kind: auto`` guesses from ``uri``."""

    kind: Literal["auto", "usb", "rtsp", "file", "folder", "gstreamer", "genicam"] = "auto"
    uri: str = "0"  # camera index, /dev/videoN, rtsp://..., http://..., a video file or an image folder
    loop: bool = False  # video file / folder: start again at the end
    exit_on_end: bool = True  # video file / folder without loop: the daemon drains its outbox and exits at the end
    pace: Literal["realtime", "fast"] = "realtime"  # file/folder: play at native fps, or every frame as fast as it is consumed
    fps: float | None = Field(default=None, gt=0)  # folder pace in realtime mode, or requested camera fps
    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)
    stall_timeout_s: float = Field(default=5.0, gt=0)  # no new frame for this long -> state "stalled"
    reconnect_initial_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    frozen_frames: int = Field(default=50, ge=2)  # identical consecutive frames before "frozen" is flagged
    frozen_tolerance: float = Field(default=0.2, ge=0)  # mean abs pixel difference below which frames count as identical
    # idle rate: once the belt has been empty (continuous mode, presence by foreground) for idle_after_s, decode
    # at most idle_fps frames a second (the others are grabbed, not decoded) until anything enters the ROI;
    # 0 = decode every frame. pace: fast always decodes every frame. (docs/BENCHMARKS.md, "Idle and soak")
    idle_fps: float = Field(default=5.0, ge=0)
    idle_after_s: float = Field(default=2.0, ge=0)
    # file/folder with exit_on_end: a source that has delivered no frame after this long ends the run (exit 1)
    end_if_not_opened_s: float = Field(default=30.0, gt=0)
    genicam: GenICamConfig = GenICamConfig()  # kind: genicam only (docs/DEPLOY.md, "Cameras")


class RoiConfig(_Section):
    """Region of interest in pixels of the full frame; null = the whole frame."""

    x: int = Field(default=0, ge=0)
    y: int = Field(default=0, ge=0)
    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)


class ViewSourceConfig(_Section):
    """One camera view of a part, for several views in one process (``sources``, triggered mode)."""

    view: str  # the view's name: in events (views.<name>) and evidence file names, e.g. top, oblique
    source: SourceConfig = SourceConfig()
    roi: RoiConfig = RoiConfig()

    @field_validator("view")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "-_" for c in v):
            raise ValueError("must be non-empty letters, digits, '-' or '_' (it names files and JSON keys)")
        return v


class ModelConfig(_Section):
    path: Path = Path("model.tflite")  # the .tflite; its metadata sidecar is <path>.json
    dir: Path | None = None  # POST /reload {"path": NAME} loads only NAME inside this folder; null = model.path's folder
    threshold: float | None = Field(default=None, ge=0, le=1)  # overrides the threshold from the model metadata
    num_threads: int = Field(default=2, ge=1, le=64)
    runtime: Literal["auto", "litert", "tflite_runtime", "tensorflow"] = "auto"
    verify_hash: bool = True  # refuse a model whose sha256 does not match its metadata
    self_test: bool = True  # run the golden samples at start-up and on reload
    # issue 24: Ed25519 public keys (PEM); set = only packages signed by one of them load (edge/judge/signing.py)
    trusted_keys: list[Path] = []


class PresenceConfig(_Section):
    """How the daemon tells that a box is in the ROI (continuous mode)."""

    method: Literal["foreground", "score", "both"] = "foreground"
    fg_min_fraction: float = Field(default=0.15, gt=0, lt=1)  # share of ROI pixels that must be foreground
    fg_var_threshold: float = Field(default=40.0, gt=0)  # MOG2 variance threshold
    fg_history: int = Field(default=300, ge=10)
    learning_frames: int = Field(default=30, ge=0)  # frames used to learn the empty belt before deciding
    score_on: float = Field(default=0.6, ge=0, le=1)  # score hysteresis: enter
    score_off: float = Field(default=0.4, ge=0, le=1)  # score hysteresis: leave
    min_frames: int = Field(default=3, ge=1)  # frames a box must be present to count
    gap_frames: int = Field(default=3, ge=1)  # absent frames that end a passage
    # the frame path of the presence detector (docs/BENCHMARKS.md, "Presence detection"): the ROI is shrunk to
    # fg_width pixels wide with this interpolation (area at 160 px = the reference path of earlier releases) and compared in
    # colour; idle_skip: while the belt is empty, a frame whose block-averaged thumbnail differs from the last
    # measured frame's by at most idle_diff grey levels everywhere is not measured again (idle CPU)
    fg_width: int = Field(default=80, ge=16, le=640)
    fg_resize: Literal["area", "linear", "nearest"] = "nearest"
    idle_skip: bool = True
    idle_diff: float = Field(default=6.0, ge=0, le=255)

    @model_validator(mode="after")
    def _hysteresis(self) -> PresenceConfig:
        if self.score_off > self.score_on:
            raise ValueError("score_off must be <= score_on")
        return self


class DecisionConfig(_Section):
    mode: Literal["continuous", "triggered"] = "continuous"
    aggregate: Literal["max", "mean", "median"] = "mean"  # how frame scores of one passage become the box score
    presence: PresenceConfig = PresenceConfig()
    trigger_topic: str | None = None  # triggered mode: MQTT topic carrying {"part_id": ...}; default <base>/trigger
    trigger_frames: int = Field(default=3, ge=1)  # frames classified per trigger
    # frames after a trigger in which the localiser finds no box before the part is closed without a decision
    trigger_no_box_frames: int = Field(default=30, ge=1)
    fusion: Literal["max", "mean", "noisy_or"] = "max"  # several views (sources): how their scores become one
    # issue 24: triggers closer than this to the last accepted one are dropped (counted), not made into parts
    trigger_min_gap_ms: float = Field(default=50.0, ge=0)  # 0 = no limit
    trigger_burst: int = Field(default=10, ge=1)  # ... but this many may come at once (parts close together)


class TlsConfig(_Section):
    enabled: bool = False
    ca_certs: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    insecure: bool = False  # skip hostname verification (test rigs only)


class MqttConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str | None = None  # default boxinspect-<line>-<camera>
    username: str | None = None
    password: SecretStr | None = None
    protocol: Literal["3.1.1", "5"] = "5"
    keepalive_s: int = Field(default=30, ge=5)
    base_topic: str = "boxinspect"  # topics are <base_topic>/<line>/<camera>/{defect,result,status,stats}
    publish_results: bool = False  # every decision on .../result at QoS 0
    stats_interval_s: float = Field(default=30.0, gt=0)
    tls: TlsConfig = TlsConfig()
    outbox_path: Path = Path("boxinspect-outbox.sqlite3")
    outbox_max_events: int = Field(default=100_000, ge=1)
    outbox_overflow: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    outbox_retention_s: float = Field(default=3600.0, ge=0)  # acknowledged events kept this long for replay; 0 = delete on PUBACK
    outbox_all_decisions: bool = False  # OK decisions through the outbox too, on <base>/ok (QoS 1, replayable)
    publish_feedback: bool = False  # operator answers about decisions through the outbox, on <base>/feedback
    outbox_memory_max_events: int = Field(default=1000, ge=1)  # disk full: at most this many events wait in memory
    reconnect_min_s: float = Field(default=1.0, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _login(self) -> MqttConfig:
        if self.password is not None and not self.username:
            raise ValueError("password is set but username is not: the broker would never see the password "
                             "(set mqtt.username, or BOXINSPECT_MQTT__USERNAME)")
        return self


class ApiConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)  # 0 = pick a free port (logged)
    token: SecretStr | None = None  # if set: Bearer token on everything but /healthz and /metrics
    max_upload_bytes: int = Field(default=10_000_000, ge=1024)
    max_image_pixels: int = Field(default=50_000_000, ge=1)  # /predict: larger images are refused from their header
    max_concurrent_decodes: int = Field(default=2, ge=1)  # /predict decodes at once (each can take ~3 B/pixel)
    reload_without_token: bool = False  # allow POST /reload with no api.token configured (refused by default)
    trusted_hosts: list[str] = Field(default_factory=list)  # Host header allow-list (DNS rebinding); [] = any
    max_connections: int = Field(default=100, ge=1)  # open HTTP connections; more are closed at once
    keep_alive_timeout_s: float = Field(default=5.0, gt=0)  # idle keep-alive connections are closed after this
    header_timeout_s: float = Field(default=10.0, gt=0)  # a connection must send its request head within this
    # issue 24 (edge/api/access.py, edge/api/server.py, edge/deliver/replay.py): who may view, and bounds on bodies and replays
    viewing: Literal["open", "token"] = "open"  # live image, status, recent decisions: open, or behind the credential
    body_timeout_s: float = Field(default=30.0, gt=0)  # a request body gets this long, plus its size at the min rate
    body_min_rate_bytes_s: int = Field(default=20_000, ge=1)  # ... so a client trickling a body is cut off
    replay_page_max: int = Field(default=200, ge=1, le=1000)  # /events?since_seq=: at most this many events a page
    replays_per_minute: int = Field(default=30, ge=1)  # /events?since_seq= (all clients together); more get 429
    # issue 26 (edge/api/users.py): named users with roles, their tokens stored hashed; `boxinspect users add NAME --role R`
    users_file: Path | None = None

    @field_validator("token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, v: Any) -> Any:
        # "token:" left empty (or an unset compose variable) means no token, not "the empty token",
        # which would lock every endpoint behind a credential nobody can send.
        return None if isinstance(v, str) and not v.strip() else v


class EvidenceConfig(_Section):
    enabled: bool = True
    dir: Path = Path("evidence")
    ok_sample_rate: float = Field(default=0.01, ge=0, le=1)  # fraction of OK decisions also saved
    jpeg_quality: int = Field(default=90, ge=10, le=100)
    lossless_crop: bool = True  # also <event_id>_crop.png: the model's crop pixel for pixel (re-scores exactly)
    max_files: int = Field(default=10_000, ge=1)
    max_bytes: int = Field(default=2_000_000_000, ge=1)
    max_age_days: float = Field(default=30.0, gt=0)


class OperatorConfig(_Section):
    """The operator page at / (edge/api/operator.py): live view, recent decisions, manual check, feedback, collection."""

    enabled: bool = True  # serve the page and its /ui/* endpoints (needs api.enabled)
    feedback_dir: Path = Path("feedback")  # feedback/<class>/ crops + JSON records, the layout `boxinspect train` reads
    recent_images: int = Field(default=20, ge=1, le=500)  # decisions whose frame and crop stay in memory for the page
    frame_max_fps: float = Field(default=4.0, gt=0, le=30)  # /ui/frame.jpg is drawn at most this often, for all viewers
    frame_width: int = Field(default=640, ge=64)  # the live frame is scaled down to at most this width
    rate_window: int = Field(default=100, ge=1)  # the page's defect rate over the last N boxes
    collect: bool = False  # collection mode at start (the page switches it on and off)
    collect_every: int = Field(default=10, ge=1)  # collection mode saves every Nth box crop, unlabelled
    collect_max_files: int = Field(default=2000, ge=1)  # label queue retention: oldest crops go first
    collect_max_age_days: float = Field(default=14.0, gt=0)
    # issue 24: the labelled crops (feedback/<class>/) under a quota; the oldest labels go first
    feedback_max_files: int = Field(default=20_000, ge=1)
    feedback_max_bytes: int = Field(default=1_000_000_000, ge=1_000_000)
    feedback_max_age_days: float = Field(default=365.0, gt=0)
    feedback_per_minute: int = Field(default=120, ge=1)  # answers and labels stored per minute; more get 429
    check_keep_width: int = Field(default=640, ge=64, le=4096)  # manual checks keep their image at most this wide


class ShadowConfig(_Section):
    """Shadow mode, promote and roll back (edge/learn/shadow.py): a candidate model judges every decided box beside the
    live one and never publishes; the disagreements wait on the operator page for a person's label."""

    dir: Path = Path("shadow")  # disagreeing crops, retrain candidates and the promotion record live here
    keep: int = Field(default=200, ge=1, le=100_000)  # disagreeing crops kept for review; the oldest go first
    queue: int = Field(default=64, ge=1, le=10_000)  # boxes waiting for the shadow worker; more are skipped (counted)
    history: int = Field(default=20, ge=1, le=1000)  # promotions and rollbacks kept in memory for GET /model
    # POST /model/retrain learns from operator.feedback_dir plus these folder-per-class data sets (the base data)
    retrain_data: list[Path] = Field(default_factory=list)
    # issue 24 (edge/learn/poison.py): promote needs {"confirm": true} while the candidate disagrees with the live model on
    # more than this share of the parts it has judged (at least confirm_min_parts of them)
    confirm_above: float = Field(default=0.2, ge=0, le=1)
    confirm_min_parts: int = Field(default=10, ge=1)


class ShiftConfig(_Section):
    """One shift: its name and the local time it starts ("HH:MM", in ``station.timezone``); it ends where the next starts."""

    name: str = Field(min_length=1, max_length=40)
    start: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


class StackLightGpio(_Section):
    """One stack-light lamp on a GPIO line, held on while its alarm is active (libgpiod v2, extra ``plant``)."""

    chip: str = "/dev/gpiochip0"  # the GPIO character device
    line: int = Field(ge=0, le=1023)  # the line's offset on that chip
    active_low: bool = False  # the lamp's relay switches on a low level


class StationConfig(_Section):
    """The station at the line (issue 26). The records (edge/deliver/station.py): the decision history, shift and lot
    counters and the audit trail, in one SQLite file beside the outbox; decisions are kept within the evidence
    retention (``evidence.max_files``, ``evidence.max_age_days``). The view at /station (edge/api/station.py): one
    camera, a large result tile frozen on NG until acknowledged, staleness on every tile, alarms and their
    stack-light outputs, the MJPEG live stream."""

    enabled: bool = True
    db_path: Path = Path("boxinspect-station.sqlite3")  # relative to the state directory, like the outbox
    timezone: str = "UTC"  # the shifts' clock (an IANA name, e.g. Europe/Berlin)
    shifts: list[ShiftConfig] = Field(default_factory=lambda: [ShiftConfig(name="day", start="00:00")], min_length=1)
    audit_keep: int = Field(default=10_000, ge=10)  # audit entries kept; the oldest go first
    periods_keep: int = Field(default=1000, ge=1)  # past shifts and lots kept with their counts
    csv_max_rows: int = Field(default=50_000, ge=1)  # one CSV export holds at most this many decisions
    stale_after_s: float = Field(default=3.0, gt=0, le=600)  # a tile with no fresh data for this long is greyed out
    sound: bool = False  # the alarm beep (generated in the browser) starts on; the operator toggles it
    stream: bool = True  # /ui/stream.mjpg (multipart MJPEG); false: the view polls /ui/frame.jpg
    stream_max_fps: float = Field(default=15.0, gt=0, le=60)  # frames a second per stream (also <= operator.frame_max_fps)
    stream_max_clients: int = Field(default=4, ge=1, le=64)  # streams open at once; more get 503 and poll instead
    stream_max_s: float = Field(default=600.0, gt=0)  # a stream ends after this and the page reconnects
    # alarm -> MQTT topic of a stack light: {"alarm", "active", ...} retained on each change (needs mqtt.enabled).
    # Alarms: "ng" (an NG part not yet acknowledged), "spc" (the SPC alarm active and not yet acknowledged).
    outputs: dict[Literal["ng", "spc"], str] = Field(default_factory=dict)
    # alarm -> a GPIO line held active while the alarm is (a lamp of the stack light, no PLC in between)
    gpio: dict[Literal["ng", "spc"], StackLightGpio] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        import zoneinfo

        if v == "UTC":  # needs no time zone database (a slim image may have none)
            return v
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}: an IANA name such as UTC or Europe/Berlin, from the system's "
                             "time zone database (Debian: apt-get install tzdata; or pip install tzdata)") from None
        return v

    @field_validator("shifts")
    @classmethod
    def _distinct(cls, v: list[ShiftConfig]) -> list[ShiftConfig]:
        starts = [s.start for s in v]
        if len(set(starts)) != len(starts):
            raise ValueError(f"two shifts start at the same time: {starts}")
        return v


class MetricsConfig(_Section):
    enabled: bool = True  # served at /metrics by the API


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"
    # issue 24: OpenCV's own log level; at error or quieter its FFmpeg prints only fatal lines (edge/runtime/nativelog.py)
    opencv: Literal["silent", "fatal", "error", "warning", "info", "debug"] = "error"


class GpioConfig(_Section):
    """Reject pulse on a GPIO line through libgpiod (python ``gpiod``, v2 API); Linux only."""

    enabled: bool = False
    chip: str = "/dev/gpiochip0"  # the GPIO character device
    line: int = Field(default=17, ge=0)  # line offset on that chip (BCM number on a Raspberry Pi)
    active_low: bool = False  # the line is active (pusher fires) at 0 V
    pulse_ms: float = Field(default=200.0, gt=0, le=60_000)  # how long the line stays active per reject


class RejectConfig(_Section):
    """Deadline and fail-safe of each part, and the reject outputs (docs/INTEGRATION.md)."""

    deadline_ms: float = Field(default=2000.0, gt=0)  # after the trigger (triggered) or the ROI exit (continuous)
    on_timeout: Literal["reject", "pass", "hold"] = "reject"  # a part without a decision by its deadline
    mqtt: bool = False  # publish a command on <base>/reject (QoS 1, not retained) for every reject/hold
    topic: str | None = None  # default <base_topic>/<line>/<camera>/reject
    gpio: GpioConfig = GpioConfig()
    # issue 24: commands on an MQTT connection of their own (edge/deliver/commands.py); false = on the event connection
    mqtt_own_connection: bool = True


class OpcuaConfig(_Section):
    """OPC UA server (optional extra ``plant``: asyncua). Anonymous access only when explicitly allowed."""

    enabled: bool = False
    endpoint: str = "opc.tcp://127.0.0.1:4840/boxinspect/"  # 0.0.0.0 to serve the network
    namespace: str = "urn:boxinspect"
    allow_anonymous: bool = False
    username: str | None = None
    password: SecretStr | None = None  # prefer BOXINSPECT_OPCUA__PASSWORD
    security_policy: Literal["none", "Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt"] = "none"
    certificate: Path | None = None  # server certificate (DER or PEM); needed unless security_policy is none
    private_key: Path | None = None  # its private key (PEM)
    trusted_client_certs: list[Path] = []  # client certificates accepted as user identities (X509 tokens)
    users_file: Path | None = None  # issue 24: more users, one 'name:scrypt$salt$hash' a line (edge/deliver/opcua_users.py)

    @model_validator(mode="after")
    def _access(self) -> OpcuaConfig:
        if self.enabled and not (self.allow_anonymous or self.username or self.trusted_client_certs or self.users_file):
            raise ValueError(
                "no way to log in: set username and password, users_file, or trusted_client_certs, "
                "or allow_anonymous: true (explicitly)"
            )
        if self.username and self.password is None:
            raise ValueError("username is set but password is not (BOXINSPECT_OPCUA__PASSWORD)")
        if self.security_policy != "none" and (self.certificate is None or self.private_key is None):
            raise ValueError(f"security_policy {self.security_policy} needs certificate and private_key")
        return self


class HomeAssistantConfig(_Section):
    """Home Assistant MQTT discovery: retained config topics for the line's sensors."""

    enabled: bool = False
    discovery_prefix: str = "homeassistant"
    device_name: str | None = None  # default "boxinspect <line>/<camera>"


class SpcConfig(_Section):
    """Statistical process control alarm: "the line started producing bad boxes"."""

    enabled: bool = False
    consecutive: int = Field(default=5, ge=1)  # this many rejects in a row raise the alarm
    window: int = Field(default=50, ge=2)  # parts in the rolling window of the rate rule
    rate_pct: float = Field(default=20.0, gt=0, le=100)  # defect rate over the window that raises the alarm
    clear_rate_pct: float = Field(default=10.0, ge=0, le=100)  # the rate rule clears at or below this
    clear_consecutive_ok: int = Field(default=5, ge=1)  # the run rule clears after this many good parts in a row

    @model_validator(mode="after")
    def _hysteresis(self) -> SpcConfig:
        if self.clear_rate_pct >= self.rate_pct:
            raise ValueError("clear_rate_pct must be below rate_pct (hysteresis)")
        return self


class Config(_Section):
    line: str = "line1"
    camera: str = "cam1"
    source: SourceConfig = SourceConfig()
    roi: RoiConfig = RoiConfig()
    # several views of each part (one process, one decision per trigger); replaces source and roi
    sources: list[ViewSourceConfig] = Field(default_factory=list)
    model: ModelConfig = ModelConfig()
    decision: DecisionConfig = DecisionConfig()
    mqtt: MqttConfig = MqttConfig()
    api: ApiConfig = ApiConfig()
    evidence: EvidenceConfig = EvidenceConfig()
    operator: OperatorConfig = OperatorConfig()
    shadow: ShadowConfig = ShadowConfig()
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    reject: RejectConfig = RejectConfig()
    opcua: OpcuaConfig = OpcuaConfig()
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()
    spc: SpcConfig = SpcConfig()
    station: StationConfig = StationConfig()  # issue 26: history, shift/lot counters, audit trail
    shutdown_timeout_s: float = Field(default=10.0, gt=0)
    state_dir: Path | None = None  # outbox and evidence live here; null = $STATE_DIRECTORY, else the config's folder
    liveness_timeout_s: float = Field(default=30.0, gt=0)  # /healthz fails when the loop has not turned for this long
    # the loop stuck this long: log all threads' stacks and exit (edge/runtime/liveness.py HangExit) so any runtime restarts
    # the daemon; 0 = never. Acts from liveness_timeout_s on at the earliest.
    liveness_exit_s: float = Field(default=60.0, ge=0)

    @field_validator("line", "camera")
    @classmethod
    def _topic_safe(cls, v: str) -> str:
        if not v or any(c in v for c in "/#+ "):
            raise ValueError("must be non-empty and contain no '/', '#', '+' or spaces (it is an MQTT topic level)")
        return v

    @model_validator(mode="after")
    def _views(self) -> Config:
        if self.sources:
            names = [v.view for v in self.sources]
            if len(set(names)) != len(names):
                raise ValueError(f"sources: view names must be unique, got {names}")
            if self.decision.mode != "triggered":
                raise ValueError("sources: several views are fused per trigger; set decision.mode: triggered "
                                 "(continuous mode cannot pair the views of one part, see docs/DECISION.md)")
            if {"source", "roi"} & self.model_fields_set:
                raise ValueError("sources replaces source and roi: give each view its own source and roi")
        return self

    @property
    def topic_base(self) -> str:
        return f"{self.mqtt.base_topic}/{self.line}/{self.camera}"

    def summary(self) -> dict[str, Any]:
        """The config as JSON-able data with secrets masked (SecretStr dumps as '**********')."""
        return self.model_dump(mode="json")


class _EnvNames(BaseSettings):
    """Only for its settings: pydantic-settings reads the environment for :class:`Config`'s fields."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTING, case_sensitive=False, env_ignore_empty=True
    )


def env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """``BOXINSPECT_...`` variables as a nested mapping of raw strings, keyed like the YAML file.

    pydantic-settings does the reading (prefix, ``__`` nesting, JSON for whole sections) through its source's
    public methods, on the mapping given; the values stay strings so that pydantic parses each for its key's
    type ("0" stays the string "0" for ``source.uri``, "on" is no port). Empty values are ignored: an unset
    compose variable must not blank a key. Variables that name no key are refused by :func:`parse_config`.
    """
    source = EnvSettingsSource(_EnvNames, case_sensitive=False, env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTING)
    env_vars = {k.lower(): v for k, v in environ.items() if k.upper().startswith(ENV_PREFIX) and v != ""}
    out: dict[str, Any] = {}
    for name, field in Config.model_fields.items():
        value: Any = env_vars.get(f"{ENV_PREFIX}{name}".lower())
        if source.field_is_complex(field):
            if value is not None:
                try:
                    value = source.decode_complex_value(name, field, value)
                except ValueError as e:
                    raise ConfigError(f"{ENV_PREFIX}{name.upper()}: not valid JSON for the section {name} ({e})") from None
            nested = source.explode_env_vars(name, field, env_vars)
            if nested:
                value = merge_dicts(value, nested) if isinstance(value, dict) else nested if value is None else value
        if value is not None:
            out[name] = value
    return out


def _env_name(loc: tuple[Any, ...], env_keys: set[tuple[str, ...]]) -> str | None:
    """The variable that set the value at ``loc`` (or a section above it), if one did."""
    for n in range(len(loc), 0, -1):
        key = tuple(str(p) for p in loc[:n])
        if key in env_keys:
            return ENV_PREFIX + ENV_NESTING.join(key).upper()
    return None


def key_paths(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    out: set[tuple[str, ...]] = set()
    for k, v in data.items():
        out.add((*prefix, k))
        if isinstance(v, dict):
            out |= key_paths(v, (*prefix, k))
    return out


def merge_dicts(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_dicts(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def format_errors(err: ValidationError, source: str, env_keys: set[tuple[str, ...]] | None = None) -> str:
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against deploy/config.example.yaml)"
        got = e.get("input")
        got_s = "" if isinstance(got, dict) or e["type"] == "missing" else f" (got {got!r})"
        var = _env_name(tuple(e["loc"]), env_keys or set())
        from_env = f" [from the environment: {var}]" if var else ""
        lines.append(f"  {loc}: {msg}{got_s}{from_env}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any] | None, source: str = "config", environ: dict[str, str] | None = None,
                 secrets_dirs: tuple[Path, ...] | None = None) -> Config:
    environ = dict(os.environ if environ is None else environ)
    check_env_names(environ)  # a misspelt BOXINSPECT_ variable is an error, not silence
    file_vars = {env_name(k) + FILE_SUFFIX for k in secret_keys()}
    values = {k: v for k, v in environ.items() if k.upper() not in file_vars}
    env = merge_dicts(env_overrides(values), secret_files(environ, secrets_dirs))
    data = merge_dicts(dict(data or {}), env)
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_errors(err, source, key_paths(env))) from None


def load_config(path: str | Path | None, environ: dict[str, str] | None = None) -> Config:
    """Read, override from the environment, and validate. Raises ConfigError with a readable message."""
    if path is None:
        return parse_config({}, "defaults", environ)
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config file: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
        duplicate = duplicate_key(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if duplicate:
        raise ConfigError(f"{p}: {duplicate}")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys (line:, camera:, source:, ...), got {type(data).__name__}")
    cfg = parse_config(data, str(p), environ)
    resolve_paths(cfg, p.resolve().parent, dict(os.environ if environ is None else environ))
    return cfg


def state_dir(cfg: Config, config_dir: Path, environ: dict[str, str]) -> Path:
    """Where relative state paths go: ``state_dir`` (or BOXINSPECT_STATE_DIR), else systemd's
    ``$STATE_DIRECTORY`` (its first entry), else the config file's folder."""
    if cfg.state_dir is not None:
        return cfg.state_dir if cfg.state_dir.is_absolute() else config_dir / cfg.state_dir
    systemd = environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(systemd) if systemd else config_dir


def resolve_paths(cfg: Config, config_dir: Path, environ: dict[str, str]) -> None:
    """Make every path absolute: inputs against the config's folder (a config travels with its model),
    state (outbox, evidence, operator feedback) against :func:`state_dir`."""
    state = state_dir(cfg, config_dir, environ)
    cfg.state_dir = state
    for obj, key, base in (
        (cfg.model, "path", config_dir),
        (cfg.model, "dir", config_dir),
        (cfg.mqtt.tls, "ca_certs", config_dir),
        (cfg.mqtt.tls, "certfile", config_dir),
        (cfg.mqtt.tls, "keyfile", config_dir),
        (cfg.mqtt, "outbox_path", state),
        (cfg.evidence, "dir", state),
        (cfg.operator, "feedback_dir", state),
        (cfg.shadow, "dir", state),
        (cfg.station, "db_path", state),
        (cfg.api, "users_file", config_dir),
    ):
        val = getattr(obj, key)
        if val is not None and not val.is_absolute():
            setattr(obj, key, base / val)
    cfg.shadow.retrain_data = [p if p.is_absolute() else config_dir / p for p in cfg.shadow.retrain_data]
    cfg.model.trusted_keys = [p if p.is_absolute() else config_dir / p for p in cfg.model.trusted_keys]
    for src in (cfg.source, *(v.source for v in cfg.sources)):  # a video file or image folder is an input too
        src.uri = resolve_uri(src.uri, config_dir, src.kind)


def _writable_dir(path: Path) -> str | None:
    """None if ``path`` is (or can be made as) a directory this process can write; else why not."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        who = f"uid {os.getuid()}" if hasattr(os, "getuid") else "this user"
        return f"{probe} is not writable by {who}" + ("" if probe == path else f" (needed to create {path})")
    return None


def check_files(cfg: Config) -> tuple[list[str], list[str]]:
    """What start-up would trip over, found now: (errors, warnings), each naming the key.

    Errors: a missing model or its sidecar, a missing video file/folder or TLS file, a state directory
    (outbox, evidence) that this user cannot create or write. Warnings: things that may be fine
    elsewhere (no /dev/videoN on this machine).
    """

    errors: list[str] = []
    warnings: list[str] = []
    model = cfg.model.path
    if not model.is_file():
        errors.append(f"model.path: {model} does not exist")
    elif not Path(f"{model}.json").is_file():
        errors.append(f"model.path: the metadata sidecar {model}.json is missing (copy it with the model)")
    errors += [f"model.trusted_keys: {k} does not exist" for k in cfg.model.trusted_keys if not k.is_file()]
    kind = cfg.source.kind if cfg.source.kind != "auto" else guess_kind(cfg.source.uri)
    if kind == "file" and not Path(cfg.source.uri).is_file():
        errors.append(f"source.uri: video file {cfg.source.uri} does not exist")
    elif kind == "folder" and not Path(cfg.source.uri).is_dir():
        errors.append(f"source.uri: image folder {cfg.source.uri} does not exist")
    elif kind == "usb":
        dev = Path(cfg.source.uri if cfg.source.uri.startswith("/dev/") else f"/dev/video{cfg.source.uri}")
        if cfg.source.uri.isdigit() or cfg.source.uri.startswith("/dev/"):
            if not dev.exists():
                warnings.append(f"source.uri: {dev} does not exist on this machine (no camera plugged in?)")
    if cfg.mqtt.tls.enabled:
        for key in ("ca_certs", "certfile", "keyfile"):
            val = getattr(cfg.mqtt.tls, key)
            if val is not None and not val.is_file():
                errors.append(f"mqtt.tls.{key}: {val} does not exist")
    why = _writable_dir(cfg.mqtt.outbox_path.parent)
    if why:
        errors.append(f"mqtt.outbox_path: {why}; set state_dir (or BOXINSPECT_STATE_DIR) to a writable directory")
    if cfg.evidence.enabled:
        why = _writable_dir(cfg.evidence.dir)
        if why:
            errors.append(f"evidence.dir: {why}; set state_dir (or BOXINSPECT_STATE_DIR) to a writable directory")
    return errors, warnings


# --------------------------------------------------------------------------------------------------
# Settings that cannot be misspelt, secrets from files, paths of sources
# --------------------------------------------------------------------------------------------------

# BOXINSPECT_ variables that are not config keys: read by the CLI (logging), training, the scripts and the tests.
OTHER_VARIABLES = frozenset({
    "BOXINSPECT_LOG_LEVEL", "BOXINSPECT_WEIGHTS", "BOXINSPECT_FEATURE_CACHE", "BOXINSPECT_PIP", "BOXINSPECT_MOSQUITTO",
    "BOXINSPECT_SCREENSHOT", "BOXINSPECT_FUZZ_CASES", "BOXINSPECT_FUZZ_IMAGES", "BOXINSPECT_FUZZ_RANDOM",
    "BOXINSPECT_FUZZ_REPORT", "BOXINSPECT_REQUIRE_CAMERAS",
})
OTHER_PREFIXES = ("BOXINSPECT_HISTORIAN_",)  # another program's settings (historian/config.py), not the daemon's
FILE_SUFFIX = "_FILE"  # BOXINSPECT_API__TOKEN_FILE=/run/secrets/api_token: the key's value is that file's content
DOCKER_SECRETS = Path("/run/secrets")


def _model_of(annotation: Any) -> type[BaseModel] | None:
    from typing import get_origin

    # (on Python 3.10 a generic alias such as list[str] passes isinstance(..., type))
    if isinstance(annotation, type) and get_origin(annotation) is None and issubclass(annotation, BaseModel):
        return annotation
    return None


def config_keys(model: type[BaseModel] = Config, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every key path of the config (sections too) -> its field's annotation."""
    out: dict[tuple[str, ...], Any] = {}
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        out[path] = field.annotation
        sub = _model_of(field.annotation)
        if sub is not None:
            out |= config_keys(sub, path)
    return out


def secret_keys() -> list[tuple[str, ...]]:
    """Keys whose value can come from a file: every secret (SecretStr) and every username beside one."""
    keys = config_keys()
    return [k for k, ann in keys.items() if "SecretStr" in str(ann) or (k[-1] == "username" and (*k[:-1], "password") in keys)]


def env_name(path: tuple[str, ...]) -> str:
    return ENV_PREFIX + ENV_NESTING.join(path).upper()


def check_env_names(environ: dict[str, str]) -> None:
    """ConfigError, one line per variable, for every ``BOXINSPECT_`` variable that names no key (nor a secret's
    ``_FILE``, nor one of :data:`OTHER_VARIABLES`): ``BOXINSPECT_API_TOKEN`` (one underscore) would otherwise be
    ignored and leave the API open. Empty variables count as unset, as everywhere."""
    import difflib

    known = {env_name(k) for k in config_keys()} | {env_name(k) + FILE_SUFFIX for k in secret_keys()} | OTHER_VARIABLES
    lines = []
    for var in sorted(v for v, value in environ.items() if v.upper().startswith(ENV_PREFIX) and value != ""):
        if var.upper() in known or var.upper().startswith(OTHER_PREFIXES):
            continue
        near = difflib.get_close_matches(var.upper(), known, n=1, cutoff=0.8)
        key = ".".join(var[len(ENV_PREFIX):].lower().split(ENV_NESTING))
        lines.append(f"{var}: unknown variable, no config key {key}"
                     + (f" (did you mean {near[0]}?)" if near else " (see deploy/config.example.yaml)")
                     + f" [from the environment: {var}]")
    if lines:
        raise ConfigError("\n".join(lines))


def _read_secret(path: Path, what: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{what}: cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    if not value:
        raise ConfigError(f"{what}: {path} is empty")
    return value


def secret_files(environ: dict[str, str], secrets_dirs: tuple[Path, ...] | None = None) -> dict[str, Any]:
    """Secrets from files, keyed like the YAML file: ``BOXINSPECT_<KEY>_FILE`` (a path), else a file named after
    the key (``api.token``, ``mqtt.password``, ``mqtt.username``, ``opcua.password``) in systemd's
    ``$CREDENTIALS_DIRECTORY`` (``LoadCredential=``) or in Docker's ``/run/secrets``. A variable with the value
    itself (``BOXINSPECT_API__TOKEN``) and its ``_FILE`` together are refused: which one wins would be a guess."""
    if secrets_dirs is None:
        creds = environ.get("CREDENTIALS_DIRECTORY", "")
        secrets_dirs = (*((Path(creds),) if creds else ()), DOCKER_SECRETS)
    out: dict[str, Any] = {}
    for key in secret_keys():
        var = env_name(key)
        file_var = next((v for v in environ if v.upper() == var + FILE_SUFFIX and environ[v] != ""), None)
        if file_var is not None:
            if environ.get(var):
                raise ConfigError(f"{var} and {file_var} are both set: keep one")
            value = _read_secret(Path(environ[file_var]), f"{file_var} ({'.'.join(key)})")
        else:
            found = next((d / ".".join(key) for d in secrets_dirs if (d / ".".join(key)).is_file()), None)
            if found is None or environ.get(var):
                continue  # the variable itself wins over a file nobody named
            value = _read_secret(found, ".".join(key))
        node = out
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = value
    return out


def duplicate_key(text: str) -> str | None:
    """The first key a YAML mapping names twice (``mqtt.port at line 7, also at line 4``), else None. YAML
    loaders keep the last one in silence; a config that says two things is refused instead."""
    def walk(node: yaml.Node, path: tuple[str, ...]) -> str | None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for k, v in node.value:
                name = str(k.value)
                if name in seen:
                    where = ".".join((*path, name))
                    return (f"duplicate key {where} at line {k.start_mark.line + 1}, also at line {seen[name]} "
                            f"(each key once: which one counts would be a guess)")
                seen[name] = k.start_mark.line + 1
                found = walk(v, (*path, name))
                if found:
                    return found
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                found = walk(item, (*path[:-1], f"{path[-1]}[{i}]") if path else (f"[{i}]",))
                if found:
                    return found
        return None

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    return walk(root, ()) if root is not None else None


def resolve_uri(uri: str, config_dir: Path, kind: str = "auto") -> str:
    """A source that is a local path (a video file or image folder) follows the rule of every input path:
    relative to the config file's folder. Camera indexes, /dev/videoN, URLs, GStreamer pipelines and GenICam
    camera names stay as they are."""

    u = uri.strip()
    if (kind if kind != "auto" else guess_kind(u)) not in ("file", "folder"):
        return uri
    if not u or u.isdigit() or "://" in u or u.startswith("/dev/") or Path(u).is_absolute():
        return uri
    return str(config_dir / u)
