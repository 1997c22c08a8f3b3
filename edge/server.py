"""The HTTP server under the API: uvicorn with bounds a hostile network cannot push past.

- at most ``api.max_connections`` open connections: one more is closed as soon as it is accepted, so
  idle sockets cannot take every file descriptor of the process (the camera needs some to re-open);
- a connection must send its complete request head within ``api.header_timeout_s`` (slowloris and
  idle connections that never send anything are closed);
- idle keep-alive connections close after ``api.keep_alive_timeout_s`` (uvicorn's own timer);
- ``raise_fd_limit()`` lifts the soft RLIMIT_NOFILE to the hard limit at start, and ``connection_cap()``
  keeps the API's share well below it.

Every line a client can cause here is rate-limited (edge/ratelimit.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

FD_RESERVE = 64  # descriptors kept for the camera, the outbox, MQTT, evidence files, logs
FD_API_SHARE = 0.5  # the API may use at most this share of the soft limit


def raise_fd_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE -> hard limit (no privilege needed). Returns (soft, hard) now in force."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return (0, 0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, e)
    return soft, hard


def connection_cap(wanted: int) -> int:
    """``api.max_connections``, lowered if the open-file limit would not leave room for everything else."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except ImportError:
        return wanted
    if soft == resource.RLIM_INFINITY:
        return wanted
    room = max(8, min(int(soft * FD_API_SHARE), soft - FD_RESERVE))
    if wanted > room:
        log.warning("api.max_connections %d lowered to %d (open-file limit %d)", wanted, room, soft)
        return room
    return wanted


def guarded_protocol(max_connections: int, header_timeout_s: float) -> type[H11Protocol]:
    """An h11 protocol class for ``uvicorn.Config(http=...)`` that enforces the connection cap and the
    request-head timeout (see the module docstring)."""

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                log.warning("API: connection refused: %d connections open (api.max_connections)", max_connections)
                transport.abort()  # frees the descriptor now; connection_lost() removes us from the set
                return
            self._head_timer: asyncio.TimerHandle | None = self.loop.call_later(header_timeout_s, self._head_timeout)

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self.cycle is None and not self.transport.is_closing():  # no complete request head yet
                log.info("API: closed a connection that sent no complete request within %g s", header_timeout_s)
                self.transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            timer = getattr(self, "_head_timer", None)
            if timer is not None and self.cycle is not None:
                timer.cancel()
                self._head_timer = None

        def connection_lost(self, exc: Exception | None) -> None:
            timer = getattr(self, "_head_timer", None)
            if timer is not None:
                timer.cancel()
                self._head_timer = None
            super().connection_lost(exc)

    return GuardedH11Protocol


def server_config(app: Any, api_cfg: Any) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` from the ``api:`` section."""
    cap = connection_cap(api_cfg.max_connections)
    return {
        "app": app,
        "http": guarded_protocol(cap, api_cfg.header_timeout_s),
        "timeout_keep_alive": max(1, int(round(api_cfg.keep_alive_timeout_s))),
        "limit_concurrency": cap + 8,  # requests in flight; the connection cap bites first
        "backlog": 128,
        "h11_max_incomplete_event_size": 16 * 1024,  # request head bytes
        "log_level": "warning",
        "log_config": None,
        "access_log": False,
        "lifespan": "off",
    }
