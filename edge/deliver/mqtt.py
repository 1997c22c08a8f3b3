"""MQTT plumbing shared by everything that talks to the broker: one client factory, guarded callbacks,
and the trigger payload rule.

- ``make_client(cfg, client_id, ...)`` builds THE paho client from ``mqtt.*`` (protocol, client id, auth,
  TLS, reconnect backoff, in-flight window, last will). The daemon has one connection: the sink
  (edge/deliver/mqtt_sink.py) publishes on it and carries the subscriptions (``MqttSink.subscribe``), e.g. the
  trigger topic in triggered mode.
- ``CallbackGuard`` wraps every callback handed to paho. An exception in a callback would otherwise end
  paho's network thread (and with it publishing and every subscription, silently). A guarded callback's
  exception is caught, counted (``boxinspect_mqtt_callback_errors_total{callback}``), logged (rate-limited,
  with the traceback), reported by /readyz for ``CALLBACK_ERROR_READY_S``, and the owner re-subscribes.
- ``parse_trigger(payload)``: the accepted trigger formats (docs/EVENTS.md, "Triggers"); anything else raises
  ``TriggerRejected`` with a short reason (the metric label). ``TriggerListener`` is the subscription
  handler: rejected payloads are counted (``boxinspect_triggers_rejected_total{reason}``) and logged
  rate-limited, good ones are announced to the decider.
"""

from __future__ import annotations

import functools
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge.runtime.ratelimit import RateLimit

if TYPE_CHECKING:
    from edge.config import MqttConfig, TlsConfig
    from edge.runtime.metrics import Metrics

log = logging.getLogger(__name__)

MAX_TRIGGER_BYTES = 1024  # a part id is at most PART_ID_MAX characters; room for a few extra JSON fields
MAX_TRIGGER_DEPTH = 4  # JSON nesting allowed in a trigger object (checked before json.loads)
PART_ID_MAX = 200
CALLBACK_ERROR_READY_S = 60.0  # /readyz reports a crashed callback for this long after the last one

F = TypeVar("F", bound=Callable[..., Any])


class MqttSetupError(RuntimeError):
    """The MQTT client cannot be set up (bad TLS files, ...). The message names the config key."""


# --------------------------------------------------------------------------------------------------
# The client factory
# --------------------------------------------------------------------------------------------------


def make_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """System CAs unless ``ca_certs``; TLS >= 1.2; ``insecure`` skips the host name check, not the chain."""
    for key in ("ca_certs", "certfile", "keyfile"):
        p = getattr(tls, key)
        if p is not None and not p.is_file():
            raise MqttSetupError(f"mqtt.tls.{key}: file not found: {p}")
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_certs) if tls.ca_certs else None)
    except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
        raise MqttSetupError(f"mqtt.tls.ca_certs: cannot load {tls.ca_certs}: {e}") from None
    if tls.certfile is not None:
        try:
            ctx.load_cert_chain(str(tls.certfile), str(tls.keyfile) if tls.keyfile else None)
        except (OSError, ValueError) as e:
            raise MqttSetupError(f"mqtt.tls.certfile/keyfile: cannot load {tls.certfile}: {e}") from None
    elif tls.keyfile is not None:
        raise MqttSetupError("mqtt.tls.keyfile is set but mqtt.tls.certfile is not")
    if tls.insecure:
        ctx.check_hostname = False  # still verifies the chain, not the name
    return ctx


def make_client(
    cfg: MqttConfig,
    client_id: str,
    *,
    max_inflight: int,
    will: tuple[str, str] | None = None,
) -> tuple[mqtt.Client, ssl.SSLContext | None]:
    """The paho client for ``cfg``: MQTT 5 or 3.1.1 with a clean session, auth, TLS, reconnect backoff,
    paho's in-flight window, and a retained QoS 1 last will ``(topic, payload)``. Also returns the TLS
    context (None without TLS) for ``probe_reason``. Callbacks are not set here."""
    v5 = cfg.protocol == "5"
    kwargs: dict[str, Any] = {} if v5 else {"clean_session": True}
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        **kwargs,
    )
    client.max_inflight_messages_set(max_inflight)
    client.reconnect_delay_set(cfg.reconnect_min_s, max(cfg.reconnect_min_s, cfg.reconnect_max_s))  # type: ignore[arg-type]
    # Belt and braces: our callbacks are guarded (CallbackGuard); this keeps paho's loop alive even if one
    # is not.
    client.suppress_exceptions = True
    if cfg.username is not None:
        client.username_pw_set(cfg.username, cfg.password.get_secret_value() if cfg.password is not None else None)
    ssl_context = None
    if cfg.tls.enabled:
        ssl_context = make_ssl_context(cfg.tls)
        client.tls_set_context(ssl_context)
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    return client, ssl_context


def connect_async(client: mqtt.Client, cfg: MqttConfig) -> None:
    """Connect in the background (never blocks, also with no broker) and start paho's network thread."""
    kwargs: dict[str, Any] = {"clean_start": True} if cfg.protocol == "5" else {}
    client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s, **kwargs)
    client.loop_start()


def probe_reason(host: str, port: int, ssl_context: ssl.SSLContext | None) -> str:
    """paho swallows the OSError of a failed connect; one short attempt of our own recovers the reason."""
    try:
        with socket.create_connection((host, port), timeout=2.0) as sock:
            if ssl_context is None:
                return "TCP connect works now, the MQTT handshake failed"
            try:
                with ssl_context.wrap_socket(sock, server_hostname=host):
                    return "TCP and TLS work now, the MQTT handshake failed"
            except (OSError, ValueError) as e:  # ssl.SSLError, ssl.CertificateError
                return f"TLS handshake failed: {getattr(e, 'verify_message', None) or e}"
    except OSError as e:
        return e.strerror or str(e) or type(e).__name__


# --------------------------------------------------------------------------------------------------
# Guarded callbacks
# --------------------------------------------------------------------------------------------------


class CallbackGuard:
    """Catches what a paho callback raises, so paho's network thread (and with it the connection and its
    subscriptions) lives on. See the module docstring. ``on_crash(name)`` runs after a caught exception
    (guarded too): the sink re-subscribes there."""

    def __init__(self, metrics: Metrics | None = None, on_crash: Callable[[str], None] | None = None) -> None:
        self.metrics = metrics
        self.on_crash = on_crash
        self.errors = 0
        self.last_error: str | None = None
        self._last_at: float | None = None
        self._log = RateLimit()
        self._lock = threading.Lock()

    def wrap(self, name: str, fn: F) -> F:
        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except BaseException as e:  # RecursionError, MemoryError, ... must not kill paho
                if isinstance(e, (KeyboardInterrupt, SystemExit)):
                    raise
                self._crashed(name, e)
                return None

        return guarded  # type: ignore[return-value]

    def _crashed(self, name: str, e: BaseException) -> None:
        with self._lock:
            self.errors += 1
            self.last_error = f"{name}: {type(e).__name__}: {str(e)[:200]}"
            self._last_at = time.monotonic()
        if self.metrics is not None:
            self.metrics.mqtt_callback_errors.labels(callback=name).inc()
        emit, n = self._log.check(name)
        if emit:
            log.error("MQTT: callback %s crashed (%d so far%s); recovering", name, self.errors,
                      f", {n} not logged" if n else "", exc_info=e)
        if self.on_crash is not None:
            try:
                self.on_crash(name)
            except Exception:
                log.exception("MQTT: recovery after the crash of %s failed", name)

    def not_ready_reason(self) -> str | None:
        """Set for CALLBACK_ERROR_READY_S after a callback crashed, for /readyz."""
        with self._lock:
            if self._last_at is None or time.monotonic() - self._last_at > CALLBACK_ERROR_READY_S:
                return None
            ago = time.monotonic() - self._last_at
            return (f"a callback crashed {self.errors} time(s), last {ago:.0f} s ago ({self.last_error}); "
                    "re-subscribed, see the log")


# --------------------------------------------------------------------------------------------------
# Triggers
# --------------------------------------------------------------------------------------------------


class TriggerRejected(ValueError):
    """A trigger payload that is not one of the accepted formats. ``reason`` is the metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _json_depth(text: str) -> int:
    """Deepest ``[``/``{`` nesting outside strings; stops counting past MAX_TRIGGER_DEPTH."""
    depth = deepest = 0
    in_str = escaped = False
    for ch in text:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_TRIGGER_DEPTH:
                break
        elif ch in "]}":
            depth -= 1
    return deepest


def _part_id(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise TriggerRejected("bad_part_id", f"part_id must be a string or an integer, not {type(value).__name__}")
    pid = value.strip()
    if not 1 <= len(pid) <= PART_ID_MAX:
        raise TriggerRejected("bad_part_id", f"part_id must be 1-{PART_ID_MAX} characters, got {len(pid)}")
    if not pid.isprintable():
        raise TriggerRejected("bad_part_id", "part_id holds control characters")
    return pid


def parse_trigger(payload: bytes | bytearray) -> str | None:
    """A trigger message -> its part id (None: a trigger without one). Raises TriggerRejected.

    Accepted (docs/EVENTS.md): an empty payload; a JSON object with an optional ``part_id`` (string or
    integer; other keys are ignored); a JSON string or integer; plain text that is a part id (1-200
    printable characters, surrounding whitespace ignored). At most MAX_TRIGGER_BYTES bytes of UTF-8.
    """
    if len(payload) > MAX_TRIGGER_BYTES:
        raise TriggerRejected("too_large", f"{len(payload)} bytes; triggers are at most {MAX_TRIGGER_BYTES}")
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError as e:
        raise TriggerRejected("not_utf8", f"not UTF-8 ({e.reason} at byte {e.start})") from None
    if not text:
        return None
    if text[0] not in '{["-0123456789tfnNI':  # cannot be JSON: plain text
        return _part_id(text)
    if _json_depth(text) > MAX_TRIGGER_DEPTH:
        raise TriggerRejected("too_deep", f"JSON nested deeper than {MAX_TRIGGER_DEPTH} levels")
    try:
        data = json.loads(text)
    except RecursionError:  # not reachable after the depth check; never let it out of a callback anyway
        raise TriggerRejected("too_deep", "JSON nested too deep") from None
    except ValueError as e:
        if text[0] in '{["':
            raise TriggerRejected("bad_json", f"malformed JSON: {e}") from None
        return _part_id(text)  # e.g. 007, 12-A, false-start: plain text after all
    if isinstance(data, dict):
        return _part_id(data.get("part_id"))
    if isinstance(data, str) or (isinstance(data, int) and not isinstance(data, bool)):
        return _part_id(data)
    raise TriggerRejected("not_a_trigger", f"a JSON {type(data).__name__} is not a trigger")


@dataclass
class TriggerListener:
    """The handler of the trigger subscription: parse, count, announce. ``announce(part_id)`` -> accepted."""

    topic: str
    announce: Callable[[str | None], bool]
    metrics: Metrics | None = None

    def __post_init__(self) -> None:
        self._log = RateLimit()

    def __call__(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            if msg.retain:  # a stale retained trigger would announce a phantom part on every reconnect
                raise TriggerRejected(
                    "retained", "ignoring a retained message on the trigger topic (publish triggers without retain)"
                )
            part_id = parse_trigger(msg.payload)
        except TriggerRejected as e:
            self.rejected(e)
            return
        self.announce(part_id)

    def rejected(self, e: TriggerRejected) -> None:
        if self.metrics is not None:
            self.metrics.triggers_rejected.labels(reason=e.reason).inc()
        emit, n = self._log.check(e.reason)
        if emit:
            log.warning("trigger rejected on %s: %s%s", self.topic, e, f" ({n} more rejected)" if n else "")
