"""Timestamps of the daemon's frame path, for ``boxinspect bench pipeline`` (``boxinspect run --trace FILE``).

Off by default (the daemon's ``trace`` is None). When on, the loop adds two clock reads per frame into
preallocated arrays, and each decision one small dict: when its deciding frame was read, when the loop handed it
to the publisher, when the event was stored in the outbox and when the broker's PUBACK came back (from the
sink's ``on_acked`` hook). At exit everything is written to one JSON file. All times are ``time.time()``.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MAX_FRAMES = 2_000_000  # ~32 MB of float64 for the per-frame times at most
MAX_EVENTS = 200_000


class PipelineTrace:
    """Frame and decision timestamps of one daemon run (thread-safe where it is called from several threads)."""

    def __init__(self, path: str | Path, max_frames: int = MAX_FRAMES) -> None:
        self.path = Path(path)
        self._read = np.zeros(max_frames, np.float64)  # when the loop got the frame
        self._done = np.zeros(max_frames, np.float64)  # when the loop was done with it
        self._scored = np.zeros(max_frames, np.bool_)
        self.n = 0
        self.cpu_first: float | None = None  # process CPU seconds when the first frame was read
        self.cpu_last: float | None = None
        self.events: dict[str, dict[str, Any]] = {}
        self._by_seq: dict[int, str] = {}
        self._acks: dict[int, float] = {}
        self._lock = threading.Lock()

    # -- the loop (main thread) ---------------------------------------------------------------
    def frame(self, read_at: float, done_at: float, scored: bool) -> None:
        i = self.n
        if i >= len(self._read):
            return
        if i == 0:
            self.cpu_first = time.process_time()
        self._read[i] = read_at
        self._done[i] = done_at
        self._scored[i] = scored
        self.n = i + 1
        if i % 64 == 0:
            self.cpu_last = time.process_time()
            self._cpu_last_at = i

    # -- decisions (publisher thread) ----------------------------------------------------------
    def decision(self, event_id: str, **times: Any) -> None:
        with self._lock:
            if len(self.events) < MAX_EVENTS:
                self.events[event_id] = dict(times)

    def decision_at(self, event_id: str, **times: Any) -> None:
        with self._lock:
            ev = self.events.get(event_id)
            if ev is not None:
                ev.update(times)

    def stored(self, event_id: str, seq: int | None, at: float) -> None:
        with self._lock:
            ev = self.events.get(event_id)
            if ev is None:
                return
            ev["stored_at"] = at
            ev["seq"] = seq
            if seq is not None:
                self._by_seq[seq] = event_id
                ack = self._acks.pop(seq, None)
                if ack is not None:
                    ev["puback_at"] = ack

    # -- the MQTT sink's sender thread ---------------------------------------------------------
    def acked(self, seq: int, at: float) -> None:
        with self._lock:
            event_id = self._by_seq.pop(seq, None)
            if event_id is None:
                self._acks[seq] = at  # PUBACK before stored() returned (possible: another thread)
                return
            self.events[event_id].setdefault("puback_at", at)

    # -- exit ----------------------------------------------------------------------------------
    def dump(self) -> None:
        n = self.n
        usage = resource.getrusage(resource.RUSAGE_SELF)
        last_cpu_frame = getattr(self, "_cpu_last_at", 0)
        doc = {
            "pid": os.getpid(),
            "frames": n,
            "read_at": self._read[:n].round(6).tolist(),
            "done_at": self._done[:n].round(6).tolist(),
            "scored": self._scored[:n].astype(int).tolist(),
            # process CPU between the first frame and frame ``cpu_last_frame`` (all threads)
            "cpu_first_s": self.cpu_first,
            "cpu_last_s": self.cpu_last,
            "cpu_last_frame": last_cpu_frame,
            "max_rss_kb": usage.ru_maxrss,
            "events": list(self.events.values()),
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(doc), encoding="utf-8")
        os.replace(tmp, self.path)
        log.info("trace: %d frames, %d decisions written to %s", n, len(self.events), self.path)
