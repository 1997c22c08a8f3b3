"""Store-and-forward outbox: defect events on disk until the broker acknowledges them.

One SQLite file in WAL mode. ``put()`` commits the event before it returns; the MQTT sink
publishes rows in ``seq`` order and calls ``ack()`` on PUBACK, which deletes the row (with a
retention window: marks it). Whatever is still waiting in the file after a crash, a power cut or
a broker outage is sent again by the next sink that opens the file.

Durability: ``PRAGMA synchronous=FULL``. In WAL mode NORMAL already survives a killed process
(the committed WAL pages are in the OS page cache), but not a power cut: the WAL is only fsynced at
checkpoints, so the last events before the plug is pulled could vanish. A Raspberry Pi beside a
conveyor loses power more often than a server does, and defect events are rare (at most a few per
second), so we pay one fsync per ``put()``. Acks are batched (``ack_many``) because a lost ack only
causes a duplicate, never a loss.

Bounded: at most ``max_events`` rows. When full, ``overflow`` decides what is lost:
``drop_oldest`` deletes the oldest row to make room, ``drop_newest`` refuses the new event
(``put()`` returns None). Either way the loss is counted (``dropped``, persisted in the file, and
``metrics.events_dropped``) and logged at WARNING with the event id.

Sequence numbers come from ``AUTOINCREMENT``: they only ever grow, also after rows are deleted and
across restarts, so ``seq`` orders events for the life of the file.

Retention (``retention_s`` > 0, ``mqtt.outbox_retention_s``): an acknowledged row is not deleted but
marked (``acked_at``) and kept that long, so ``since()`` can hand it to a consumer that asks for a
replay (docs/EVENTS.md). Kept rows do not count as waiting (``depth()``); they are pruned on later
acks and make room first when the file reaches ``max_events`` rows.

Disk full: every write that fails because the filesystem is full raises ``OutboxFull`` (an
OutboxError whose message says "disk full"), also at open. Events that could not be stored are the
sink's business (edge/deliver/mqtt_sink.py); when storage returns it records their number with
``put(..., gap=n)``: the sequence skips ``n`` numbers (a seq gap for consumers) and ``lost`` grows.

One process at a time: the outbox takes an exclusive ``flock`` on ``<path>.lock``; a second opener
gets an OutboxError instead of sending the same events twice. The OS releases the lock when the
holder dies, also on SIGKILL.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from edge.runtime.metrics import Metrics

log = logging.getLogger(__name__)

Overflow = Literal["drop_oldest", "drop_newest"]
SCHEMA_VERSION = 2
SQLITE_FULL = 13

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    event_id   TEXT    NOT NULL,
    created_at REAL    NOT NULL,
    acked_at   REAL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('dropped', 0);
INSERT OR IGNORE INTO meta (key, value) VALUES ('lost', 0);
"""


def is_disk_full(err: BaseException) -> bool:
    """True for SQLite's SQLITE_FULL ("database or disk is full") and OSError ENOSPC / EDQUOT."""
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(err, sqlite3.Error):
        code = getattr(err, "sqlite_errorcode", None)
        return (code is not None and code & 0xFF == SQLITE_FULL) or "disk is full" in str(err)
    return False


class OutboxError(RuntimeError):
    """The outbox file cannot be used. The message names the file and what to do."""


class OutboxFull(OutboxError):
    """The filesystem of the outbox is full: nothing can be stored until space is freed."""


@dataclass(frozen=True)
class Row:
    seq: int
    topic: str
    payload: bytes
    event_id: str
    created_at: float  # unix time of put()


class Outbox:
    """A bounded, durable FIFO of (topic, payload) keyed by an ever-growing ``seq``. Thread-safe."""

    def __init__(
        self,
        path: str | Path,
        max_events: int = 100_000,
        overflow: Overflow = "drop_oldest",
        metrics: Metrics | None = None,
        retention_s: float = 0.0,
    ) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        if overflow not in ("drop_oldest", "drop_newest"):
            raise ValueError(f"overflow must be 'drop_oldest' or 'drop_newest', got {overflow!r}")
        self.path = Path(path)
        self.max_events = max_events
        self.overflow: Overflow = overflow
        self.metrics = metrics
        self.retention_s = max(0.0, float(retention_s))
        self._lock = threading.Lock()
        self._lock_file: IO[str] | None = None
        self._db: sqlite3.Connection | None = None
        self._open()

    # -- opening --------------------------------------------------------------------------------
    def _fail(self, what: str, err: BaseException | None = None) -> OutboxError:
        detail = f": {err}" if err is not None else ""
        if err is not None and is_disk_full(err):
            return OutboxFull(f"outbox {self.path}: disk full, {what}{detail}")
        return OutboxError(f"outbox {self.path}: {what}{detail}")

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise self._fail("cannot create its directory", e) from None
        self._take_lock()
        try:
            db = sqlite3.connect(str(self.path), timeout=10.0, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as e:
            self._release_lock()
            raise self._fail("cannot open", e) from None
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("outbox %s: journal_mode is %s, not wal (filesystem without shared memory?)", self.path, mode)
            db.execute("PRAGMA synchronous=FULL")
            found = int(db.execute("PRAGMA user_version").fetchone()[0])
            if found > SCHEMA_VERSION:  # a downgrade: never rewrite what a newer release stored (events, counters)
                raise sqlite3.DatabaseError(
                    f"schema {found} was written by a newer boxinspect (this one knows up to {SCHEMA_VERSION}); "
                    f"upgrade again, or move the file away to start a new outbox")
            db.executescript(_SCHEMA)
            cols = [r[1] for r in db.execute("PRAGMA table_info(outbox)")]
            if cols[:5] != ["seq", "topic", "payload", "event_id", "created_at"]:
                raise sqlite3.DatabaseError(f"table 'outbox' has unexpected columns {cols}")
            if "acked_at" not in cols:  # a file of schema 1: every row in it is waiting
                db.execute("ALTER TABLE outbox ADD COLUMN acked_at REAL")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._depth = int(db.execute("SELECT COUNT(*) FROM outbox WHERE acked_at IS NULL").fetchone()[0])
            self._dropped = int(db.execute("SELECT value FROM meta WHERE key='dropped'").fetchone()[0])
            self._lost = int(db.execute("SELECT value FROM meta WHERE key='lost'").fetchone()[0])
        except sqlite3.Error as e:
            db.close()
            self._release_lock()
            if is_disk_full(e):
                raise OutboxFull(
                    f"outbox {self.path}: disk full, cannot set up the outbox database (no space left on its "
                    f"filesystem); free space there, the file itself is not corrupt: {e}"
                ) from None
            raise self._fail(
                "is not a usable outbox database (corrupt, or another kind of file). Move it aside to start "
                "with an empty outbox; the events in it would then have to be recovered by hand",
                e,
            ) from None
        self._db = db
        self._set_depth_metric()
        if self._depth:
            log.info("outbox %s: %d event(s) waiting from an earlier run", self.path, self._depth)

    def _take_lock(self) -> None:
        if fcntl is None:
            return
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            f = open(lock_path, "a+")  # held open for the life of the outbox
        except OSError as e:
            raise self._fail(f"cannot create lock file {lock_path}", e) from None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise self._fail(
                f"is in use by another process (lock {lock_path} is held); two senders on one outbox "
                "would publish every event twice"
            ) from None
        self._lock_file = f

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing the descriptor releases the flock
            self._lock_file = None

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise self._fail("is closed")
        return self._db

    # -- the queue ------------------------------------------------------------------------------
    def put(self, topic: str, payload: bytes | Callable[[int], bytes], event_id: str, gap: int = 0) -> int | None:
        """Store one event durably. Returns its seq, or None if ``drop_newest`` refused it (outbox full).

        ``gap`` > 0: first skip that many seq numbers (events that could not be stored, counted in
        ``lost``). ``payload`` may then be a function of the first skipped seq (a ``lost`` notice
        names the range). Raises OutboxFull when the disk is full, OutboxError on other failures.
        """
        if not isinstance(payload, (bytes, bytearray)) and not callable(payload):
            raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
        with self._lock:
            db = self._conn
            dropped: list[tuple[int, str]] = []
            if self.retention_s > 0:
                self._make_room_among_kept(db)
            if self._depth >= self.max_events:
                if self.overflow == "drop_newest":
                    self._count_drops([(None, event_id)])
                    return None
                excess = self._depth - self.max_events + 1
                dropped = [
                    (int(s), str(e))
                    for s, e in db.execute(
                        "SELECT seq, event_id FROM outbox WHERE acked_at IS NULL ORDER BY seq LIMIT ?", (excess,)
                    )
                ]
            try:
                db.execute("BEGIN IMMEDIATE")
                if dropped:
                    db.execute("DELETE FROM outbox WHERE seq <= ? AND acked_at IS NULL", (dropped[-1][0],))
                    db.execute("UPDATE meta SET value = value + ? WHERE key='dropped'", (len(dropped),))
                first_skipped = 0
                if gap > 0:
                    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name='outbox'").fetchone()
                    first_skipped = (int(row[0]) if row else 0) + 1
                    if row is None:
                        db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?)", (gap,))
                    else:
                        db.execute("UPDATE sqlite_sequence SET seq = seq + ? WHERE name='outbox'", (gap,))
                    db.execute("UPDATE meta SET value = value + ? WHERE key='lost'", (gap,))
                data = payload(first_skipped) if callable(payload) else bytes(payload)
                cur = db.execute(
                    "INSERT INTO outbox (topic, payload, event_id, created_at) VALUES (?, ?, ?, ?)",
                    (topic, data, str(event_id), time.time()),
                )
                db.execute("COMMIT")
            except sqlite3.Error as e:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise self._fail(f"cannot store event {event_id}", e) from None
            seq = int(cur.lastrowid or 0)
            self._lost += max(0, gap)
            self._depth += 1 - len(dropped)
            if dropped:
                self._count_drops(dropped, persisted=True)
            self._set_depth_metric()
            return seq

    def _make_room_among_kept(self, db: sqlite3.Connection) -> None:
        """With retention: acknowledged rows kept for replay give way first when the file is at ``max_events``."""
        total = int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        excess = min(total - self.max_events + 1, total - self._depth)
        if excess > 0:
            try:
                db.execute(
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE acked_at IS NOT NULL ORDER BY seq LIMIT ?)",
                    (excess,),
                )
            except sqlite3.Error as e:
                raise self._fail("cannot prune acknowledged events", e) from None

    def _count_drops(self, dropped: Sequence[tuple[int | None, str]], persisted: bool = False) -> None:
        if not persisted:
            try:
                self._conn.execute("UPDATE meta SET value = value + ? WHERE key='dropped'", (len(dropped),))
            except sqlite3.Error as e:  # counting must not hide the real problem (a full outbox)
                log.error("outbox %s: cannot persist the drop counter: %s", self.path, e)
        self._dropped += len(dropped)
        if self.metrics is not None:
            self.metrics.events_dropped.inc(len(dropped))
        for seq, event_id in dropped:
            if seq is None:
                log.warning(
                    "outbox %s full (%d events, overflow=drop_newest): dropped NEW defect event %s",
                    self.path, self.max_events, event_id,
                )
            else:
                log.warning(
                    "outbox %s full (%d events, overflow=drop_oldest): dropped OLDEST defect event %s (seq %d)",
                    self.path, self.max_events, event_id, seq,
                )

    def pending(self, after_seq: int = 0, limit: int = 100) -> list[Row]:
        """Rows with seq > after_seq, oldest first."""
        with self._lock:
            try:
                cur = self._conn.execute(
                    "SELECT seq, topic, payload, event_id, created_at FROM outbox WHERE seq > ? AND acked_at IS NULL "
                    "ORDER BY seq LIMIT ?",
                    (int(after_seq), int(limit)),
                )
                return [Row(int(s), str(t), bytes(p), str(e), float(c)) for s, t, p, e, c in cur]
            except sqlite3.Error as e:
                raise self._fail("cannot read waiting events", e) from None

    def since(self, after_seq: int = 0, limit: int = 1000) -> list[Row]:
        """Every row still in the file with seq > after_seq, acknowledged (kept for retention) or not, oldest first."""
        with self._lock:
            try:
                cur = self._conn.execute(
                    "SELECT seq, topic, payload, event_id, created_at FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                    (int(after_seq), int(limit)),
                )
                return [Row(int(s), str(t), bytes(p), str(e), float(c)) for s, t, p, e, c in cur]
            except sqlite3.Error as e:
                raise self._fail("cannot read events for a replay", e) from None

    def ack(self, seq: int) -> bool:
        """Delete one row (its PUBACK arrived). False if it was not there (already acked or dropped)."""
        return self.ack_many([seq]) == 1

    def ack_many(self, seqs: Iterable[int]) -> int:
        """Delete (with retention: mark) several rows in one transaction. Returns how many were waiting.

        The commit is not fsynced (``synchronous=NORMAL`` for this transaction only): a lost ack only means the
        event is sent again after a power cut, never a loss, and the next ``put()`` (FULL) syncs the WAL with it.
        So a PUBACK costs no fsync that a defect event waiting to be stored or sent would queue behind."""
        seqs = [int(s) for s in seqs]
        if not seqs:
            return 0
        with self._lock:
            db = self._conn
            try:
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("BEGIN IMMEDIATE")
                n = 0
                now = time.time()
                for s in seqs:
                    if self.retention_s > 0:
                        n += db.execute(
                            "UPDATE outbox SET acked_at = ? WHERE seq = ? AND acked_at IS NULL", (now, s)
                        ).rowcount
                    else:
                        n += db.execute("DELETE FROM outbox WHERE seq = ? AND acked_at IS NULL", (s,)).rowcount
                if self.retention_s > 0:
                    db.execute("DELETE FROM outbox WHERE acked_at IS NOT NULL AND acked_at < ?", (now - self.retention_s,))
                db.execute("COMMIT")
            except sqlite3.Error as e:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise self._fail("cannot delete acknowledged events", e) from None
            finally:
                try:
                    db.execute("PRAGMA synchronous=FULL")  # every put() stays durable
                except sqlite3.Error as e:
                    log.error("outbox %s: cannot restore synchronous=FULL: %s", self.path, e)
            self._depth -= n
            self._set_depth_metric()
            return n

    def depth(self) -> int:
        """Events waiting (stored, not yet acknowledged)."""
        return self._depth

    @property
    def dropped(self) -> int:
        """Events lost to overflow over the life of this file."""
        return self._dropped

    @property
    def lost(self) -> int:
        """Events that could not be stored (disk full) and were lost, recorded with ``put(gap=...)``."""
        return self._lost

    def oldest_age(self) -> float | None:
        """Seconds since the oldest waiting event was stored, None when empty."""
        with self._lock:
            row = self._conn.execute(
                "SELECT created_at FROM outbox WHERE acked_at IS NULL ORDER BY seq LIMIT 1"
            ).fetchone()
        return None if row is None or row[0] is None else max(0.0, time.time() - float(row[0]))

    def _set_depth_metric(self) -> None:
        if self.metrics is not None:
            self.metrics.outbox_depth.set(self._depth)

    # -- closing --------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                try:
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error as e:
                    log.debug("outbox %s: checkpoint on close failed: %s", self.path, e)
                self._db.close()
                self._db = None
            self._release_lock()

    @property
    def closed(self) -> bool:
        return self._db is None

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Outbox({str(self.path)!r}, depth={self._depth}, max_events={self.max_events}, overflow={self.overflow})"
