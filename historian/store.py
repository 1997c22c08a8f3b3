"""PostgreSQL: the historian's only state. Batches of rows in one transaction, partitions, seq gaps, queries.

``write()`` commits a batch or raises DatabaseDown (nothing of it committed); the consumer acknowledges the
batch's MQTT messages only after it returns. Every insert is idempotent: ``ON CONFLICT DO NOTHING`` on the
event's key, so a broker resend, a replayed copy or two workers racing never make a second row. One
exception: a copy with a seq fills in the seq of a row that came without one first (``.../result`` copies
carry none).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from historian.migrate import LOCK_KEY, migrate
from historian.records import Alarm, Decision, Feedback, LostNotice, ModelChange, Record

log = logging.getLogger(__name__)

PARTITIONED = ("decisions", "views")
_OTHER_TABLES: dict[type, str] = {LostNotice: "lost_ranges", ModelChange: "model_changes", Alarm: "spc_alarms",
                                  Feedback: "operator_feedback"}

_INSERT_DECISION = """
INSERT INTO decisions (event_id, decided_at, line, camera, part_id, lot, seq, kind, label, is_defect, action, reason,
    score, max_score, mean_score, frame_count, first_frame, last_frame, threshold, model_id, captured_at, deadline_at,
    slack_ms, late, mode, fusion, evidence_ref, evidence_path, published_at, extra)
VALUES (%(event_id)s, %(decided_at)s, %(line)s, %(camera)s, %(part_id)s,
    COALESCE(%(lot)s, (SELECT l.lot FROM lot_runs l WHERE l.line = %(line)s AND l.started_at <= %(decided_at)s
                       ORDER BY l.started_at DESC LIMIT 1)),
    %(seq)s, %(kind)s, %(label)s, %(is_defect)s, %(action)s, %(reason)s, %(score)s, %(max_score)s, %(mean_score)s,
    %(frame_count)s, %(first_frame)s, %(last_frame)s, %(threshold)s, %(model_id)s, %(captured_at)s, %(deadline_at)s,
    %(slack_ms)s, %(late)s, %(mode)s, %(fusion)s, %(evidence_ref)s, %(evidence_path)s, %(published_at)s,
    %(extra)s::jsonb)
ON CONFLICT (event_id, decided_at) DO NOTHING
RETURNING event_id
"""
# A copy with a seq fills in the seq of a row that came without one (a .../result copy came first).
_FILL_SEQ = "UPDATE decisions SET seq = %s WHERE event_id = %s AND decided_at = %s AND seq IS NULL"
_INSERT_VIEW = """
INSERT INTO views (event_id, decided_at, view, score, no_box, frame_count, first_frame, last_frame, evidence_path)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
"""


class BatchRefused(ValueError):
    """PostgreSQL refused a row of the batch for what it holds (bad data, a constraint): nothing was committed."""


class DatabaseDown(RuntimeError):
    """PostgreSQL cannot be reached or refused the transaction for a reason outside our rows: try again later."""


@dataclass
class WriteResult:
    inserted: int = 0  # decision rows new in the table
    duplicates: int = 0  # decision rows that were there already
    others: int = 0  # loss notices, model changes, alarms, feedback, rejected messages
    new_decisions: list[Decision] = field(default_factory=list)


def partition_bounds(t: datetime, interval: str) -> tuple[datetime, datetime]:
    """The [start, end) of the partition holding ``t`` (UTC)."""
    t = t.astimezone(timezone.utc)
    day = datetime(t.year, t.month, t.day, tzinfo=timezone.utc)
    if interval == "day":
        return day, day + timedelta(days=1)
    if interval == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    start = datetime(t.year, t.month, 1, tzinfo=timezone.utc)
    nxt = datetime(t.year + (t.month == 12), t.month % 12 + 1, 1, tzinfo=timezone.utc)
    return start, nxt


class Store:
    """One connection (autocommit; transactions are explicit). Not thread-safe: one Store per thread."""

    def __init__(self, dsn: str, partition: str = "month", partitions_ahead: int = 2, connect_timeout_s: float = 5.0,
                 application_name: str = "boxinspect-historian") -> None:
        self.dsn = dsn
        self.partition = partition
        self.partitions_ahead = partitions_ahead
        self.connect_timeout_s = connect_timeout_s
        self.application_name = application_name
        self._conn: psycopg.Connection[Any] | None = None

    # -- connection -------------------------------------------------------------------------------
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        self.close()
        try:
            self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=max(1, int(self.connect_timeout_s)),
                                         application_name=self.application_name)
        except psycopg.OperationalError as e:
            raise DatabaseDown(f"cannot connect to PostgreSQL: {str(e).strip()}") from None
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None

    def _run(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(conn, *args)``; a lost connection becomes DatabaseDown (and the next call reconnects)."""
        conn = self.conn()
        try:
            return fn(conn, *args)
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            self.close()
            raise DatabaseDown(f"PostgreSQL: {str(e).strip() or type(e).__name__}") from None
        except (psycopg.DataError, psycopg.IntegrityError) as e:
            raise BatchRefused(str(e).strip()) from None

    # -- schema -----------------------------------------------------------------------------------
    def migrate(self) -> list[int]:
        applied: list[int] = self._run(migrate)
        self.ensure_partitions()
        return applied

    def ensure_partitions(self, now: datetime | None = None) -> list[str]:
        """The partitions of decisions and views from the current one to ``partitions_ahead`` ahead, and DEFAULT."""
        return list(self._run(self._ensure_partitions, now or datetime.now(timezone.utc)))

    def _ensure_partitions(self, conn: psycopg.Connection[Any], now: datetime) -> list[str]:
        made: list[str] = []
        start, end = partition_bounds(now, self.partition)
        spans = [(start, end)]
        for _ in range(self.partitions_ahead):
            start, end = partition_bounds(end, self.partition)
            spans.append((start, end))
        for table in PARTITIONED:
            for name, bounds in [(f"{table}_default", "DEFAULT")] + [
                (f"{table}_{s:%Y%m%d}", f"FOR VALUES FROM ('{s.isoformat()}') TO ('{e.isoformat()}')") for s, e in spans
            ]:
                try:
                    with conn.transaction():  # one at a time across workers (two starting at once)
                        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY + 1,))
                        if conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is not None:  # type: ignore[index]
                            continue
                        conn.execute(f"CREATE TABLE {name} PARTITION OF {table} {bounds}")
                    made.append(name)
                except psycopg.errors.CheckViolation as err:  # rows of that span already sit in DEFAULT: they stay
                    log.warning("partition %s not made: %s", name, str(err).strip())
        if made:
            log.info("partitions made: %s", ", ".join(made))
        return made

    # -- writing ----------------------------------------------------------------------------------
    def write(self, records: Sequence[Record], rejected: Sequence[tuple[str, bytes, str]] = (),
              evidence_ref: Any = None) -> WriteResult:
        """Everything in one transaction. ``evidence_ref(decision) -> str | None`` fills evidence_ref."""
        return self._run(self._write, records, rejected, evidence_ref)  # type: ignore[no-any-return]

    def _write(self, conn: psycopg.Connection[Any], records: Sequence[Record],
               rejected: Sequence[tuple[str, bytes, str]], evidence_ref: Any) -> WriteResult:
        res = WriteResult()
        decisions = [r for r in records if isinstance(r, Decision)]
        with conn.transaction(), conn.cursor() as cur:
            if decisions:
                params = [{**d.row, "evidence_ref": evidence_ref(d) if evidence_ref else None} for d in decisions]
                cur.executemany(_INSERT_DECISION, params, returning=True)
                flags: list[bool] = []
                while True:
                    row = cur.fetchone()
                    flags.append(row is not None)
                    if not cur.nextset():
                        break
                fill = []
                for d, new in zip(decisions, flags, strict=True):
                    if new:
                        res.inserted += 1
                        res.new_decisions.append(d)
                    else:
                        res.duplicates += 1
                        if d.seq is not None:
                            fill.append((d.seq, d.row["event_id"], d.row["decided_at"]))
                if fill:
                    cur.executemany(_FILL_SEQ, fill)
                views = [(d.row["event_id"], d.row["decided_at"], v.view, v.score, v.no_box, v.frame_count,
                          v.first_frame, v.last_frame, v.evidence_path) for d in res.new_decisions for v in d.views]
                if views:
                    cur.executemany(_INSERT_VIEW, views)
            for r in records:
                if not isinstance(r, Decision):
                    self._write_other(cur, r)
                    res.others += 1
            for topic, payload, error in rejected:
                cur.execute("INSERT INTO rejected_messages (topic, payload, error) VALUES (%s, %s, %s)",
                            (topic, payload, error))
                res.others += 1
        return res

    @staticmethod
    def _write_other(cur: psycopg.Cursor[Any], r: Record) -> None:
        """A loss notice, model change, alarm or feedback: its dataclass fields are its table's columns."""
        values = {f.name: getattr(r, f.name) for f in dataclasses.fields(r)}
        values["doc"] = Jsonb(values["doc"])
        cols = ", ".join(values)
        cur.execute(f"INSERT INTO {_OTHER_TABLES[type(r)]} ({cols}) VALUES ({', '.join(['%s'] * len(values))}) "
                    "ON CONFLICT DO NOTHING", tuple(values.values()))

    def set_evidence_ref(self, event_id: str, decided_at: datetime, ref: str) -> None:
        self._run(lambda c: c.execute("UPDATE decisions SET evidence_ref = %s WHERE event_id = %s AND decided_at = %s",
                                      (ref, event_id, decided_at)))

    # -- seq bookkeeping ----------------------------------------------------------------------------
    def seq_state(self, line: str, camera: str) -> tuple[int, list[tuple[int, int]], int]:
        """(contiguous_seq, the missing ranges above it, the highest seq seen) of one daemon's outbox."""
        return self._run(self._seq_state, line, camera)  # type: ignore[no-any-return]

    @staticmethod
    def _seq_state(conn: psycopg.Connection[Any], line: str, camera: str) -> tuple[int, list[tuple[int, int]], int]:
        row = conn.execute("SELECT contiguous_seq FROM sources WHERE line = %s AND camera = %s", (line, camera)).fetchone()
        base = int(row[0]) if row else 0
        seen = {int(r[0]) for r in conn.execute(
            "SELECT seq FROM decisions WHERE line = %s AND camera = %s AND seq > %s "
            "UNION SELECT seq FROM operator_feedback WHERE line = %s AND camera = %s AND seq > %s "
            "UNION SELECT notice_seq FROM lost_ranges WHERE line = %s AND camera = %s AND notice_seq > %s",
            (line, camera, base) * 3)}
        for first, last in conn.execute(
            "SELECT first_seq, last_seq FROM lost_ranges WHERE line = %s AND camera = %s AND last_seq > %s",
            (line, camera, base),
        ):
            seen.update(range(max(int(first), base + 1), int(last) + 1))
        top = max(seen, default=base)
        missing: list[tuple[int, int]] = []
        start = None
        for s in range(base + 1, top + 1):
            if s not in seen and start is None:
                start = s
            elif s in seen and start is not None:
                missing.append((start, s - 1))
                start = None
        return base, missing, top

    def advance(self, line: str, camera: str, contiguous: int) -> None:
        self._run(lambda c: c.execute(
            "INSERT INTO sources (line, camera, contiguous_seq) VALUES (%s, %s, %s) ON CONFLICT (line, camera) DO UPDATE "
            "SET contiguous_seq = GREATEST(sources.contiguous_seq, EXCLUDED.contiguous_seq), updated_at = now()",
            (line, camera, contiguous)))

    def record_lost(self, line: str, camera: str, first: int, last: int, reason: str) -> None:
        self._run(lambda c: c.execute(
            "INSERT INTO lost_ranges (line, camera, first_seq, last_seq, reason) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING", (line, camera, first, last, reason)))

    def sources(self) -> list[tuple[str, str]]:
        return [(str(a), str(b)) for a, b in self._run(lambda c: c.execute(
            "SELECT DISTINCT line, camera FROM sources UNION SELECT DISTINCT line, camera FROM lost_ranges").fetchall())]

    # -- reading ----------------------------------------------------------------------------------
    def part(self, part_id: str, line: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Every decision about ``part_id`` (on ``line``), newest first, with its views and the operators' answers."""
        q = ("SELECT d.*, (SELECT json_agg(v.* ORDER BY v.view) FROM views v WHERE v.event_id = d.event_id "
             "AND v.decided_at = d.decided_at) AS views, (SELECT json_agg(json_build_object('kind', f.kind, 'label', "
             "f.label, 'who', f.who, 'answered_at', f.answered_at) ORDER BY f.answered_at) FROM operator_feedback f "
             "WHERE f.event_id = d.event_id) AS feedback FROM decisions d WHERE d.part_id = %s"
             + (" AND d.line = %s" if line else "") + " ORDER BY d.decided_at DESC LIMIT %s")
        args: tuple[Any, ...] = (part_id, line, limit) if line else (part_id, limit)

        def fetch(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
            with conn.cursor(row_factory=dict_row) as cur:
                return list(cur.execute(q, args).fetchall())

        return self._run(fetch)  # type: ignore[no-any-return]

    def start_lot(self, line: str, lot: str | None, at: datetime) -> None:
        self._run(lambda c: c.execute(
            "INSERT INTO lot_runs (line, started_at, lot) VALUES (%s, %s, %s) ON CONFLICT (line, started_at) "
            "DO UPDATE SET lot = EXCLUDED.lot", (line, at, lot)))

    def count(self, sql: str, args: Iterable[Any] = ()) -> int:
        return int(self._run(lambda c: c.execute(sql, tuple(args)).fetchone()[0]))
