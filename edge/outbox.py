"""Store-and-forward outbox: defect events on disk until the broker acknowledges them.

One SQLite file in WAL mode. ``put()`` commits the event before it returns; the MQTT sink
publishes rows in ``seq`` order and calls ``ack()`` on PUBACK, which deletes the row. Whatever is
still in the file after a crash, a power cut or a broker outage is sent again by the next sink
that opens the file.

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

One process at a time: the outbox takes an exclusive ``flock`` on ``<path>.lock``; a second opener
gets an OutboxError instead of sending the same events twice. The OS releases the lock when the
holder dies, also on SIGKILL.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from edge.metrics import Metrics

log = logging.getLogger(__name__)

Overflow = Literal["drop_oldest", "drop_newest"]
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    event_id   TEXT    NOT NULL,
    created_at REAL    NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('dropped', 0);
"""


class OutboxError(RuntimeError):
    """The outbox file cannot be used. The message names the file and what to do."""


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
    ) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        if overflow not in ("drop_oldest", "drop_newest"):
            raise ValueError(f"overflow must be 'drop_oldest' or 'drop_newest', got {overflow!r}")
        self.path = Path(path)
        self.max_events = max_events
        self.overflow: Overflow = overflow
        self.metrics = metrics
        self._lock = threading.Lock()
        self._lock_file: IO[str] | None = None
        self._db: sqlite3.Connection | None = None
        self._open()

    # -- opening --------------------------------------------------------------------------------
    def _fail(self, what: str, err: BaseException | None = None) -> OutboxError:
        detail = f": {err}" if err is not None else ""
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
            db.executescript(_SCHEMA)
            cols = [r[1] for r in db.execute("PRAGMA table_info(outbox)")]
            if cols[:5] != ["seq", "topic", "payload", "event_id", "created_at"]:
                raise sqlite3.DatabaseError(f"table 'outbox' has unexpected columns {cols}")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._depth = int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            self._dropped = int(db.execute("SELECT value FROM meta WHERE key='dropped'").fetchone()[0])
        except sqlite3.Error as e:
            db.close()
            self._release_lock()
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
            f = open(lock_path, "a+")  # noqa: SIM115 - held open for the life of the outbox
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
    def put(self, topic: str, payload: bytes, event_id: str) -> int | None:
        """Store one event durably. Returns its seq, or None if ``drop_newest`` refused it (outbox full)."""
        if not isinstance(payload, (bytes, bytearray)):
            raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
        with self._lock:
            db = self._conn
            dropped: list[tuple[int, str]] = []
            if self._depth >= self.max_events:
                if self.overflow == "drop_newest":
                    self._count_drops([(None, event_id)])
                    return None
                excess = self._depth - self.max_events + 1
                dropped = [
                    (int(s), str(e))
                    for s, e in db.execute("SELECT seq, event_id FROM outbox ORDER BY seq LIMIT ?", (excess,))
                ]
            try:
                db.execute("BEGIN IMMEDIATE")
                if dropped:
                    db.execute("DELETE FROM outbox WHERE seq <= ?", (dropped[-1][0],))
                    db.execute("UPDATE meta SET value = value + ? WHERE key='dropped'", (len(dropped),))
                cur = db.execute(
                    "INSERT INTO outbox (topic, payload, event_id, created_at) VALUES (?, ?, ?, ?)",
                    (topic, bytes(payload), str(event_id), time.time()),
                )
                db.execute("COMMIT")
            except sqlite3.Error as e:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise self._fail(f"cannot store event {event_id}", e) from None
            seq = int(cur.lastrowid or 0)
            self._depth += 1 - len(dropped)
            if dropped:
                self._count_drops(dropped, persisted=True)
            self._set_depth_metric()
            return seq

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
                    "SELECT seq, topic, payload, event_id, created_at FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                    (int(after_seq), int(limit)),
                )
                return [Row(int(s), str(t), bytes(p), str(e), float(c)) for s, t, p, e, c in cur]
            except sqlite3.Error as e:
                raise self._fail("cannot read waiting events", e) from None

    def ack(self, seq: int) -> bool:
        """Delete one row (its PUBACK arrived). False if it was not there (already acked or dropped)."""
        return self.ack_many([seq]) == 1

    def ack_many(self, seqs: Iterable[int]) -> int:
        """Delete several rows in one transaction. Returns how many existed."""
        seqs = [int(s) for s in seqs]
        if not seqs:
            return 0
        with self._lock:
            db = self._conn
            try:
                db.execute("BEGIN IMMEDIATE")
                n = 0
                for s in seqs:
                    n += db.execute("DELETE FROM outbox WHERE seq = ?", (s,)).rowcount
                db.execute("COMMIT")
            except sqlite3.Error as e:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise self._fail("cannot delete acknowledged events", e) from None
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

    def oldest_age(self) -> float | None:
        """Seconds since the oldest waiting event was stored, None when empty."""
        with self._lock:
            row = self._conn.execute("SELECT created_at FROM outbox ORDER BY seq LIMIT 1").fetchone()
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
