"""Is the inspection loop still turning? A heartbeat for /healthz, and systemd's sd_notify.

The loop calls :meth:`Heartbeat.beat` once per iteration. An iteration waits for a frame at most
``READ_TIMEOUT_S`` (the camera being away does not stop the loop; it only makes iterations empty), so a
loop that has not completed an iteration for ``liveness_timeout_s`` is stuck in the code, e.g. a model
invoke that never returns. ``/healthz`` then answers 503, and the loop's ``WATCHDOG=1`` pings to systemd
stop, so systemd (``WatchdogSec=``) restarts the daemon; and past ``liveness_exit_s`` :class:`HangExit` logs every
thread's stack and exits the process, so Docker's restart policy and Kubernetes restart it too.

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
from typing import Any

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


# --------------------------------------------------------------------------------------------------
# Hang -> exit: the same restart on every runtime (systemd, Docker restart policies, Kubernetes)
# --------------------------------------------------------------------------------------------------

EXIT_HUNG = 4  # the process exit code after the liveness watchdog ended a hung daemon (docs/DEPLOY.md)
CHECK_EVERY_S = 1.0


def thread_stacks() -> str:
    """Every thread's Python stack, as ``faulthandler`` writes it (it needs no lock a stuck thread could hold),
    with each thread id followed by its name."""
    import faulthandler
    import tempfile

    names = {t.ident: t.name for t in threading.enumerate()}
    with tempfile.TemporaryFile(mode="w+") as f:
        faulthandler.dump_traceback(file=f, all_threads=True)
        f.seek(0)
        text = f.read()
    for ident, name in names.items():
        if ident is not None:
            text = text.replace(f"hread 0x{ident:016x}", f"hread 0x{ident:016x} ({name})")  # [Tt]hread
    return text.rstrip()


class HangExit:
    """A thread that ends the process when the loop has not turned for ``exit_after_s``.

    Docker restart policies and Kubernetes act on a process that exits, not on one that answers 503 (and only
    systemd has a watchdog), so a daemon whose loop is stuck logs why, logs every thread's stack (to find the
    stuck call) and exits with :data:`EXIT_HUNG`; the runtime then restarts it (``Restart=on-failure``,
    ``restart: unless-stopped``, the pod's ``restartPolicy``). Before the loop's first beat (start-up) and
    after it stopped on purpose (shutdown) it does nothing: start-up has ``TimeoutStartSec=``.
    """

    def __init__(
        self,
        heartbeat: Heartbeat,
        exit_after_s: float,
        exit: Callable[[int], object] = os._exit,
        check_every_s: float = CHECK_EVERY_S,
    ) -> None:
        self.heartbeat = heartbeat
        self.exit_after_s = exit_after_s
        self._exit = exit
        self._every = check_every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hang-exit", daemon=True)

    def start(self) -> HangExit:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            if self.check():
                return

    def check(self) -> bool:
        """One look at the heartbeat; True if it ended the process (or would have, with a test's ``exit``)."""
        live = self.heartbeat.check()
        if live.alive or live.phase == "starting" or live.loop_age_s < self.exit_after_s:
            return False
        log.critical(
            "liveness: inspection loop stuck for %.0f s (limit liveness_exit_s=%g) at: %s; exiting with code %d "
            "so that systemd, Docker or Kubernetes restarts the daemon. Stacks of all threads:\n%s",
            live.loop_age_s, self.exit_after_s, live.phase, EXIT_HUNG, thread_stacks(),
        )
        for h in logging.getLogger().handlers:
            try:
                h.flush()
            except (OSError, ValueError):  # a closed stream must not keep a hung process alive
                pass
        self._exit(EXIT_HUNG)
        return True


def export_liveness(heartbeat: Heartbeat, registry: Any) -> None:
    """``boxinspect_loop_alive`` (1 while the loop turns, 0 when hung) and ``boxinspect_loop_age_seconds`` on
    ``registry``, read from the heartbeat at every scrape (the alert rules use both)."""
    from prometheus_client import Gauge

    alive = Gauge("boxinspect_loop_alive", "1 while the inspection loop turns; 0 when it is hung "
                  "(liveness_timeout_s)", registry=registry)
    alive.set_function(lambda: 1.0 if heartbeat.check().alive else 0.0)
    age = Gauge("boxinspect_loop_age_seconds", "Seconds since the inspection loop last completed an iteration",
                registry=registry)
    age.set_function(lambda: heartbeat.check().loop_age_s)
