"""MQTT output of the daemon, with a store-and-forward outbox so no defect event is silently lost.

Topics (``<base>`` = ``<mqtt.base_topic>/<line>/<camera>``), see docs/EVENTS.md:

- ``<base>/defect``  QoS 1, not retained. Every defect event: written to the SQLite outbox
  (edge/deliver/outbox.py) first, published by the sender thread in ``seq`` order, marked
  acknowledged on PUBACK (kept for replay, see below).
  After a reconnect everything not yet acknowledged is sent again from the outbox, oldest first,
  so a subscriber can see an event twice (same ``event_id`` and ``seq``) but never loses one.
- ``<base>/result``  QoS 0, every decision, only if ``mqtt.publish_results``; dropped while offline.
- ``<base>/status``  retained ``online`` / ``offline``; ``offline`` is also the last will.
- ``<base>/model``   retained, QoS 1: the model in use (id, threshold, ...), sent on every connect and swap.
- ``<base>/stats``   QoS 0; the daemon calls ``publish_stats()`` every ``mqtt.stats_interval_s``
  (this module runs no timer of its own).

At send time the sink stamps two fields into the stored JSON: ``seq`` (the outbox sequence) and
``published_at`` (ISO 8601 UTC of this attempt; a resend carries a later one). The outbox keeps
the payload exactly as ``publish_defect()`` stored it.

Disk full (the outbox raises OutboxFull): the event is held in a bounded in-memory queue
(``mqtt.outbox_memory_max_events``) and, while connected, published directly (QoS 1, ``seq`` null),
counted in ``boxinspect_events_unstored{route}`` and logged. While events are held only in memory
``/readyz`` says not ready. When the queue is full the oldest held event is lost (counted as
``boxinspect_events_lost{reason="disk_full"}``, logged with its id); once the outbox stores again the
sink records the loss as a seq gap plus a ``lost`` notice on ``<base>/lost`` (docs/EVENTS.md).

Replay: with a retention window (``mqtt.outbox_retention_s``) acknowledged events stay in the outbox;
``replay(since_seq)`` re-publishes them with their original ``event_id`` and ``seq`` (token-protected
command topic ``<base>/replay`` and ``GET /events?since_seq=``).

Threads: paho's network thread (``loop_start``) runs the callbacks, which only enqueue events; one
sender thread owns the in-flight bookkeeping (mid -> seq), reads the outbox and publishes. QoS 1
messages are only handed to paho while connected, and paho's own in-memory copies of unacknowledged
messages are dropped on every (re)connect: the outbox is the single source of truth for resends.
"""

from __future__ import annotations

import collections
import hmac
import json
import logging
import queue
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from edge.deliver.mqtt import CallbackGuard, connect_async, make_client, probe_reason
from edge.deliver.outbox import Outbox, OutboxError, OutboxFull, Row
from edge.runtime.ratelimit import RateLimit
from edge.runtime.timeutil import iso_utc

if TYPE_CHECKING:
    from edge.config import MqttConfig
    from edge.runtime.metrics import Metrics

log = logging.getLogger(__name__)

STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"
DEFAULT_MAX_INFLIGHT = 20
LOG_REPEAT_S = 60.0  # a repeated connection problem is logged again at most this often
REPLAY_MAX = 1000  # events re-published per replay request (ask again from the last seq for more)
REPLAY_REQUEST_MAX_BYTES = 256
LOST_IDS_KEPT = 100  # event ids named in a `lost` notice


@dataclass(frozen=True)
class Topics:
    defect: str
    result: str
    status: str
    stats: str
    model: str = ""
    lost: str = ""
    replay: str = ""
    ok: str = ""  # OK decisions with mqtt.outbox_all_decisions

    @classmethod
    def for_base(cls, base: str) -> Topics:
        base = base.rstrip("/")
        return cls(
            f"{base}/defect", f"{base}/result", f"{base}/status", f"{base}/stats", f"{base}/model",
            f"{base}/lost", f"{base}/replay", f"{base}/ok",
        )


@dataclass(eq=False)
class _Held:
    """A defect event the outbox could not store (disk full): in memory until stored or acknowledged."""

    topic: str
    payload: bytes
    event_id: str


# Messages to the sender thread (paho's callbacks and the publishing API put them on its queue).
@dataclass(frozen=True)
class _Stored:
    """A defect event was written to the outbox."""


@dataclass(frozen=True)
class _Acked:
    """PUBACK (or a rejection) for paho message ``mid``."""

    mid: int
    reason_code: Any
    at: float = 0.0  # time.time() when paho reported it (for the end-to-end latency of `bench pipeline`)


@dataclass(frozen=True)
class _Connected:
    """Connected; at most ``window`` defect events may be in flight."""

    window: int


@dataclass(frozen=True)
class _Disconnected:
    """The connection is gone: everything in flight will be sent again."""


@dataclass(frozen=True)
class _Stop:
    """stop() was called."""


SenderMessage = _Stored | _Acked | _Connected | _Disconnected | _Stop


@dataclass
class _SenderState:
    """What the sender thread alone keeps between rounds."""

    window: int  # at most this many defect events in flight
    inflight: dict[int, int] = field(default_factory=dict)  # paho mid -> outbox seq
    direct: dict[int, _Held] = field(default_factory=dict)  # paho mid -> held event published without the outbox
    last_sent: int = 0  # highest seq handed to paho on this connection
    connected: bool = False
    retry_at: float | None = None  # after a rejected PUBACK: when to resend from the oldest row
    acked: list[int] = field(default_factory=list)  # PUBACKed seqs not yet deleted from the outbox
    disk_log: RateLimit = field(default_factory=lambda: RateLimit(LOG_REPEAT_S))
    reject_log: RateLimit = field(default_factory=lambda: RateLimit(LOG_REPEAT_S))


def _json_default(o: Any) -> Any:
    """Paths -> str, numpy scalars -> Python numbers, datetimes -> ISO 8601; anything else is an error."""
    if isinstance(o, PurePath):
        return str(o)
    if isinstance(o, datetime):
        return o.isoformat()
    item = getattr(o, "item", None)  # numpy scalar (np.float32, np.bool_, ...)
    if callable(item):
        return item()
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def _encode(obj: dict[str, Any]) -> bytes:
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False, default=_json_default).encode()
    except (ValueError, TypeError) as e:  # NaN / inf, unknown types
        raise ValueError(f"event {obj.get('event_id')} cannot be encoded as JSON: {e}") from None


def _stamp(payload: bytes, seq: int | None) -> bytes:
    """Add ``seq`` and ``published_at`` to a stored JSON object; anything else is sent unchanged."""
    try:
        obj = json.loads(payload)
    except ValueError:
        return payload
    if not isinstance(obj, dict):
        return payload
    obj["seq"] = seq
    obj["published_at"] = iso_utc()
    return json.dumps(obj, separators=(",", ":")).encode()


class MqttSink:
    """Publishes defect events (via the outbox), results, status and stats to one broker."""

    def __init__(
        self,
        cfg: MqttConfig,
        topic_base: str,
        metrics: Metrics | None = None,
        client_id: str | None = None,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        outbox: Outbox | None = None,
    ) -> None:
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be >= 1, got {max_inflight}")
        self.cfg = cfg
        self.topic_base = topic_base.rstrip("/")
        self.topics = Topics.for_base(self.topic_base)
        self.metrics = metrics
        self.max_inflight = max_inflight
        self.client_id = client_id or cfg.client_id or self.topic_base.replace("/", "-")
        self.broker = f"{cfg.host}:{cfg.port}"
        self._events: queue.SimpleQueue[SenderMessage] = queue.SimpleQueue()
        self._connected = threading.Event()
        self._drained = threading.Condition()
        self._inflight_n = 0
        self._started = False
        self._stopped = False
        self._stopping = False
        self._model_payload: bytes | None = None  # retained on <base>/model, re-sent on every connect
        self._sender: threading.Thread | None = None
        # Log lines of a flapping or absent broker: each kind at most once a minute (with a count).
        self._fail_log = RateLimit(LOG_REPEAT_S)
        self._down_log = RateLimit(LOG_REPEAT_S)
        self._up_log = RateLimit(LOG_REPEAT_S)
        # Every paho callback runs guarded: an exception is counted and logged, and we subscribe again.
        self._guard = CallbackGuard(metrics, on_crash=self._recover)
        self._subscriptions: dict[str, tuple[int, str]] = {}  # topic -> (qos, what)
        self._pending_subs: dict[int, str] = {}  # SUBSCRIBE mid -> topic, until the SUBACK
        # subscribe() may run on the caller's thread: the SUBACK (network thread) must not look up its mid
        # before it is recorded, or the subscription is never confirmed in the log
        self._subs_lock = threading.Lock()
        self._connect_failures = 0
        self._disconnected_at: float | None = None
        self.last_error: str | None = None
        self.published = 0  # PUBACKs received for defect events (this process)
        # called on the sender thread with (seq, time of the PUBACK) for each acknowledged defect event
        # (the daemon's trace for `boxinspect bench pipeline`; None = nothing extra per ack)
        self.on_acked: Callable[[int, float], None] | None = None
        self.failed = 0  # failed attempts (they stay in the outbox)
        self._ssl_context: ssl.SSLContext | None = None
        self._init_disk_full_state(cfg)
        self._client = self._make_client()  # config errors first, before the outbox is locked
        self.outbox = outbox or Outbox(
            cfg.outbox_path, cfg.outbox_max_events, cfg.outbox_overflow, metrics, retention_s=cfg.outbox_retention_s
        )
        if metrics is not None:
            metrics.mqtt_connected.set(0)

    def _init_disk_full_state(self, cfg: MqttConfig) -> None:
        """Disk full: events the outbox could not store, oldest first (bounded); losses not yet on disk."""
        self._held: collections.deque[_Held] = collections.deque()
        self._held_lock = threading.RLock()
        self._held_max = cfg.outbox_memory_max_events
        self._lost_pending = 0
        self._lost_ids: collections.deque[str] = collections.deque(maxlen=LOST_IDS_KEPT)
        self._storage_error: str | None = None
        self._storage_full = False
        self._held_log = RateLimit(LOG_REPEAT_S)
        self._replay_log = RateLimit(LOG_REPEAT_S)
        self._replay_token: bytes | None = None

    # -- setup ----------------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        # paho's window must be larger than ours (status messages use QoS 1 too), so it never
        # queues one of our defect messages in memory behind our back.
        client, self._ssl_context = make_client(
            self.cfg, self.client_id, max_inflight=self.max_inflight + 10, will=(self.topics.status, STATUS_OFFLINE)
        )
        g = self._guard.wrap
        client.on_connect = g("on_connect", self._on_connect)
        client.on_connect_fail = g("on_connect_fail", self._on_connect_fail)
        client.on_disconnect = g("on_disconnect", self._on_disconnect)
        client.on_publish = g("on_publish", self._on_publish)
        client.on_subscribe = g("on_subscribe", self._on_subscribe)
        client.on_message = g("on_message", self._on_unexpected_message)
        return client

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background (never blocks, also with no broker) and start sending."""
        if self._started:
            return
        self._started = True
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)
        self._sender.start()
        if not self.cfg.enabled:
            log.info("MQTT disabled (mqtt.enabled: false): defect events stay in the outbox %s", self.outbox.path)
            return
        connect_async(self._client, self.cfg)
        log.info(
            "MQTT: connecting to %s as %s (MQTT %s%s%s); outbox %s holds %d event(s)",
            self.broker, self.client_id, self.cfg.protocol, ", TLS" if self.cfg.tls.enabled else "",
            f", user {self.cfg.username}" if self.cfg.username else "", self.outbox.path, self.outbox.depth(),
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Send what can be sent within ``timeout``, publish ``offline`` and disconnect cleanly.

        Events still in the outbox afterwards are kept on disk and sent by the next start.
        """
        if self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + max(0.0, timeout)
        if not self._started:
            self.outbox.close()
            return
        if self.connected:
            # Keep a second for the offline message and the disconnect.
            self.wait_drained(max(0.0, deadline - time.monotonic() - 1.0))
        self._stopping = True
        self._events.put(_Stop())
        if self._sender is not None:
            self._sender.join(max(0.1, deadline - time.monotonic()))
        left = self.outbox.depth()
        if self.cfg.enabled:
            if self.connected:
                info = self._client.publish(self.topics.status, STATUS_OFFLINE, qos=1, retain=True)
                try:
                    info.wait_for_publish(max(0.1, min(1.0, deadline - time.monotonic())))
                except (RuntimeError, ValueError) as e:
                    log.debug("MQTT: offline status not confirmed: %s", e)
            self._client.disconnect()
            stopper = threading.Thread(target=self._client.loop_stop, name="mqtt-loop-stop", daemon=True)
            stopper.start()
            stopper.join(max(0.1, deadline - time.monotonic()))
        self._connected.clear()
        if self.metrics is not None:
            self.metrics.mqtt_connected.set(0)
        with self._held_lock:
            held = len(self._held)
        if held:
            log.error("MQTT: stopped with %d defect event(s) held in memory only (the outbox could not store them: "
                      "%s); they are LOST: %s", held, self._storage_error, ", ".join(h.event_id for h in self._held))
        if left:
            log.warning("MQTT: stopped with %d defect event(s) in the outbox %s; they are sent on the next start",
                        left, self.outbox.path)
        else:
            log.info("MQTT: stopped, outbox empty")
        self.outbox.close()

    def __enter__(self) -> MqttSink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- publishing -----------------------------------------------------------------------------
    def publish_defect(self, event: dict[str, Any]) -> int | None:
        """Store the event in the outbox (durably), then let the sender publish it. Returns its seq.

        Returns None if the outbox is full and ``mqtt.outbox_overflow`` is ``drop_newest`` (the loss is
        counted and logged), or if the outbox cannot store it (disk full): the event is then held in
        memory and published directly while connected (see the module doc). Raises ValueError if the
        event cannot be encoded as JSON (NaN scores).
        """
        ev = dict(event)
        if not ev.get("event_id"):
            ev["event_id"] = str(uuid.uuid4())
        ev.pop("seq", None)  # stamped at send time
        ev.pop("published_at", None)
        topic = self.topics.ok if ev.get("is_defect") is False and self.topics.ok else self.topics.defect
        item = _Held(topic, _encode(ev), str(ev["event_id"]))
        seq = None
        with self._held_lock:
            if self._held:  # keep the order: behind the events already waiting in memory
                self._hold(item)
            else:
                try:
                    seq = self._store(item)
                except OutboxError as e:
                    self._storage_failed(e)
                    self._hold(item)
        self._events.put(_Stored())
        return seq

    # -- disk full: events the outbox cannot store ------------------------------------------------
    def _store(self, item: _Held | None) -> int | None:
        """Put ``item`` into the outbox; first the `lost` notice for events lost while it could not store."""
        if self._lost_pending:
            n, ids, lost_id = self._lost_pending, list(self._lost_ids), str(uuid.uuid4())
            reason = "disk_full" if self._storage_full else "outbox_error"

            def notice(first: int) -> bytes:
                return json.dumps({
                    "kind": "lost", "event_id": lost_id, "count": n, "first_seq": first, "last_seq": first + n - 1,
                    "reason": reason, "event_ids": ids, "topic": self.topics.defect, "recorded_at": iso_utc(),
                }, separators=(",", ":")).encode()

            self.outbox.put(self.topics.lost, notice, lost_id, gap=n)
            log.error("MQTT: recorded %d lost defect event(s) (%s) as a seq gap and a notice on %s",
                      n, reason, self.topics.lost)
            self._lost_pending = 0
            self._lost_ids.clear()
        return None if item is None else self.outbox.put(item.topic, item.payload, item.event_id)

    def _storage_failed(self, err: OutboxError) -> None:
        self._storage_error = str(err)
        self._storage_full = isinstance(err, OutboxFull)

    def _hold(self, item: _Held) -> None:
        """Keep an event the outbox could not store in memory (bounded: the oldest is lost)."""
        reason = "disk_full" if self._storage_full else "outbox_error"
        if len(self._held) >= self._held_max:
            old = self._held.popleft()
            self._lost_pending += 1
            self._lost_ids.append(old.event_id)
            if self.metrics is not None:
                self.metrics.events_lost.labels(reason=reason).inc()
            log.error(
                "DEFECT EVENT LOST: %s (%s: the outbox cannot store and %d event(s) already wait in memory, "
                "mqtt.outbox_memory_max_events); consumers will see a seq gap and a notice on %s",
                old.event_id, "disk full" if self._storage_full else "outbox error", self._held_max, self.topics.lost,
            )
        self._held.append(item)
        route = "direct" if self.connected else "memory"
        if self.metrics is not None:
            self.metrics.events_unstored.labels(route=route).inc()
        emit, n = self._held_log.check(route)
        if emit:
            what = "disk full" if self._storage_full else "cannot store"
            how = ("publishing it directly (broker connected, seq null)" if route == "direct" else
                   f"holding it in memory ({len(self._held)} of at most {self._held_max}) until the disk has room "
                   "or the broker is back; /readyz says not ready")
            log.error("outbox %s: %s, defect event %s not stored; %s (%s)%s", self.outbox.path, what, item.event_id,
                      how, self._storage_error, f" ({n} more since the last line)" if n else "")

    def _flush_held(self) -> None:
        """Sender phase 0: once the outbox stores again, move held events (and the loss record) into it."""
        with self._held_lock:
            if not self._held and not self._lost_pending:
                return
            try:
                if not self._held:
                    self._store(None)
                while self._held:
                    self._store(self._held[0])
                    self._held.popleft()
            except OutboxError as e:
                self._storage_failed(e)
                return
            log.warning("outbox %s stores again; the events held in memory are on disk now", self.outbox.path)
            self._storage_error, self._storage_full = None, False

    # -- replay -----------------------------------------------------------------------------------
    def replay(self, since_seq: int, limit: int = REPLAY_MAX) -> list[Row]:
        """Re-publish (QoS 1, original ``event_id`` and ``seq``) every event still in the outbox with seq > since_seq:
        waiting ones and acknowledged ones within ``mqtt.outbox_retention_s``. At most ``REPLAY_MAX`` per call.
        Returns the rows (published only while connected)."""
        rows = self.outbox.since(max(0, int(since_seq)), max(1, min(int(limit), REPLAY_MAX)))
        sent = 0
        if self.connected and not self._stopping:
            for row in rows:
                if self._client.publish(row.topic, _stamp(row.payload, row.seq), qos=1).rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                    sent += 1
        log.info("replay since seq %d: %d event(s) in the outbox, %d re-published", since_seq, len(rows), sent)
        return rows

    def republish(self, rows: list[Row]) -> int:
        """Issue 24: re-publish rows read elsewhere (edge/deliver/replay.py's reader), as ``replay`` does; -> how many sent."""
        sent = 0
        if self.connected and not self._stopping:
            for row in rows:
                if self._client.publish(row.topic, _stamp(row.payload, row.seq), qos=1).rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                    sent += 1
        return sent

    def enable_replay(self, token: str | None) -> None:
        """Accept replay requests on ``<base>/replay``: ``{"since_seq": N, "token": "<api.token>"}``. Without a
        token configured MQTT replay stays off (anyone on the broker could flood the line with replays)."""
        if not token:
            log.info("MQTT replay on %s is off: it needs api.token (GET /events?since_seq= still replays)", self.topics.replay)
            return
        self._replay_token = token.encode()
        self.subscribe(self.topics.replay, self._on_replay_request, "replay requests")

    def _on_replay_request(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        since, problem = None, None
        if len(msg.payload) > REPLAY_REQUEST_MAX_BYTES:
            problem = "too large"
        else:
            try:
                req = json.loads(msg.payload)
            except (ValueError, RecursionError):
                req = None
            if not isinstance(req, dict) or not isinstance(req.get("since_seq"), int) or isinstance(req.get("since_seq"), bool):
                problem = 'not {"since_seq": <int>, "token": "..."}'
            elif not isinstance(req.get("token"), str) or self._replay_token is None or not hmac.compare_digest(
                req["token"].encode(), self._replay_token
            ):
                problem = "missing or wrong token"
            else:
                since = int(req["since_seq"])
        if problem is not None or since is None:
            emit, n = self._replay_log.check(problem or "bad")
            if emit:
                log.warning("replay request on %s refused: %s%s", msg.topic, problem, f" ({n} more)" if n else "")
            return
        try:
            self.replay(since)
        except OutboxError as e:
            log.error("replay since seq %d failed: %s", since, e)

    def publish_result(self, event: dict[str, Any]) -> bool:
        """Every decision at QoS 0 on ``<base>/result`` if ``mqtt.publish_results``. False if not sent."""
        if not self.cfg.publish_results:
            return False
        ev = dict(event)
        ev.pop("seq", None)
        ev["published_at"] = iso_utc()
        try:
            payload = _encode(ev)
        except ValueError as e:  # telemetry: report, never stop the caller
            log.warning("MQTT: result not published: %s", e)
            return False
        return self._publish_qos0(self.topics.result, payload)

    def publish_stats(self, stats: dict[str, Any]) -> bool:
        """Publish a stats document at QoS 0 on ``<base>/stats`` (adds ``published_at``). False if not sent."""
        doc = dict(stats)
        doc.setdefault("published_at", iso_utc())
        return self._publish_qos0(self.topics.stats, json.dumps(doc, separators=(",", ":"), default=str).encode())

    def publish_model(self, info: dict[str, Any]) -> bool:
        """Retain ``info`` (the model in use) on ``<base>/model``; sent now if connected and on every connect."""
        self._model_payload = json.dumps(info, separators=(",", ":"), default=str).encode()
        return self.publish(self.topics.model, self._model_payload, qos=1, retain=True)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        """A message outside the outbox (reject commands, alarms, discovery): sent only while connected.
        False if not handed to the client (offline, stopping)."""
        if not self.connected or self._stopping:
            return False
        return self._client.publish(topic, payload, qos=qos, retain=retain).rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def _publish_qos0(self, topic: str, payload: bytes) -> bool:
        if not self.connected or self._stopping:
            return False
        return self._client.publish(topic, payload, qos=0).rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    # -- state ----------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def outbox_depth(self) -> int:
        return self.outbox.depth()

    @property
    def inflight(self) -> int:
        return self._inflight_n

    def wait_drained(self, timeout: float) -> bool:
        """Wait until every stored defect event is acknowledged. True if the outbox is empty."""
        with self._drained:
            return self._drained.wait_for(lambda: self.outbox.depth() == 0, timeout=max(0.0, timeout))

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def status(self) -> dict[str, Any]:
        """A JSON-able summary for /status and logs."""
        with self._held_lock:
            held, lost_pending = len(self._held), self._lost_pending
        lost = self.outbox.lost + lost_pending
        return {
            "outbox_lost": lost,
            "held_in_memory": held,
            "storage_error": self._storage_error,
            "broker": self.broker,
            "client_id": self.client_id,
            "connected": self.connected,
            "outbox_depth": self.outbox.depth(),
            "outbox_dropped": self.outbox.dropped + lost,  # every loss: overflow and disk full
            "outbox_oldest_age_s": None if self.outbox.closed else self.outbox.oldest_age(),
            "inflight": self._inflight_n,
            "published": self.published,
            "failed": self.failed,
            "connect_failures": self._connect_failures,
            "callback_errors": self._guard.errors,
            "last_callback_error": self._guard.last_error,
            "last_error": self.last_error,
        }

    # -- paho callbacks (network thread: keep them short) ---------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.last_error = f"broker refused the connection: {reason_code}"
            emit, n = self._fail_log.check(f"refused:{reason_code}")
            if emit:
                log.error(
                    "MQTT: broker %s refused the connection: %s (check mqtt.username / mqtt.password / client id); "
                    "retrying with backoff, %d defect event(s) kept in the outbox%s",
                    self.broker, reason_code, self.outbox.depth(), f" ({n} more refusals)" if n else "",
                )
            return
        # Our outbox is the only resend queue: forget paho's in-memory copies from the last connection.
        client.drop_out_messages()
        outage = "" if self._disconnected_at is None else f" after {time.monotonic() - self._disconnected_at:.1f}s offline"
        emit, n = self._up_log.check("up")
        log.log(
            logging.INFO if emit else logging.DEBUG,
            "MQTT: connected to %s%s; %d defect event(s) to send%s",
            self.broker, outage, self.outbox.depth(), f" ({n} more reconnects)" if n else "",
        )
        self._connect_failures = 0
        self._disconnected_at = None
        self._connected.set()
        if self.metrics is not None:
            self.metrics.mqtt_connected.set(1)
        client.publish(self.topics.status, STATUS_ONLINE, qos=1, retain=True)
        if self._model_payload is not None:
            client.publish(self.topics.model, self._model_payload, qos=1, retain=True)
        # MQTT 5: never exceed the broker's Receive Maximum (paho does not enforce it).
        receive_max = getattr(properties, "ReceiveMaximum", None)
        window = min(self.max_inflight, int(receive_max)) if receive_max else self.max_inflight
        self._events.put(_Connected(window))
        self._subscribe_all(client)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._connect_failures += 1
        if self._disconnected_at is None:
            self._disconnected_at = time.monotonic()
        emit, n = self._fail_log.check("connect_fail")
        if emit:
            reason = probe_reason(self.cfg.host, self.cfg.port, self._ssl_context)
            self.last_error = f"cannot connect: {reason}"
            log.warning(
                "MQTT: cannot connect to %s: %s; retrying every %g-%gs, %d defect event(s) kept in the outbox%s",
                self.broker, reason, self.cfg.reconnect_min_s, self.cfg.reconnect_max_s, self.outbox.depth(),
                f" ({n} more failed attempts)" if n else "",
            )

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if self.metrics is not None:
            self.metrics.mqtt_connected.set(0)
        self._events.put(_Disconnected())
        if not was_connected or self._stopping:
            return
        self._disconnected_at = time.monotonic()
        by = "broker sent DISCONNECT" if getattr(flags, "is_disconnect_packet_from_server", False) else "connection lost"
        self.last_error = f"disconnected: {reason_code} ({by})"
        emit, n = self._down_log.check(f"disconnect:{reason_code}")
        if emit:
            log.warning(
                "MQTT: disconnected from %s: %s (%s); reconnecting, defect events wait in the outbox%s",
                self.broker, reason_code, by, f" ({n} more)" if n else "",
            )

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        self._events.put(_Acked(mid, reason_code, time.time()))

    # -- subscriptions (e.g. triggers): on the same connection, renewed on every connect ----------
    def subscribe(
        self, topic: str, handler: Callable[[mqtt.Client, Any, mqtt.MQTTMessage], None], what: str = "messages", qos: int = 1
    ) -> None:
        """Deliver messages on ``topic`` to ``handler`` (guarded: an exception is caught, counted and logged,
        and the subscriptions are renewed). ``what`` names them in the log once the broker confirmed the
        subscription ("listening for <what> on <topic>"). Call before or after ``start()``."""
        self._subscriptions[topic] = (qos, what)
        self._client.message_callback_add(topic, self._guard.wrap(f"on_message:{topic}", handler))
        if self.connected:
            self._subscribe_all(self._client)

    def _subscribe_all(self, client: mqtt.Client) -> None:
        for topic, (qos, _) in list(self._subscriptions.items()):
            with self._subs_lock:
                rc, mid = client.subscribe(topic, qos=qos)
                if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
                    self._pending_subs[mid] = topic
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
                log.warning("MQTT: subscribing to %s failed: %s; again on the next connect", topic, mqtt.error_string(rc))

    def _recover(self, callback: str) -> None:
        """After a callback crashed (CallbackGuard): finish what a crashed on_connect skipped, and renew every
        subscription (the broker keeps them on a live connection, but a crash may have come before them)."""
        client = self._client
        if not client.is_connected():
            return  # the next on_connect does it all
        if callback == "on_connect" and not self._connected.is_set():
            self._connected.set()
            if self.metrics is not None:
                self.metrics.mqtt_connected.set(1)
            client.publish(self.topics.status, STATUS_ONLINE, qos=1, retain=True)
            self._events.put(_Connected(self.max_inflight))
        self._subscribe_all(client)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        with self._subs_lock:
            topic = self._pending_subs.pop(mid, None)
        if topic is None:
            return
        failed = [rc for rc in reason_codes if getattr(rc, "is_failure", False)]
        if failed:
            self.last_error = f"broker refused the subscription to {topic}: {failed[0]}"
            log.error("MQTT: broker refused the subscription to %s: %s (check its ACL)", topic, failed[0])
        else:
            log.info("listening for %s on %s", self._subscriptions.get(topic, (0, "messages"))[1], topic)

    def _on_unexpected_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        log.debug("MQTT: message on %s matches no subscription; ignored", msg.topic)

    def not_ready_reason(self) -> str | None:
        """Why delivery is not healthy: events held in memory only (disk full), or a callback crashed lately."""
        with self._held_lock:
            held = len(self._held)
        if held:
            what = "disk full" if self._storage_full else "outbox cannot store"
            return (f"outbox: {what}: {held} defect event(s) held in memory only (at most {self._held_max}), "
                    f"{'being published directly' if self.connected else 'broker away'}")
        return self._guard.not_ready_reason()

    # -- sender thread --------------------------------------------------------------------------
    def _send_loop(self) -> None:
        try:
            self._send_loop_inner()
        except Exception:  # the outbox keeps everything; make the failure loud
            log.exception("MQTT: sender thread died; defect events stay in the outbox %s", self.outbox.path)
            self.last_error = "sender thread died (see log)"

    def _send_loop_inner(self) -> None:
        st = _SenderState(window=self.max_inflight)
        while True:
            stop = self._apply_messages(st, self._next_batch())
            if not stop:
                self._flush_held()
                # new events go out before the acknowledged ones are deleted: that delete is a transaction with
                # an fsync and must not delay a defect event that is waiting (rows acked but not yet deleted
                # are skipped by _send_pending)
                self._send_pending(st)
                self._send_held(st)
            self._delete_acked(st)
            self._inflight_n = len(st.inflight)
            if stop:
                with self._drained:
                    self._drained.notify_all()
                return

    def _next_batch(self) -> list[SenderMessage]:
        """Whatever is queued, after waiting at most half a second for the first message."""
        try:
            batch = [self._events.get(timeout=0.5)]
        except queue.Empty:
            batch = []
        while True:
            try:
                batch.append(self._events.get_nowait())
            except queue.Empty:
                return batch

    def _apply_messages(self, st: _SenderState, batch: list[SenderMessage]) -> bool:
        """Phase 1: PUBACKs, (dis)connects and stop update the sender's state. True on stop."""
        stop = False
        for ev in batch:
            if isinstance(ev, _Acked):
                held = st.direct.pop(ev.mid, None)
                if held is not None:
                    self._direct_acked(held, ev.reason_code)
                    continue
                seq = st.inflight.pop(ev.mid, None)
                if seq is None:
                    continue  # a status/result/stats message, or from an older connection
                if getattr(ev.reason_code, "is_failure", False):
                    self._rejected(st, seq, ev.reason_code)
                else:
                    st.acked.append(seq)
                    if self.on_acked is not None:
                        self.on_acked(seq, ev.at)
            elif isinstance(ev, _Connected):
                st.connected, st.last_sent, st.retry_at, st.window = True, 0, None, ev.window
                st.inflight.clear()
                st.direct.clear()
            elif isinstance(ev, _Disconnected):
                if st.inflight:
                    self._count_failed(len(st.inflight))
                st.connected, st.last_sent = False, 0
                st.inflight.clear()
                st.direct.clear()
            elif isinstance(ev, _Stop):
                stop = True
        return stop

    def _rejected(self, st: _SenderState, seq: int, rc: Any) -> None:
        self._count_failed(1)
        self.last_error = f"broker rejected defect event seq {seq}: {rc}"
        emit, n = st.reject_log.check(str(rc))
        if emit:
            log.warning(
                "MQTT: broker rejected defect event seq %d: %s (check the broker's ACL for %s); "
                "kept in the outbox, retried every %gs%s",
                seq, rc, self.topics.defect, self.cfg.reconnect_max_s, f" ({n} more rejections)" if n else "",
            )
        if st.retry_at is None:
            st.retry_at = time.monotonic() + self.cfg.reconnect_max_s

    def _direct_acked(self, held: _Held, rc: Any) -> None:
        if getattr(rc, "is_failure", False):
            self._count_failed(1)
            return  # still held: sent again on the next round
        with self._held_lock:
            try:
                self._held.remove(held)
            except ValueError:
                return  # stored in the meantime: it goes out (again) from the outbox
        self.published += 1
        if self.metrics is not None:
            self.metrics.events_published.inc()
        log.info("defect event %s published directly (outbox cannot store) and acknowledged", held.event_id)

    def _send_held(self, st: _SenderState) -> None:
        """Phase 4: while connected, publish held (unstored) events directly, oldest first, within the window."""
        if not st.connected or not self._client.is_connected() or self._stopping:
            return
        with self._held_lock:
            busy = {id(h) for h in st.direct.values()}
            todo = [h for h in self._held if id(h) not in busy]
        for h in todo:
            if len(st.inflight) + len(st.direct) >= st.window:
                break
            info = self._client.publish(h.topic, _stamp(h.payload, None), qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._count_failed(1)
                break
            st.direct[info.mid] = h

    def _count_failed(self, n: int) -> None:
        self.failed += n
        if self.metrics is not None:
            self.metrics.events_failed.inc(n)

    def _delete_acked(self, st: _SenderState) -> None:
        """Phase 2: acknowledged events leave the outbox (kept for the next round if the delete fails)."""
        if not st.acked:
            return
        try:
            self.outbox.ack_many(st.acked)
        except OutboxError as e:  # keep the seqs and try again; worst case a duplicate later
            if st.disk_log.check("ack")[0]:
                log.error("MQTT: %s; will retry", e)
            return
        self.published += len(st.acked)
        if self.metrics is not None:
            self.metrics.events_published.inc(len(st.acked))
        st.acked = []
        with self._drained:
            self._drained.notify_all()

    def _send_pending(self, st: _SenderState) -> None:
        """Phase 3: while connected, hand the next stored events to paho in seq order, within the window."""
        if st.retry_at is not None and time.monotonic() >= st.retry_at:
            st.last_sent, st.retry_at = 0, None
        if not st.connected or not self._client.is_connected() or self._stopping:
            return
        room = st.window - len(st.inflight)
        if room <= 0:
            return
        busy = set(st.inflight.values()) | set(st.acked)
        try:
            rows = self.outbox.pending(after_seq=st.last_sent, limit=room + len(busy))
        except OutboxError as e:
            if st.disk_log.check("read")[0]:
                log.error("MQTT: %s; will retry", e)
            return
        for row in rows:
            if row.seq in busy:
                continue
            if len(st.inflight) >= st.window:
                break
            info = self._client.publish(row.topic, _stamp(row.payload, row.seq), qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                # Lost the connection between the check and the call; paho's copy is dropped on
                # the next connect and the row is sent again from the outbox.
                self._count_failed(1)
                log.debug("MQTT: publish of seq %d failed: %s", row.seq, mqtt.error_string(info.rc))
                break
            st.inflight[info.mid] = row.seq
            st.last_sent = row.seq
