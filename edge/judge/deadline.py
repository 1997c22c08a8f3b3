"""Deadlines and the fail-safe: every part gets exactly one decision, in time or by policy.

A part's deadline is ``reject.deadline_ms`` after its trigger (triggered mode) or after it left the ROI
(continuous mode): the time the box needs to travel to the pusher. See docs/INTEGRATION.md.

- Triggered mode: ``register(part_id, at)`` when the trigger arrives. A watchdog thread checks the pending
  parts; one that has no decision by its deadline gets a ``timeout`` decision (``reject.on_timeout``:
  ``reject``, ``pass`` or ``hold``) through the ``emit`` callback, at once, even while the inspection loop
  is stuck in the model. A model decision that arrives after that is superseded: logged and counted,
  never published as a second decision for the part.
- Continuous mode: the part is the box passage, numbered here (``part_id`` = passage sequence number of this
  daemon run) when it opens (``open_passage``). Its deadline runs from the capture time of the passage's last
  frame (the ROI exit). While it is open, the inspection loop's heartbeat (``heartbeat()``, every loop turn)
  keeps its provisional deadline ``deadline_ms`` ahead: a loop stuck for longer (a stalled model) cannot see
  the box leave, and the watchdog times the part out. A passage too short to be a box is forgotten
  (``forget``): it was never a part.

Every decision gets ``deadline_at``, ``slack_ms`` (deadline minus decision time) and ``late``; the slack
goes into a histogram and late decisions into a counter.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from edge.config import RejectConfig
from edge.judge.decision import Decision
from edge.runtime.ratelimit import RateLimit

log = logging.getLogger(__name__)

SLACK_BUCKETS = (-5, -2, -1, -0.5, -0.25, -0.1, -0.05, 0, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10)
WATCH_MAX_WAIT_S = 0.25  # the watchdog sleeps until the earliest deadline (a new part wakes it), at most this long
TIMEOUT_LABEL = "timeout"


class TriggerGate:
    """Triggers at one per ``min_gap_s`` (a part window) on average, bursts of ``burst`` (parts close together):
    the others are dropped, counted in ``boxinspect_triggers_dropped_total{reason="rate"}`` and logged at most
    once per 10 s with a count."""

    def __init__(self, min_gap_s: float, registry: CollectorRegistry | None = None, burst: int = 10) -> None:
        self.min_gap_s = min_gap_s
        self.burst = float(burst)
        self._tokens = float(burst)
        self._last: float | None = None
        self._lock = threading.Lock()
        self.dropped = Counter("boxinspect_triggers_dropped", "Triggers dropped before becoming a part", ["reason"],
                               registry=registry)
        self.dropped.labels(reason="rate")
        self._log = RateLimit(10.0)

    def admit(self, at: float) -> bool:
        with self._lock:
            if self.min_gap_s <= 0:
                return True
            if self._last is not None:
                self._tokens = min(self.burst, self._tokens + max(0.0, at - self._last) / self.min_gap_s)
            self._last = at
            ok = self._tokens >= 1.0
            if ok:
                self._tokens -= 1.0
        if not ok:
            self.dropped.labels(reason="rate").inc()
            emit, n = self._log.check("rate")
            if emit:
                log.warning("trigger dropped: more than %d in a burst, or more than one per %g ms "
                            "(decision.trigger_burst, decision.trigger_min_gap_ms)%s", int(self.burst),
                            self.min_gap_s * 1000, f"; {n} more dropped since the last line" if n else "")
        return ok


class DeadlineMetrics:
    """The deadline series, registered on the daemon's registry."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry
        self.slack = Histogram(
            "boxinspect_deadline_slack_seconds",
            "Deadline minus decision time per part (negative: the decision came after the part passed the pusher)",
            buckets=SLACK_BUCKETS, registry=r,
        )
        self.late = Counter("boxinspect_decisions_late", "Parts whose decision missed the deadline (timeouts included)", registry=r)
        self.timeouts = Counter(
            "boxinspect_timeouts", "Parts with no model decision by the deadline, by fail-safe action", ["action"], registry=r
        )
        self.superseded = Counter(
            "boxinspect_decisions_superseded", "Model decisions that came after their part's timeout decision", registry=r
        )
        self.pending = Gauge("boxinspect_parts_pending", "Triggered parts waiting for a decision", registry=r)


@dataclass
class Part:
    part_id: str
    started_at: float  # trigger time or passage start (epoch s)
    deadline_at: float  # for an open passage: provisional, moved on by the loop's heartbeat
    mode: str


def timeout_decision(
    part: Part, policy: str, labels: tuple[str, str], threshold: float, model_id: str, reason: str, now: float
) -> Decision:
    """The fail-safe decision of a part that got no model decision by its deadline (or was refused)."""
    return Decision(
        event_id=str(uuid.uuid4()),
        part_id=part.part_id,
        label=TIMEOUT_LABEL,
        is_defect=policy != "pass",  # reject and hold: the part is not passed as good
        score=None,
        max_score=None,
        mean_score=None,
        frame_count=0,
        first_frame=None,
        last_frame=None,
        threshold=threshold,
        model_id=model_id,
        captured_at=None,
        decided_at=now,
        mode=part.mode,
        kind="timeout",
        action=policy,
        reason=reason,
        deadline_at=part.deadline_at,
        slack_ms=(part.deadline_at - now) * 1000.0,
        late=True,
    )


class DeadlineTracker:
    """Pending parts, their deadlines, and the watchdog that times them out.

    ``emit(decision)`` publishes a timeout decision (the daemon's decision path; called from the watchdog
    thread). ``cancel(part_id)`` tells the decider to forget the part. ``context()`` gives
    (labels, threshold, model_id) for timeout decisions.
    """

    def __init__(
        self,
        cfg: RejectConfig,
        emit: Callable[[Decision], None],
        context: Callable[[], tuple[tuple[str, str], float, str]],
        cancel: Callable[[str], Any] | None = None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.deadline_s = cfg.deadline_ms / 1000.0
        self.emit = emit
        self.context = context
        self.cancel = cancel
        self.clock = clock
        self.metrics = DeadlineMetrics(registry)
        self._lock = threading.Lock()
        self._pending: dict[str, deque[Part]] = {}
        self._order: deque[Part] = deque()  # registration order = deadline order (constant deadline_ms)
        self._stop = threading.Event()
        self._wake = threading.Event()  # a new part: the watchdog recomputes its next deadline
        self._thread: threading.Thread | None = None
        self._seq = 0  # continuous mode: passage numbers
        self._auto = 0  # triggers without a part id
        self.decided = 0
        self.late = 0
        self.timeouts = 0
        self.superseded = 0

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="deadline-watchdog", daemon=True)
            self._thread.start()

    def stop(self, reason: str = "daemon stopping") -> None:
        """Stop the watchdog; every part still pending gets its timeout decision now (nothing is dropped)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(2.0)
        with self._lock:
            parts = list(self._order)
            self._order.clear()
            self._pending.clear()
            self.metrics.pending.set(0)
        for part in parts:
            self._time_out(part, reason)

    # -- parts ----------------------------------------------------------------------------------
    def new_part_id(self) -> str:
        with self._lock:
            self._auto += 1
            return f"auto-{self._auto}"

    def register(self, part_id: str, at: float | None = None, mode: str = "triggered") -> Part:
        """A triggered part: its deadline runs from ``at`` (default now)."""
        t = self.clock() if at is None else at
        part = Part(part_id, t, t + self.deadline_s, mode)
        with self._lock:
            self._pending.setdefault(part_id, deque()).append(part)
            self._order.append(part)
            self.metrics.pending.set(len(self._order))
        self._wake.set()
        return part

    def open_passage(self, at: float | None = None) -> str:
        """Continuous mode: a box passage opened. Returns its part id (the passage number)."""
        with self._lock:
            self._seq += 1
            pid = str(self._seq)
        self.register(pid, at, mode="continuous")
        return pid

    def forget(self, part_id: str) -> None:
        """An open passage that ended too short to be a box: not a part, no decision."""
        self._pop(part_id)

    def heartbeat(self, frame_seen: bool = True) -> None:
        """The inspection loop processed a frame: open passages stay ``deadline_ms`` ahead of now. A loop turn without
        a frame (the camera hung) does not move them (issue 24: the deadline slid with the stalled frames, so a box in
        view when the camera stopped never got its fail-safe decision)."""
        if not frame_seen:
            return
        now = self.clock()
        with self._lock:
            for part in self._order:
                if part.mode == "continuous":
                    part.deadline_at = now + self.deadline_s

    def refuse(self, part_id: str, reason: str) -> None:
        """A registered part that will never get a model decision (trigger refused): its timeout decision now."""
        part = self._pop(part_id)
        if part is not None:
            self._time_out(part, reason)

    def _pop(self, part_id: str | None, only: Part | None = None) -> Part | None:
        with self._lock:
            q = self._pending.get(part_id or "")
            if not q:
                return None
            part = q[0]
            if only is not None and part is not only:
                return None
            q.popleft()
            if not q:
                del self._pending[part_id or ""]
            try:
                self._order.remove(part)
            except ValueError:
                pass
            self.metrics.pending.set(len(self._order))
            return part

    def resolve(self, decision: Decision, exit_at: float | None = None) -> bool:
        """Stamp a model decision with its deadline, slack and action. False: its part already got a timeout
        decision (the caller must not publish this one). ``exit_at``: continuous mode, when the box left the ROI."""
        now = decision.decided_at
        if decision.mode == "triggered" or decision.part_id is not None:
            part = self._pop(decision.part_id)
            if part is None:
                self.superseded += 1
                self.metrics.superseded.inc()
                log.warning(
                    "model decision %s (score %.3f) for part %s came after its timeout decision: not published",
                    decision.label, decision.score or 0.0, decision.part_id,
                )
                return False
            deadline = part.deadline_at
            if decision.mode == "continuous":  # the real deadline of a passage: from the ROI exit
                start = exit_at if exit_at is not None else (decision.captured_at or now)
                deadline = start + self.deadline_s
        else:
            with self._lock:
                self._seq += 1
                seq = self._seq
            if decision.part_id is None:
                decision.part_id = str(seq)
            start = exit_at if exit_at is not None else (decision.captured_at or now)
            deadline = start + self.deadline_s
        decision.deadline_at = deadline
        decision.slack_ms = (deadline - now) * 1000.0
        decision.late = now > deadline
        decision.action = decision.action or ("reject" if decision.is_defect else "pass")
        self._count(decision)
        return True

    def _count(self, decision: Decision) -> None:
        self.decided += 1
        self.metrics.slack.observe((decision.slack_ms or 0.0) / 1000.0)
        if decision.late:
            self.late += 1
            self.metrics.late.inc()

    def _time_out(self, part: Part, reason: str) -> None:
        policy = self.cfg.on_timeout
        try:
            labels, threshold, model_id = self.context()
            decision = timeout_decision(part, policy, labels, threshold, model_id, reason, self.clock())
            self.timeouts += 1
            self.metrics.timeouts.labels(action=policy).inc()
            self._count(decision)
            log.warning("TIMEOUT part %s: %s; fail-safe action %s", part.part_id, reason, policy)
            if self.cancel is not None:
                self.cancel(part.part_id)
            self.emit(decision)
        except Exception:  # the watchdog must survive anything a sink throws; the event is in the log
            log.exception("timeout decision for part %s could not be emitted", part.part_id)

    def _watch(self) -> None:
        """Sleep until the earliest deadline of the parts pending (no polling: an idle line costs nothing here);
        a new part wakes the watchdog, and deadlines only ever move later (the loop's heartbeat)."""
        while not self._stop.is_set():
            self._wake.clear()
            now = self.clock()
            due: list[Part] = []
            nxt: float | None = None
            with self._lock:
                for part in self._order:
                    if part.deadline_at <= now:
                        due.append(part)
                    elif nxt is None or part.deadline_at < nxt:
                        nxt = part.deadline_at
            if not due:
                self._wake.wait(WATCH_MAX_WAIT_S if nxt is None else min(WATCH_MAX_WAIT_S, max(0.001, nxt - now)))
                continue
            for part in due:
                if self._pop(part.part_id, only=part) is part:
                    why = (f"no decision within {self.cfg.deadline_ms:g} ms of the trigger" if part.mode == "triggered"
                           else f"the inspection loop stalled for {self.cfg.deadline_ms:g} ms with box passage {part.part_id} open"
                           " (no frame processed: camera hung or loop stuck)")
                    self._time_out(part, why)

    # -- state ----------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._order)

    def stats(self) -> dict[str, Any]:
        return {
            "deadline_ms": self.cfg.deadline_ms,
            "on_timeout": self.cfg.on_timeout,
            "pending": self.pending,
            "decided": self.decided,
            "late": self.late,
            "timeouts": self.timeouts,
            "superseded": self.superseded,
        }
