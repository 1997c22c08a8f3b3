"""Is the inspection loop still turning? A heartbeat for /healthz, and systemd's sd_notify.

The loop calls :meth:`Heartbeat.beat` once per iteration. An iteration waits for a frame at most
``READ_TIMEOUT_S`` (the camera being away does not stop the loop; it only makes iterations empty), so a
loop that has not completed an iteration for ``liveness_timeout_s`` is stuck in the code, e.g. a model
invoke that never returns. ``/healthz`` then answers 503, and the loop's ``WATCHDOG=1`` pings to systemd
stop, so systemd (``WatchdogSec=``) or Docker (``HEALTHCHECK``) restarts the daemon.

:func:`sd_notify` is the whole of systemd's notify protocol the daemon needs: one datagram to the unix
socket in ``$NOTIFY_SOCKET`` (a leading ``@`` is the abstract namespace). Without the variable it does
nothing, so the same code runs under Docker, K3s or a terminal.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)


def sd_notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` (e.g. ``"READY=1"``) to systemd. False if not under systemd or the send failed."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError as e:
        log.warning("sd_notify %r to %s failed: %s", message.split("\n", 1)[0], env.get("NOTIFY_SOCKET"), e)
        return False


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of systemd's WatchdogSec), or None if no watchdog is asked for."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0 or (pid.isdigit() and int(pid) != os.getpid()):
        return None
    return int(usec) / 1e6 / 2


@dataclass(frozen=True)
class Liveness:
    alive: bool
    loop_age_s: float  # seconds since the loop last completed an iteration
    phase: str  # what the loop was doing at its last beat ("starting", "waiting for a frame", "frame 123")
    reason: str


class Heartbeat:
    """The loop's pulse. ``beat()`` from the loop (one thread); ``check()`` from any thread."""

    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last = clock()
        self._phase = "starting"
        self._camera_waiting = False
        self._stopped = False
        self._watchdog_every = watchdog_interval()
        self._last_ping = 0.0

    def beat(self, phase: str, camera_waiting: bool = False) -> None:
        """The loop completed an iteration; ``phase`` is what it does next (shown if it never comes back)."""
        now = self._clock()
        with self._lock:
            self._last, self._phase, self._camera_waiting = now, phase, camera_waiting
        if self._watchdog_every is not None and now - self._last_ping >= self._watchdog_every:
            self._last_ping = now
            sd_notify("WATCHDOG=1")

    def stopped(self) -> None:
        """The loop ended on purpose (shutdown): not a hang."""
        with self._lock:
            self._stopped = True

    def check(self) -> Liveness:
        now = self._clock()
        with self._lock:
            age, phase, waiting, stopped = now - self._last, self._phase, self._camera_waiting, self._stopped
        if stopped:
            return Liveness(True, age, "stopping", "shutting down")
        if age > self.timeout_s:
            return Liveness(
                False, age, phase,
                f"inspection loop hung: no iteration completed for {age:.0f} s "
                f"(limit liveness_timeout_s={self.timeout_s:g}); stuck at: {phase}",
            )
        if waiting:
            return Liveness(True, age, phase, "loop running; waiting for frames from the camera (see /readyz)")
        return Liveness(True, age, phase, "loop running")
