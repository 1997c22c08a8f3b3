"""Stack-light lamps on GPIO lines (``station.gpio``): each held active while its alarm is (issue 26).

The alarms themselves (an NG not yet acknowledged, the SPC alarm) are the station's (edge/api/station.py), which
also publishes them on MQTT for a PLC (``station.outputs``). A lamp here is a level, not a pulse: the line goes
active when the alarm is raised and inactive when it is acknowledged or clears.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from edge.config import StackLightGpio
from edge.deliver.reject import request_output_line

log = logging.getLogger(__name__)


class GpiodLamp:
    """One lamp: ``set(True)`` drives its line active, ``set(False)`` inactive; only changes reach the chip."""

    def __init__(self, alarm: str, cfg: StackLightGpio, request_lines: Callable[..., Any] | None = None) -> None:
        self.alarm, self.line = alarm, cfg.line
        self._request, self._active, self._inactive = request_output_line(
            cfg.chip, cfg.line, cfg.active_low, request_lines, "boxinspect-stacklight", f"station.gpio.{alarm}")
        self._lock = threading.Lock()
        self.on: bool | None = None
        log.info("stack light: %s lamp on %s line %d (%s)", alarm, cfg.chip, cfg.line,
                 "active low" if cfg.active_low else "active high")

    def set(self, on: bool) -> None:
        with self._lock:
            if on == self.on:
                return
            self._request.set_value(self.line, self._active if on else self._inactive)
            self.on = on

    def close(self) -> None:
        with self._lock:
            try:
                self._request.set_value(self.line, self._inactive)
            finally:
                self._request.release()
