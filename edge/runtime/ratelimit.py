"""Rate limits: of log lines (one rule, two ways to use it), and of requests (a token bucket).

``RateLimit`` is the rule: the first line of a kind is logged, then at most one per ``interval`` seconds,
and that one says how many were held back. Code that knows its repeating lines asks it directly
(a flapping broker, a failing frame, a full evidence disk, rejected trigger payloads, crashed MQTT callbacks).

``RateLimitFilter`` applies it to whole loggers, for every log line a network client can cause: a client
that floods the API (bad requests, refused triggers, connections over the cap) must not be able to fill
the disk with log lines. A "kind" is the logger name plus the unformatted message template, so different
problems never hide each other.
"""

from __future__ import annotations

import logging
import threading
import time

DEFAULT_INTERVAL_S = 10.0
MAX_KINDS = 256  # bound on remembered kinds (templates are few; this only guards against surprises)

# Loggers whose lines a remote client can trigger: uvicorn's protocol warnings ("Invalid HTTP request
# received.", "Exceeded concurrency limit."), asyncio's accept errors, the API's own errors, connection-cap refusals, triggers.
CLIENT_FACING_LOGGERS = ("uvicorn", "uvicorn.error", "asyncio", "edge.api.app", "edge.api.server", "edge.triggers",
                         "edge.api.access")  # issue 24: refusals follow what clients send
# Libraries that log from many child loggers (asyncua.server.uaprocessor, ...) at full rate on bad client input:
# their records are limited on the root logger's handlers, where the whole hierarchy arrives (issue 24).
NOISY_LIBRARIES = ("asyncua",)


class RateLimit:
    """For log lines a client, a flapping broker or a bad frame can repeat: the first of a kind is logged,
    then at most one per ``interval`` seconds, and that one says how many were held back.

    ``check(key)`` -> (log it?, how many were suppressed since the last one logged). A new ``key`` (another
    kind of problem) is always logged.
    """

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._key: str | None = None
        self._last = 0.0
        self._suppressed = 0
        self._lock = threading.Lock()

    def check(self, key: str = "") -> tuple[bool, int]:
        now = time.monotonic()
        with self._lock:
            if key != self._key or now - self._last >= self.interval:
                n, self._suppressed = self._suppressed, 0
                self._key, self._last = key, now
                return True, n
            self._suppressed += 1
            return False, 0


class RateLimitFilter(logging.Filter):
    """First record of a kind passes; then one per ``interval`` with a suppressed-count suffix."""

    def __init__(self, interval: float = DEFAULT_INTERVAL_S, prefixes: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.interval = interval
        self.prefixes = prefixes  # only messages starting with one of these are limited; () = all
        self._lock = threading.Lock()
        self._kinds: dict[tuple[str, str], RateLimit] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        if self.prefixes and not key[1].startswith(self.prefixes):
            return True
        with self._lock:
            limit = self._kinds.get(key)
            if limit is None:
                if len(self._kinds) >= MAX_KINDS:
                    self._kinds.clear()
                limit = self._kinds[key] = RateLimit(self.interval)
        emit, n = limit.check()
        if not emit:
            return False
        if n:
            record.msg = f"{record.msg} ({n} similar line(s) suppressed in the last {self.interval:g} s)"
        return True


class LibraryRateLimitFilter(RateLimitFilter):
    """The same rule for every record of the ``names`` logger hierarchies (others pass untouched)."""

    def __init__(self, interval: float, names: tuple[str, ...]) -> None:
        super().__init__(interval)
        self.names = names

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.names):
            return True
        return super().filter(record)


def install_library_limits(interval: float = DEFAULT_INTERVAL_S) -> None:
    """The root logger's handlers limit the noisy libraries' records (idempotent per handler)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, LibraryRateLimitFilter) for f in handler.filters):
            handler.addFilter(LibraryRateLimitFilter(interval, NOISY_LIBRARIES))


def install(interval: float = DEFAULT_INTERVAL_S) -> RateLimitFilter:
    """Attach one shared filter to every client-facing logger (idempotent)."""
    install_library_limits(interval)
    for name in CLIENT_FACING_LOGGERS:
        for f in logging.getLogger(name).filters:
            if isinstance(f, RateLimitFilter):
                return f
    f = RateLimitFilter(interval)
    for name in CLIENT_FACING_LOGGERS:
        logging.getLogger(name).addFilter(f)
    # The decider's trigger lines (a refused or queued trigger) follow what clients send; its other lines do not.
    logging.getLogger("edge.judge.decision").addFilter(RateLimitFilter(interval, prefixes=("trigger for part",)))
    return f


# Request rate limits (issue 24): replays, stored labels.

class RateLimited(Exception):
    """More than a bucket allows: the API answers 429 with ``Retry-After`` (edge/api/app.py)."""

    def __init__(self, what: str, retry_after: float) -> None:
        super().__init__(what)
        self.retry_after = retry_after


class TokenBucket:
    """A token bucket: ``per_minute`` a minute, bursts up to the same number (replays; stored labels)."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._tokens = self.capacity
        self._at = time.monotonic()
        self._lock = threading.Lock()
        self.refused = 0

    def take(self) -> float:
        """0.0 if a page may be served now; else the seconds to wait (and the request is counted as refused)."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            self.refused += 1
            return (1.0 - self._tokens) / self.rate

    def check(self, what: str) -> None:
        """RateLimited(``what``) unless one more may go now."""
        wait = self.take()
        if wait > 0:
            raise RateLimited(what, wait)
