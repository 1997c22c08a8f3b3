"""``GET /events?since_seq=`` bounded (issue 24): paged, rate-limited, read beside the outbox writer, never in its way.

An anonymous client asking ``/events?since_seq=0`` in a loop dropped 5 of 16 reject commands and delayed events
on MQTT by 30 s on 548d7c7: every request read up to 1000 rows under the outbox's own lock and re-published them
all. Now:

- the engineer role is needed (edge/api/access.py) and a ``TokenBucket`` (edge/runtime/ratelimit.py) allows ``api.replays_per_minute`` pages a
  minute for all clients together (a token bucket; more get 429 with ``Retry-After``);
- a page is at most ``api.replay_page_max`` events; the answer's ``X-Next-Since-Seq`` header is where the next
  page starts (absent on the last page);
- ``ReplayReader`` reads from its own read-only SQLite connection: in WAL mode a reader never blocks the writer,
  and it never takes the outbox's lock, so storing a defect event never waits for a replay.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from edge.deliver.outbox import Row


class ReplayReader:
    """Rows of the outbox file with seq > N, from a read-only connection of its own (opened at first use)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # this reader's own; never the outbox's

    def since(self, after_seq: int, limit: int) -> list[Row]:
        with self._lock:
            if self._conn is None:
                self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=1.0, check_same_thread=False)
            cur = self._conn.execute(
                "SELECT seq, topic, payload, event_id, created_at FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (int(after_seq), int(limit)),
            )
            return [Row(int(s), str(t), bytes(p), str(e), float(c)) for s, t, p, e, c in cur]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
