"""Rate-limited logging for every log line a network client can cause.

A client that floods the API (bad requests, refused triggers, connections over the cap) must not be able
to fill the disk with log lines. ``RateLimitFilter`` lets the first record of each kind through, then at
most one per ``interval`` seconds, and says how many were suppressed in between. A "kind" is the logger
name plus the unformatted message template, so different problems never hide each other.
"""

from __future__ import annotations

import logging
import threading
import time

DEFAULT_INTERVAL_S = 10.0
MAX_KINDS = 256  # bound on remembered kinds (templates are few; this only guards against surprises)

# Loggers whose lines a remote client can trigger: uvicorn's protocol warnings ("Invalid HTTP request
# received.", "Exceeded concurrency limit."), the API's own errors, connection-cap refusals, triggers.
CLIENT_FACING_LOGGERS = ("uvicorn", "uvicorn.error", "edge.api", "edge.server", "edge.triggers")


class RateLimitFilter(logging.Filter):
    """First record of a kind passes; then one per ``interval`` with a suppressed-count suffix."""

    def __init__(self, interval: float = DEFAULT_INTERVAL_S, prefixes: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.interval = interval
        self.prefixes = prefixes  # only messages starting with one of these are limited; () = all
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        if self.prefixes and not key[1].startswith(self.prefixes):
            return True
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            if len(self._last) >= MAX_KINDS and key not in self._last:
                self._last.clear()
            self._last[key] = now
            n = self._suppressed.pop(key, 0)
        if n:
            record.msg = f"{record.msg} ({n} similar line(s) suppressed in the last {self.interval:g} s)"
        return True


def install(interval: float = DEFAULT_INTERVAL_S) -> RateLimitFilter:
    """Attach one shared filter to every client-facing logger (idempotent)."""
    for name in CLIENT_FACING_LOGGERS:
        for f in logging.getLogger(name).filters:
            if isinstance(f, RateLimitFilter):
                return f
    f = RateLimitFilter(interval)
    for name in CLIENT_FACING_LOGGERS:
        logging.getLogger(name).addFilter(f)
    # The decider's trigger lines (a refused or queued trigger) follow what clients send; its other lines do not.
    logging.getLogger("edge.decision").addFilter(RateLimitFilter(interval, prefixes=("trigger for part",)))
    return f
