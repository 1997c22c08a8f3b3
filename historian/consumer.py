"""The historian worker: MQTT 5 shared subscription in, PostgreSQL rows out, acknowledged after the commit.

Threads:
- paho's network thread: ``on_message`` only queues the message (manual ack: paho sends no PUBACK);
- the writer: takes up to ``batch_max`` messages, parses them, writes them in ONE transaction, and only after
  the commit sends their PUBACKs (in arrival order). While PostgreSQL is down it keeps its batch and retries
  with backoff; it takes nothing new, so at most ``broker.receive_maximum`` messages are unacknowledged and the
  broker holds the rest (in this worker's persistent session, or for the other workers of the share group);
  the daemons keep theirs in their outboxes;
- the gap checker: at start and every ``gap_check_s``, per configured daemon, finds the seqs missing from
  the table and asks the daemon's ``/events`` replay for them; what the outbox no longer has is recorded in
  ``lost_ranges`` (``not_replayable``). It also makes the time partitions ahead.

A PUBACK belongs to the connection that delivered the message: after a reconnect the broker sends unacknowledged
messages again (same session), so an ack left over from the old connection is not sent (its packet id may name
another message by now); the resent copy is written (a duplicate: no new row) and acknowledged.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.deliver.mqtt import make_client
from historian import replay
from historian.config import HistorianConfig
from historian.evidence import S3Uploader, crop_url
from historian.metrics import HistorianMetrics
from historian.records import DECISION_TOPICS, BadMessage, Record, decision, parse
from historian.records import LostNotice as LostNoticeRec
from historian.store import BatchRefused, DatabaseDown, Store, WriteResult

log = logging.getLogger(__name__)

SHARED_KINDS = (*DECISION_TOPICS, "lost", "feedback")
PER_WORKER_KINDS = ("model", "alarm")  # retained and rare: every worker gets them (no retained copy on a share)


@dataclass(frozen=True)
class Message:
    generation: int  # the connection that delivered it
    mid: int
    qos: int
    topic: str
    payload: bytes


def subscriptions(cfg: HistorianConfig) -> list[tuple[str, int]]:
    base, group = cfg.broker.base_topic.rstrip("/"), cfg.broker.share_group
    return ([(f"$share/{group}/{base}/+/+/{k}", 1) for k in SHARED_KINDS]
            + [(f"{base}/+/+/{k}", 1) for k in PER_WORKER_KINDS])


class Historian:
    def __init__(self, cfg: HistorianConfig, metrics: HistorianMetrics | None = None,
                 store_factory: Callable[[], Store] | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics or HistorianMetrics()
        db = cfg.database
        self.store_factory = store_factory or (lambda: Store(db.url.get_secret_value(), db.partition, db.partitions_ahead,
                                                             db.connect_timeout_s))
        self.queue: queue.Queue[Message] = queue.Queue()
        self.generation = 0
        self.connected = threading.Event()
        self.db_up = threading.Event()
        self._stop = threading.Event()
        self._wake_gaps = threading.Event()
        self.schema_ready = threading.Event()
        self._down_since: float | None = None
        self.written = WriteResult()  # running totals
        self.acked = 0
        self.failed = False  # a thread died: the process exits non-zero
        self.uploader: S3Uploader | None = None
        self.client = self._make_client()
        self._threads = [threading.Thread(target=self._guard, args=(self._writer,), name="historian-writer", daemon=True),
                         threading.Thread(target=self._guard, args=(self._gap_loop,), name="historian-gaps", daemon=True)]

    # -- MQTT ---------------------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        client, _ = make_client(self.cfg.broker.edge_mqtt(), self.cfg.client_id(), max_inflight=20)
        client.manual_ack_set(True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("MQTT: broker %s:%d refused the connection: %s", self.cfg.broker.host, self.cfg.broker.port, reason_code)
            return
        self.generation += 1
        resumed = bool(getattr(flags, "session_present", False))
        log.info("MQTT: connected to %s:%d as %s (session %s); subscribing", self.cfg.broker.host, self.cfg.broker.port,
                 self.cfg.client_id(), "resumed" if resumed else "new")
        client.subscribe(subscriptions(self.cfg))
        self.connected.set()
        self.metrics.mqtt_connected.set(1)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if self.connected.is_set() and not self._stop.is_set():
            log.warning("MQTT: disconnected (%s); reconnecting, unacknowledged messages will come again", reason_code)
        self.connected.clear()
        self.metrics.mqtt_connected.set(0)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.queue.put(Message(self.generation, msg.mid, msg.qos, msg.topic, bytes(msg.payload)))
        self.metrics.received.inc()

    # -- life cycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        b = self.cfg.broker
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = b.session_expiry_s
        props.ReceiveMaximum = b.receive_maximum
        self.client.connect_async(b.host, b.port, keepalive=b.keepalive_s, clean_start=False, properties=props)
        self.client.loop_start()
        if self.cfg.evidence.mode == "s3":
            self.uploader = S3Uploader(self.cfg, self.store_factory)
            self.uploader.start()
        for t in self._threads:
            t.start()

    def request_stop(self) -> None:
        """Ask ``run_forever`` to stop (safe from a signal handler); it then stops as ``stop`` does."""
        self._stop.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking messages, finish the batch in hand (its acks too), disconnect; the session stays."""
        self._stop.set()
        self._wake_gaps.set()
        for t in self._threads:
            t.join(timeout)
        self.client.disconnect()
        self.client.loop_stop()
        if self.uploader is not None:
            self.uploader.stop()
        log.info("historian stopped: %d rows written, %d duplicates, %d acknowledged", self.written.inserted,
                 self.written.duplicates, self.acked)

    def run_forever(self) -> None:
        self.start()
        try:
            while not self._stop.wait(1.0):
                pass
        finally:
            self.stop()

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.exception("historian: thread %s died; stopping (unacknowledged messages stay with the broker)",
                          threading.current_thread().name)
            self.failed = True
            self._stop.set()

    # -- the writer -----------------------------------------------------------------------------------
    def _next_batch(self) -> list[Message]:
        try:
            batch = [self.queue.get(timeout=0.5)]
        except queue.Empty:
            return []
        while len(batch) < self.cfg.batch_max:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _writer(self) -> None:
        store = self.store_factory()
        delay = self.cfg.database.retry_min_s
        while not self._stop.is_set() and not self.schema_ready.wait(0.5):
            pass  # the gap thread applies the migrations first
        while not self._stop.is_set():
            batch = self._next_batch()
            if not batch:
                continue
            records, rejected = self._parse(batch)
            while True:
                try:
                    started = time.monotonic()
                    res = store.write(records, rejected, lambda d: crop_url(self.cfg, d))
                    break
                except BatchRefused as e:  # one row the database refuses: write them one by one
                    log.warning("batch refused (%s); writing its %d message(s) one by one", e, len(batch))
                    res = self._write_singly(store, batch)
                    break
                except DatabaseDown as e:
                    self._db_down(str(e), len(batch))
                    if self._stop.wait(delay):
                        return  # stopping with the batch unwritten: not acknowledged, the broker sends it again
                    delay = min(delay * 2, self.cfg.database.retry_max_s)
            delay = self.cfg.database.retry_min_s
            self._db_back()
            self.metrics.batch_seconds.observe(time.monotonic() - started)
            self._count(res, len(rejected))
            self._ack(batch)
            self._offer_evidence(res)
        store.close()

    def _offer_evidence(self, res: WriteResult) -> None:
        """The crops of the rows just committed (from MQTT or a replay) to the S3 uploader, if there is one."""
        if self.uploader is not None:
            for d in res.new_decisions:
                self.uploader.offer(d)

    def _write_singly(self, store: Store, batch: list[Message]) -> WriteResult:
        total = WriteResult()
        for m in batch:
            records, rejected = self._parse([m])
            try:
                res = store.write(records, rejected, lambda d: crop_url(self.cfg, d))
            except BatchRefused as e:
                res = store.write((), [(m.topic, m.payload, f"refused by the database: {e}")])
            total.inserted += res.inserted
            total.duplicates += res.duplicates
            total.others += res.others
            total.new_decisions += res.new_decisions
        return total

    def _parse(self, batch: list[Message]) -> tuple[list[Record], list[tuple[str, bytes, str]]]:
        records: list[Record] = []
        rejected: list[tuple[str, bytes, str]] = []
        for m in batch:
            try:
                rec = parse(m.topic, m.payload)
            except BadMessage as e:
                log.warning("message on %s not stored as a row (%s); kept in rejected_messages", m.topic, e)
                rejected.append((m.topic, m.payload, str(e)))
                continue
            if isinstance(rec, LostNoticeRec):
                log.error("daemon %s/%s lost %d event(s) (seq %d-%d, %s): recorded", rec.line, rec.camera,
                          rec.last_seq - rec.first_seq + 1, rec.first_seq, rec.last_seq, rec.reason)
            records.append(rec)
        return records, rejected

    def _db_down(self, why: str, held: int) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.error("%s; holding %d message(s) unacknowledged and taking no more until it is back "
                      "(the broker and the daemons' outboxes keep the rest)", why, held)
        self.db_up.clear()
        self.metrics.db_up.set(0)

    def _db_back(self) -> None:
        if not self.db_up.is_set():
            if self._down_since is not None:
                log.warning("PostgreSQL is back after %.1f s; writing and acknowledging again",
                            time.monotonic() - self._down_since)
            self._down_since = None
            self.db_up.set()
            self.metrics.db_up.set(1)
            self._wake_gaps.set()

    def _count(self, res: WriteResult, rejected: int) -> None:
        w = self.written
        w.inserted += res.inserted
        w.duplicates += res.duplicates
        w.others += res.others
        self.metrics.inserted.inc(res.inserted)
        self.metrics.duplicates.inc(res.duplicates)
        self.metrics.rejected.inc(rejected)

    def _ack(self, batch: list[Message]) -> None:
        gen = self.generation
        for m in batch:
            if m.qos == 0:
                continue
            if m.generation != gen:
                continue  # delivered on an older connection: the broker sends it again on this one
            rc = self.client.ack(m.mid, m.qos)
            if rc == mqtt.MQTT_ERR_SUCCESS:
                self.acked += 1
                self.metrics.acked.inc()

    # -- gaps ------------------------------------------------------------------------------------------
    def _gap_loop(self) -> None:
        store = self.store_factory()
        migrated, last_partitions = False, 0.0
        while not self._stop.is_set():
            try:
                if not migrated:
                    applied = store.migrate()
                    migrated, last_partitions = True, time.monotonic()
                    self.schema_ready.set()
                    if applied:
                        log.info("schema: applied migration(s) %s", applied)
                if time.monotonic() - last_partitions > 3600:
                    store.ensure_partitions()
                    last_partitions = time.monotonic()
                self.check_gaps(store)
            except DatabaseDown as e:
                log.debug("gap check skipped: %s", e)
                self._wake_gaps.wait(self.cfg.database.retry_max_s)
                self._wake_gaps.clear()
                continue
            self._wake_gaps.wait(self.cfg.gap_check_s)
            self._wake_gaps.clear()
        store.close()

    def check_gaps(self, store: Store) -> int:
        """One round over the configured daemons. Returns the rows the replays added."""
        added = 0
        for d in self.cfg.daemons:
            try:
                added += self._check_daemon(store, d.line, d.camera)
            except replay.ReplayError as e:
                self.metrics.replay_errors.inc()
                log.warning("gap check of %s/%s: %s", d.line, d.camera, e)
        return added

    def _check_daemon(self, store: Store, line: str, camera: str) -> int:
        daemon = self.cfg.daemon(line, camera)
        assert daemon is not None
        token = daemon.token.get_secret_value() if daemon.token else None
        base, missing, top = store.seq_state(line, camera)
        added = 0
        for first, last in missing:
            log.info("%s/%s: seq %d-%d missing; asking the daemon's replay", line, camera, first, last)
            events, complete = replay.replay_range(daemon.url, token, first - 1, last, self.cfg.replay_timeout_s)
            added += self._store_replayed(store, events)
            if complete:
                have = {int(e["seq"]) for e in events if isinstance(e.get("seq"), int)}
                for a, b in _ranges(s for s in range(first, last + 1) if s not in have):
                    log.error("%s/%s: seq %d-%d are no longer in the daemon's outbox (overflow or retention "
                              "passed): recorded as lost", line, camera, a, b)
                    store.record_lost(line, camera, a, b, "not_replayable")
                    self.metrics.lost_seqs.inc(b - a + 1)
        # the tail: what came after the newest seq we have (a stopped line's last events)
        events, _ = replay.replay_range(daemon.url, token, top, None, self.cfg.replay_timeout_s)
        added += self._store_replayed(store, events)
        base, missing, top = store.seq_state(line, camera)
        store.advance(line, camera, (missing[0][0] - 1) if missing else top)
        return added

    def _store_replayed(self, store: Store, events: list[dict[str, Any]]) -> int:
        records: list[Record] = []
        for ev in events:
            topic = str(ev.pop("topic", "")) or "x/x/x/defect"
            try:
                records.append(decision(ev) if topic.rsplit("/", 1)[-1] in DECISION_TOPICS else
                               parse(topic, _json_bytes(ev)))
            except BadMessage as e:
                log.warning("replayed event not stored: %s", e)
        if not records:
            return 0
        res = store.write(records, (), lambda d: crop_url(self.cfg, d))
        self._offer_evidence(res)
        self.metrics.replayed.inc(res.inserted)
        if res.inserted:
            log.info("replay: %d row(s) added (%d were there already)", res.inserted, res.duplicates)
        return res.inserted


def _json_bytes(doc: dict[str, Any]) -> bytes:
    import json

    return json.dumps(doc).encode()


def _ranges(seqs: Any) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s in seqs:
        if out and out[-1][1] == s - 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out
