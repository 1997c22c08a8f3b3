"""SPC alarm (statistical process control): "the line started producing bad boxes".

Two rules over the model decisions (timeout decisions are a different problem, with their own metric, and do
not count here):

- run rule: ``spc.consecutive`` defective parts in a row raise it; it clears after ``spc.clear_consecutive_ok``
  good parts in a row;
- rate rule: a defect rate above ``spc.rate_pct`` over the last ``spc.window`` parts (a full window) raises it;
  it clears at or below ``spc.clear_rate_pct``.

The two thresholds of each rule are the hysteresis: an alarm does not flap on the boundary. The alarm is
raised while either rule is active. Each change is published retained on ``<base>/alarm`` (so a supervisor's
dashboard that connects later sees the state) and shown in ``boxinspect_spc_alarm{rule}``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from edge.config import SpcConfig
from edge.runtime.timeutil import iso_utc

log = logging.getLogger(__name__)

RULES = ("consecutive", "rate")


@dataclass
class AlarmState:
    active: bool = False
    rules: list[str] = field(default_factory=list)  # active rules
    reason: str | None = None
    since: float | None = None
    defect_rate_pct: float | None = None
    consecutive: int = 0
    parts: int = 0

    def to_message(self, line: str, camera: str) -> dict[str, Any]:
        return {
            "line": line,
            "camera": camera,
            "active": self.active,
            "rules": list(self.rules),
            "reason": self.reason,
            "since": None if self.since is None else iso_utc(self.since),
            "defect_rate_pct": None if self.defect_rate_pct is None else round(self.defect_rate_pct, 2),
            "consecutive_defects": self.consecutive,
            "parts_in_window": self.parts,
            "changed_at": iso_utc(),
        }


class SpcMonitor:
    """Feed it every model decision with ``update(is_defect)``; it returns the new state when the alarm changes."""

    def __init__(self, cfg: SpcConfig, registry: CollectorRegistry | None = None) -> None:
        self.cfg = cfg
        self.window: deque[bool] = deque(maxlen=cfg.window)
        self.run = 0  # consecutive defects
        self.ok_run = 0  # consecutive good parts
        self.active: dict[str, bool] = {r: False for r in RULES}
        self.state = AlarmState()
        self.gauge = Gauge("boxinspect_spc_alarm", "1 while the SPC alarm rule is active", ["rule"], registry=registry)
        self.raised = Counter("boxinspect_spc_alarms", "SPC alarms raised, by rule", ["rule"], registry=registry)
        for r in RULES:
            self.gauge.labels(rule=r).set(0)

    @property
    def defect_rate_pct(self) -> float | None:
        if not self.window:
            return None
        return 100.0 * sum(self.window) / len(self.window)

    def update(self, is_defect: bool) -> AlarmState | None:
        cfg = self.cfg
        self.window.append(bool(is_defect))
        if is_defect:
            self.run += 1
            self.ok_run = 0
        else:
            self.run = 0
            self.ok_run += 1
        rate = self.defect_rate_pct or 0.0
        before = dict(self.active)
        reasons: dict[str, str] = {}
        # run rule
        if not self.active["consecutive"] and self.run >= cfg.consecutive:
            self.active["consecutive"] = True
        elif self.active["consecutive"] and self.ok_run >= cfg.clear_consecutive_ok:
            self.active["consecutive"] = False
        if self.active["consecutive"]:
            reasons["consecutive"] = f"{max(self.run, cfg.consecutive)} defective parts in a row (limit {cfg.consecutive})"
        # rate rule: only on a full window
        full = len(self.window) >= cfg.window
        if not self.active["rate"] and full and rate > cfg.rate_pct:
            self.active["rate"] = True
        elif self.active["rate"] and rate <= cfg.clear_rate_pct:
            self.active["rate"] = False
        if self.active["rate"]:
            reasons["rate"] = f"defect rate {rate:.1f}% over the last {len(self.window)} parts (limit {cfg.rate_pct:g}%)"
        for r in RULES:
            self.gauge.labels(rule=r).set(1 if self.active[r] else 0)
            if self.active[r] and not before[r]:
                self.raised.labels(rule=r).inc()
        s = self.state
        s.defect_rate_pct, s.consecutive, s.parts = rate, self.run, len(self.window)
        if self.active == before:
            return None
        was_active = s.active
        s.rules = [r for r in RULES if self.active[r]]
        s.active = bool(s.rules)
        s.reason = "; ".join(reasons[r] for r in s.rules) or None
        if s.active and not was_active:
            s.since = time.time()
            log.warning("SPC ALARM: %s", s.reason)
        elif not s.active and was_active:
            s.since = None
            log.info("SPC alarm cleared (defect rate %.1f%%, %d good parts in a row)", rate, self.ok_run)
        else:
            log.warning("SPC alarm rules now: %s", s.reason)
        return s
