"""The station's records (issue 26): every decision with its evidence references, the shift and lot counters and
the audit trail, in one SQLite file beside the outbox (``station.db_path``).

- Decisions: one row per decision (id, time, verdict, score, threshold, model, part id, the evidence file paths and
  the event itself). Bounded like the evidence they point to: at most ``evidence.max_files`` rows, none older than
  ``evidence.max_age_days``. The history page filters, pages and exports them (edge/api/history.py).
- Periods: the current shift (boundaries from ``station.shifts`` in ``station.timezone``) and the current lot, each
  with its boxes and NG count, updated in the same transaction as the decision, so they survive a restart. A lot
  ends by a reset with a reason (who and why are kept). At most ``station.periods_keep`` past periods are kept.
- Audit: who did what, when, before and after (edge/deliver/audit.py); at most ``station.audit_keep`` entries.

Writes come from the publisher thread (one per decision, ``synchronous=NORMAL`` in WAL mode: a power cut may lose
the last decisions' counts, never the file); reads from API threads. One connection behind a lock.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from edge.config import Config, ShiftConfig
from edge.runtime.timeutil import iso_utc

log = logging.getLogger(__name__)

RETENTION_EVERY = 50  # decisions between two retention passes
SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT UNIQUE NOT NULL, decided_at REAL NOT NULL, label TEXT,
  is_defect INTEGER NOT NULL, score REAL, threshold REAL, model_id TEXT, part_id TEXT, frame TEXT, crop TEXT,
  event TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS decisions_time ON decisions(decided_at);
CREATE INDEX IF NOT EXISTS decisions_part ON decisions(part_id);
CREATE TABLE IF NOT EXISTS periods (
  id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, name TEXT NOT NULL, key TEXT NOT NULL,
  started REAL NOT NULL, ended REAL, boxes INTEGER NOT NULL DEFAULT 0, ng INTEGER NOT NULL DEFAULT 0,
  reason TEXT, who TEXT);
CREATE INDEX IF NOT EXISTS periods_open ON periods(kind, ended);
CREATE TABLE IF NOT EXISTS audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, who TEXT NOT NULL, source TEXT, action TEXT NOT NULL,
  what TEXT, before TEXT, after TEXT);
"""
COLUMNS = ("seq", "event_id", "decided_at", "label", "is_defect", "score", "threshold", "model_id", "part_id",
           "frame", "crop")


@dataclass(frozen=True)
class HistoryQuery:
    """A filter on the decisions: verdict (``ng``/``ok``), part id (contains), time range (epoch seconds)."""

    verdict: str | None = None
    part: str | None = None
    since: float | None = None
    until: float | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        if self.verdict in ("ng", "ok"):
            clauses.append("is_defect = ?")
            args.append(1 if self.verdict == "ng" else 0)
        if self.part:
            clauses.append("part_id LIKE ? ESCAPE '\\'")
            args.append("%" + self.part.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        if self.since is not None:
            clauses.append("decided_at >= ?")
            args.append(self.since)
        if self.until is not None:
            clauses.append("decided_at <= ?")
            args.append(self.until)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def current_shift(shifts: list[ShiftConfig], zone: str, now: float) -> tuple[str, float]:
    """The shift ``now`` falls in: its name and the epoch second it started (a shift ends where the next starts;
    before the day's first start, the day before's last shift runs)."""
    tz: tzinfo = timezone.utc if zone == "UTC" else ZoneInfo(zone)  # UTC needs no time zone database
    local = datetime.fromtimestamp(now, tz)
    ordered = sorted(shifts, key=lambda s: s.start)
    for day in (local.date(), local.date() - timedelta(days=1)):
        for s in reversed(ordered):
            start = _at(day, s.start, tz)
            if start <= local:
                return s.name, start.timestamp()
    raise AssertionError("unreachable: some shift started within the last two days")


def _at(day: date, hhmm: str, tz: tzinfo) -> datetime:
    h, m = (int(x) for x in hhmm.split(":"))
    return datetime.combine(day, dtime(h, m), tzinfo=tz)


def _epoch(text: Any) -> float:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()


def rate_doc(name: str, started: float, boxes: int, ng: int) -> dict[str, Any]:
    """A counter as the page shows it: never a yield without its sample size ``n``."""
    return {"name": name, "started": iso_utc(started), "boxes": boxes, "ng": ng, "n": boxes,
            "yield": round((boxes - ng) / boxes, 4) if boxes else None}


class StationStore:
    """Decisions, shift and lot counters and the audit trail in ``station.db_path`` (see the module docstring)."""

    def __init__(self, cfg: Config, clock: Any = time.time) -> None:
        self.cfg = cfg
        self.path = Path(cfg.station.db_path)
        if not self.path.is_absolute():  # a config not resolved against a state directory: beside the outbox
            self.path = Path(cfg.mqtt.outbox_path).parent / self.path
        self._clock = clock
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), timeout=10.0, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._since_retention = 0
        with self._lock:
            self._retain()
            self._open_period("shift", self._clock())
            self._open_period("lot", self._clock())
        log.info("station records: %s (%d decisions kept)", self.path, self.count(HistoryQuery()))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- decisions (publisher thread) -------------------------------------------------------------------------
    def on_decision(self, event: dict[str, Any]) -> None:
        """Store one decision and count it in the current shift and lot. Never raises (logged): the records are a
        by-product; the event itself is in the outbox."""
        try:
            self._insert(event)
        except (sqlite3.Error, KeyError, TypeError, ValueError) as e:
            log.error("station records: decision %s not stored: %s", event.get("event_id"), e)

    def _insert(self, event: dict[str, Any]) -> None:
        ev = event.get("evidence") or {}
        ng = 1 if event["is_defect"] else 0
        row = (event["event_id"], _epoch(event.get("decided_at")), event.get("label"), ng, event.get("score"),
               event.get("threshold"), event.get("model_id"), event.get("part_id"), ev.get("frame"), ev.get("crop"),
               json.dumps(event, default=str))
        now = self._clock()
        with self._lock:
            shift, lot = self._open_period("shift", now), self._open_period("lot", now)
            self._db.execute("BEGIN")
            try:
                self._db.execute("INSERT OR IGNORE INTO decisions (event_id, decided_at, label, is_defect, score, "
                                 "threshold, model_id, part_id, frame, crop, event) VALUES (?,?,?,?,?,?,?,?,?,?,?)", row)
                self._db.execute("UPDATE periods SET boxes = boxes + 1, ng = ng + ? WHERE id IN (?, ?)", (ng, shift, lot))
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self._db.execute("ROLLBACK")
                raise
            self._since_retention += 1
            if self._since_retention >= RETENTION_EVERY:
                self._retain()

    def _retain(self) -> None:
        """Keep what the evidence keeps: at most evidence.max_files decisions, none older than evidence.max_age_days."""
        self._since_retention = 0
        ev, st = self.cfg.evidence, self.cfg.station
        cut = self._clock() - ev.max_age_days * 86400.0
        self._db.execute("DELETE FROM decisions WHERE decided_at < ? OR seq <= (SELECT MAX(seq) FROM decisions) - ?",
                         (cut, ev.max_files))
        self._db.execute("DELETE FROM audit WHERE id <= (SELECT MAX(id) FROM audit) - ?", (st.audit_keep,))
        self._db.execute("DELETE FROM periods WHERE ended IS NOT NULL AND id NOT IN (SELECT id FROM periods WHERE "
                         "ended IS NOT NULL ORDER BY id DESC LIMIT ?)", (st.periods_keep,))

    # -- shifts and lots ----------------------------------------------------------------------------------------
    def _open_period(self, kind: str, now: float) -> int:
        """The id of the current shift or lot (the caller holds the lock); a shift boundary passed closes one."""
        cur = self._db.execute("SELECT id, key FROM periods WHERE kind = ? AND ended IS NULL ORDER BY id DESC LIMIT 1",
                               (kind,)).fetchone()
        if kind == "lot":
            if cur is not None:
                return int(cur[0])
            return self._new_period("lot", "lot 1", "lot 1", now)
        name, started = current_shift(self.cfg.station.shifts, self.cfg.station.timezone, now)
        key = iso_utc(started)
        if cur is not None and cur[1] == key:
            return int(cur[0])
        if cur is not None:
            self._db.execute("UPDATE periods SET ended = ? WHERE id = ?", (started, cur[0]))
        return self._new_period("shift", name, key, started)

    def _new_period(self, kind: str, name: str, key: str, started: float) -> int:
        c = self._db.execute("INSERT INTO periods (kind, name, key, started) VALUES (?,?,?,?)", (kind, name, key, started))
        return int(c.lastrowid or 0)

    def _period_doc(self, pid: int) -> dict[str, Any]:
        r = self._db.execute("SELECT name, started, boxes, ng FROM periods WHERE id = ?", (pid,)).fetchone()
        return rate_doc(r[0], r[1], int(r[2]), int(r[3]))

    def counters(self) -> dict[str, Any]:
        """``{"shift": {...}, "lot": {...}}`` as the page's summary shows them (see ``rate_doc``)."""
        now = self._clock()
        with self._lock:
            shift, lot = self._open_period("shift", now), self._open_period("lot", now)
            return {"shift": self._period_doc(shift), "lot": self._period_doc(lot)}

    def reset_lot(self, reason: str, who: str, name: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """End the current lot (with why and who) and start the next; returns (the lot ended, the new one)."""
        now = self._clock()
        with self._lock:
            old = self._open_period("lot", now)
            before = self._period_doc(old)
            count = self._db.execute("SELECT COUNT(*) FROM periods WHERE kind = 'lot'").fetchone()[0]
            self._db.execute("UPDATE periods SET ended = ?, reason = ?, who = ? WHERE id = ?", (now, reason, who, old))
            label = name or f"lot {int(count) + 1}"
            new = self._new_period("lot", label, label, now)
            return before, self._period_doc(new)

    def periods(self, kind: str, limit: int = 20) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT name, started, ended, boxes, ng, reason, who FROM periods WHERE kind = ? "
                                    "ORDER BY id DESC LIMIT ?", (kind, limit)).fetchall()
        return [dict(rate_doc(r[0], r[1], int(r[3]), int(r[4])), ended=iso_utc(r[2]) if r[2] else None,
                     reason=r[5], who=r[6]) for r in rows]

    # -- history (API threads) ------------------------------------------------------------------------------------
    def count(self, q: HistoryQuery) -> int:
        where, args = q.where()
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM decisions" + where, args).fetchone()[0])

    def page(self, q: HistoryQuery, limit: int, offset: int = 0) -> list[dict[str, Any]]:
        """Decisions matching ``q``, newest first."""
        where, args = q.where()
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM decisions{where} ORDER BY seq DESC LIMIT ? OFFSET ?",
                                    [*args, limit, offset]).fetchall()
        return [self._row(r) for r in rows]

    def iterate(self, q: HistoryQuery, max_rows: int, batch: int = 500) -> Iterator[dict[str, Any]]:
        """Every decision matching ``q`` (at most ``max_rows``), newest first, read ``batch`` rows at a time."""
        done = 0
        while done < max_rows:
            rows = self.page(q, min(batch, max_rows - done), done)
            yield from rows
            if len(rows) < batch:
                return
            done += len(rows)

    def get(self, event_id: str) -> dict[str, Any] | None:
        with self._lock:
            r = self._db.execute(f"SELECT {', '.join(COLUMNS)}, event FROM decisions WHERE event_id = ?",
                                 (event_id,)).fetchone()
        if r is None:
            return None
        out = self._row(r[:-1])
        out["event"] = json.loads(r[-1])
        return out

    def trend(self, buckets: int, last: int) -> list[dict[str, Any]]:
        """The yield of the last ``last`` decisions in ``buckets`` groups of equal size, oldest first, each with n."""
        with self._lock:
            rows = self._db.execute("SELECT decided_at, is_defect FROM decisions ORDER BY seq DESC LIMIT ?",
                                    (last,)).fetchall()[::-1]
        if not rows:
            return []
        size = max(1, -(-len(rows) // buckets))
        out = []
        for i in range(0, len(rows), size):
            part = rows[i:i + size]
            ng = sum(int(r[1]) for r in part)
            doc = rate_doc("", part[0][0], len(part), ng)
            out.append({"from": iso_utc(part[0][0]), "to": iso_utc(part[-1][0]), "boxes": doc["boxes"], "ng": ng,
                        "n": doc["n"], "yield": doc["yield"]})
        return out

    @staticmethod
    def _row(r: Any) -> dict[str, Any]:
        d = dict(zip(COLUMNS, r, strict=True))
        d["decided_at"] = iso_utc(d["decided_at"])
        d["is_defect"] = bool(d["is_defect"])
        return d

    # -- audit ------------------------------------------------------------------------------------------------------
    def add_audit(self, entry: dict[str, Any]) -> int:
        with self._lock:
            c = self._db.execute(
                "INSERT INTO audit (at, who, source, action, what, before, after) VALUES (?,?,?,?,?,?,?)",
                (_epoch(entry["at"]), entry["who"], entry.get("source"), entry["action"], entry.get("what"),
                 json.dumps(entry.get("before"), default=str), json.dumps(entry.get("after"), default=str)))
            return int(c.lastrowid or 0)

    def audit(self, limit: int, offset: int = 0, action: str | None = None) -> list[dict[str, Any]]:
        where, args = (" WHERE action = ?", [action]) if action else ("", [])
        with self._lock:
            rows = self._db.execute("SELECT id, at, who, source, action, what, before, after FROM audit" + where +
                                    " ORDER BY id DESC LIMIT ? OFFSET ?", [*args, limit, offset]).fetchall()
        return [{"id": r[0], "at": iso_utc(r[1]), "who": r[2], "source": r[3], "action": r[4], "what": r[5],
                 "before": json.loads(r[6]) if r[6] else None, "after": json.loads(r[7]) if r[7] else None} for r in rows]
