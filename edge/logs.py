"""Logging set-up shared by every subcommand (the daemon and the CLI)."""

from __future__ import annotations

import logging
import os
import threading
import time

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str | int | None = None, fmt: str = "text") -> None:
    """Configure the root logger once. ``BOXINSPECT_LOG_LEVEL`` overrides the default level."""
    level = level or os.environ.get("BOXINSPECT_LOG_LEVEL", "INFO")
    if isinstance(level, str):
        level = level.upper()
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler()
    if fmt == "json":
        import json

        class _Json(logging.Formatter):
            def format(self, record: logging.LogRecord) -> str:
                return json.dumps(
                    {
                        "ts": self.formatTime(record),
                        "level": record.levelname,
                        "logger": record.name,
                        "msg": record.getMessage(),
                    }
                )

        handler.setFormatter(_Json())
    else:
        handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)
    # TensorFlow and friends are chatty; keep their noise out of an operator's log.
    for noisy in ("absl", "tensorflow", "h5py", "matplotlib", "PIL", "urllib3", "amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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

    def reset(self) -> None:
        with self._lock:
            self._key = None
            self._suppressed = 0
