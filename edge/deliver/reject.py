"""Reject outputs: what makes the pusher fire. See docs/INTEGRATION.md for how a PLC or Node-RED consumes them.

- MQTT command on ``<base>/reject`` (``reject.mqtt``): one JSON message per part whose action is ``reject``
  or ``hold``, QoS 1, not retained (a retained command would fire again for every new subscriber). A
  command is not stored in the outbox: after its deadline it is useless. While the broker is away the
  command is counted as failed and logged; the defect event itself still goes through the outbox.
- GPIO pulse (``reject.gpio``): the line goes active for ``pulse_ms`` per reject, through libgpiod's
  python binding (``gpiod`` >= 2, the v2 API: ``gpiod.request_lines`` + ``LineSettings``). The pulse is
  ended by a timer thread, so the inspection loop never waits for it; a reject during a pulse extends it.

``PulseOutput`` is the interface; ``GpiodPulse`` drives a real chip and takes the ``request_lines``
function as a parameter, so tests give it a fake chip.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter

from edge.config import GpioConfig, RejectConfig
from edge.runtime.timeutil import iso_utc

log = logging.getLogger(__name__)

COMMAND_ACTIONS = ("reject", "hold")


class PulseOutput(Protocol):
    """A digital output that can be pulsed (the pusher's solenoid valve, a PLC input)."""

    def pulse(self, seconds: float) -> None: ...

    @property
    def active(self) -> bool: ...

    def close(self) -> None: ...


def request_output_line(chip: str, line: int, active_low: bool, request_lines: Callable[..., Any] | None,
                        consumer: str, key: str) -> tuple[Any, Any, Any]:
    """One GPIO line as an output, inactive, through libgpiod v2 (``request_lines`` defaults to
    ``gpiod.request_lines``): the request and the active and inactive values. Errors name ``key``."""
    try:
        import gpiod
        from gpiod.line import Direction, Value
    except ImportError as e:  # the optional extra is missing
        raise RuntimeError(f"{key}: the python package gpiod is not installed (pip install 'boxinspect[plant]')") from e
    settings = gpiod.LineSettings(direction=Direction.OUTPUT, output_value=Value.INACTIVE, active_low=active_low)
    request = request_lines or gpiod.request_lines
    try:
        return request(chip, config={line: settings}, consumer=consumer), Value.ACTIVE, Value.INACTIVE
    except OSError as e:
        raise RuntimeError(f"{key}: cannot request line {line} of {chip}: {e.strerror or e}") from None


class GpiodPulse:
    """A GPIO line pulsed through libgpiod v2. ``request_lines`` defaults to ``gpiod.request_lines``."""

    def __init__(self, cfg: GpioConfig, request_lines: Callable[..., Any] | None = None, consumer: str = "boxinspect") -> None:
        self.cfg = cfg
        self.line = cfg.line
        self._request, self._active_value, self._inactive_value = request_output_line(
            cfg.chip, cfg.line, cfg.active_low, request_lines, consumer, "reject.gpio")
        self._lock = threading.Lock()
        self._until = 0.0
        self._timer: threading.Timer | None = None
        self._closed = False
        log.info("reject GPIO: %s line %d (%s), %g ms pulses", cfg.chip, cfg.line,
                 "active low" if cfg.active_low else "active high", cfg.pulse_ms)

    @property
    def active(self) -> bool:
        with self._lock:
            return self._timer is not None

    def pulse(self, seconds: float) -> None:
        with self._lock:
            if self._closed:
                return
            self._until = max(self._until, time.monotonic() + seconds)
            if self._timer is None:
                self._request.set_value(self.line, self._active_value)
                self._arm(seconds)

    def _arm(self, seconds: float) -> None:
        self._timer = threading.Timer(seconds, self._end)
        self._timer.daemon = True
        self._timer.start()

    def _end(self) -> None:
        with self._lock:
            left = self._until - time.monotonic()
            if left > 0.001 and not self._closed:  # extended by a reject during the pulse
                self._arm(left)
                return
            self._timer = None
            if not self._closed:
                self._request.set_value(self.line, self._inactive_value)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            try:
                self._request.set_value(self.line, self._inactive_value)
            finally:
                self._request.release()


class RejectOutput:
    """Sends the reject of one part to the MQTT command topic and/or the GPIO pulse.

    ``publish(topic, payload, qos, retain) -> bool`` is the MQTT sink's publish; None without MQTT.
    ``on_pulse(active)`` (optional) follows the pulse, for the OPC UA reject variable.
    """

    def __init__(
        self,
        cfg: RejectConfig,
        topic: str,
        publish: Callable[[str, bytes, int, bool], bool] | None,
        pulse: PulseOutput | None = None,
        registry: CollectorRegistry | None = None,
        on_pulse: Callable[[bool], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.topic = topic
        self.publish = publish if cfg.mqtt else None
        self.pulse_output = pulse
        self.on_pulse = on_pulse
        self.commands = Counter("boxinspect_reject_commands", "Reject/hold commands sent, by output and outcome",
                                ["output", "outcome"], registry=registry)
        self.sent = 0
        self._pulse_lock = threading.Lock()
        self._pulse_until = 0.0
        self._pulsing = False

    def handle(self, event: dict[str, Any]) -> None:
        """Called for every published decision event; acts on ``action`` reject and hold."""
        action = event.get("action")
        if action not in COMMAND_ACTIONS:
            return
        if self.publish is not None:
            cmd = {
                "part_id": event.get("part_id"),
                "event_id": event.get("event_id"),
                "action": action,
                "kind": event.get("kind"),
                "reason": event.get("reason"),
                "deadline_at": event.get("deadline_at"),
                "late": event.get("late"),
                "sent_at": iso_utc(),
            }
            ok = False
            try:
                ok = self.publish(self.topic, json.dumps(cmd, separators=(",", ":")).encode(), 1, False)
            except Exception as e:
                log.warning("reject command for part %s not sent: %s", cmd["part_id"], e)
            self.commands.labels(output="mqtt", outcome="sent" if ok else "failed").inc()
            if ok:
                self.sent += 1
            else:
                log.warning("reject command for part %s NOT sent on %s (broker away?)", cmd["part_id"], self.topic)
        if action != "reject":
            return
        seconds = self.cfg.gpio.pulse_ms / 1000.0
        if self.pulse_output is not None:
            try:
                self.pulse_output.pulse(seconds)
                self.commands.labels(output="gpio", outcome="sent").inc()
            except Exception as e:
                self.commands.labels(output="gpio", outcome="failed").inc()
                log.error("reject GPIO pulse for part %s failed: %s", event.get("part_id"), e)
        if self.on_pulse is not None:  # the OPC UA reject variable: true for pulse_ms per reject
            with self._pulse_lock:
                self._pulse_until = max(self._pulse_until, time.monotonic() + seconds)
                start = not self._pulsing
                self._pulsing = True
            if start:
                self.on_pulse(True)
                self._arm_pulse(seconds)

    def _arm_pulse(self, seconds: float) -> None:
        t = threading.Timer(seconds, self._pulse_over)
        t.daemon = True
        t.start()

    def _pulse_over(self) -> None:
        with self._pulse_lock:
            left = self._pulse_until - time.monotonic()
            if left > 0.001:
                self._arm_pulse(left)
                return
            self._pulsing = False
        if self.on_pulse is not None:
            self.on_pulse(False)

    def close(self) -> None:
        if self.pulse_output is not None:
            try:
                self.pulse_output.close()
            except Exception as e:
                log.warning("reject GPIO: release failed: %s", e)
