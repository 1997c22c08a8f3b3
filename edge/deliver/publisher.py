"""One worker thread that runs jobs in the order they were submitted: the daemon's decision publisher.

The inspection loop must never wait on the disk or the network: a decision's evidence JPEGs, the outbox write
(an fsync) and the MQTT hand-off run here, one decision after another in decision order, while the loop reads
the next frame. ``submit`` only blocks when ``max_pending`` jobs are already waiting (a stuck disk): the loop
then slows down instead of piling up events in memory. ``stop`` runs everything submitted before it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_STOP = object()


class OrderedWorker:
    """Runs ``fn(job)`` for each submitted job on one thread, in submission order. Exceptions are logged."""

    def __init__(self, fn: Callable[[Any], None], name: str = "publisher", max_pending: int = 1000) -> None:
        self.fn = fn
        self.name = name
        self.max_pending = max_pending
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._pending = 0
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.errors = 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    @property
    def pending(self) -> int:
        with self._cond:
            return self._pending

    def start(self) -> OrderedWorker:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return self

    def submit(self, job: Any) -> bool:
        """Queue ``job``; False if the worker is not running (the caller then runs it itself)."""
        if not self.running:
            return False
        with self._cond:
            while self._pending >= self.max_pending and self.running:
                self._cond.wait(0.5)  # backpressure: the worker is stuck (disk); never drop a decision
            self._pending += 1
        self._queue.put(job)
        return True

    def drain(self, timeout: float) -> bool:
        """Wait until every submitted job has run. True if none is left."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    return self._pending == 0
                self._cond.wait(left)
        return True

    def stop(self, timeout: float) -> bool:
        """Run what was submitted (within ``timeout``), then end the thread. True if nothing was left."""
        if self._thread is None:
            return True
        done = self.drain(timeout)
        self._stopping = True
        self._queue.put(_STOP)
        self._thread.join(max(0.1, timeout))
        if not done:
            log.error("%s: %d decision(s) not published within %.1f s at shutdown", self.name, self.pending, timeout)
        return done

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            try:
                self.fn(job)
            except Exception:  # a bug in one job must not stop the next ones
                self.errors += 1
                log.exception("%s: a job failed", self.name)
            finally:
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()
