"""The HTTP server under the API: uvicorn with bounds a hostile network cannot push past.

- at most ``api.max_connections`` open connections: one more is closed as soon as it is accepted, so
  idle sockets cannot take every file descriptor of the process (the camera needs some to re-open);
- a connection must send its complete request head within ``api.header_timeout_s`` (slowloris and
  idle connections that never send anything are closed);
- idle keep-alive connections close after ``api.keep_alive_timeout_s`` (uvicorn's own timer);
- a request body must arrive within ``api.body_timeout_s`` plus its size at ``api.body_min_rate_bytes_s``
  (issue 24: 200 clients trickling bodies at one byte a second filled ``api.max_connections``);
- ``raise_fd_limit()`` lifts the soft RLIMIT_NOFILE to the hard limit at start, and ``connection_cap()``
  keeps the API's share well below it.

``start_api(app, api_cfg)`` runs it: uvicorn in a thread on a socket bound first (port 0 -> a free port),
and returns an ``ApiServer`` handle with the URL and ``stop()``.

Every line a client can cause here is rate-limited (edge/runtime/ratelimit.py).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

FD_RESERVE = 64  # descriptors kept for the camera, the outbox, MQTT, evidence files, logs
FD_API_SHARE = 0.5  # the API may use at most this share of the soft limit
API_START_TIMEOUT_S = 10.0


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


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the connection cap, the request-head timeout and the body deadline; the limits
    are class attributes that ``guarded_protocol`` sets on a subclass."""

    max_connections = 64
    header_timeout_s = 10.0
    body_timeout_s = 30.0
    body_min_rate = 20_000.0
    _body_timer: asyncio.TimerHandle | None = None
    _body_start = 0.0
    _body_seen = 0

    def data_received(self, data: bytes) -> None:
        if self._body_timer is not None:
            self._body_seen += len(data)
        super().data_received(data)
        self._arm_body_deadline()

    def _arm_body_deadline(self) -> None:
        """Issue 24: a request body must arrive within ``body_timeout_s`` plus its size at ``body_min_rate``,
        however it trickles in (the head timer covers only the head)."""
        if self._body_timer is not None or self.transport.is_closing():
            return
        if self.cycle is not None and self.conn.their_state is h11.SEND_BODY:
            self._body_start, self._body_seen = self.loop.time(), 0
            self._body_timer = self.loop.call_at(self._body_start + self.body_timeout_s, self._body_check)

    def _body_check(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            return
        now = self.loop.time()
        if self.flow.read_paused:  # the app is not reading yet (waiting for a decode slot): not the client's fault
            self._body_start += 1.0
            self._body_timer = self.loop.call_at(now + 1.0, self._body_check)
            return
        deadline = self._body_start + self.body_timeout_s + self._body_seen / self.body_min_rate
        if now < deadline:
            self._body_timer = self.loop.call_at(deadline, self._body_check)
            return
        log.warning("API: closed a connection whose request body arrived too slowly (%d bytes in %.0f s; "
                    "api.body_timeout_s, api.body_min_rate_bytes_s)", self._body_seen, now - self._body_start)
        self.transport.close()
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            log.warning("API: connection refused: %d connections open (api.max_connections)", self.max_connections)
            transport.abort()  # frees the descriptor now; connection_lost() removes us from the set
            return
        self._head_timer: asyncio.TimerHandle | None = self.loop.call_later(self.header_timeout_s, self._head_timeout)

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.cycle is None and not self.transport.is_closing():  # no complete request head yet
            log.info("API: closed a connection that sent no complete request within %g s", self.header_timeout_s)
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
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().connection_lost(exc)


def guarded_protocol(max_connections: int, header_timeout_s: float, body_timeout_s: float = 30.0,
                     body_min_rate: float = 20_000.0) -> type[H11Protocol]:
    """An h11 protocol class for ``uvicorn.Config(http=...)`` that enforces the connection cap, the
    request-head timeout and the body deadline (see the module docstring).

    uvicorn has no public hook for a body timeout, so ``GuardedH11Protocol`` extends its ``H11Protocol``
    (``cycle``, ``conn``, ``flow``, ``connections``); tests/test_bounds.py runs real slow clients against it and
    fails if an uvicorn upgrade changes what it relies on."""
    limits = {"max_connections": max_connections, "header_timeout_s": header_timeout_s,
              "body_timeout_s": body_timeout_s, "body_min_rate": body_min_rate}
    return type("GuardedH11Protocol", (GuardedH11Protocol,), limits)


def server_config(app: Any, api_cfg: Any) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` from the ``api:`` section."""
    cap = connection_cap(api_cfg.max_connections)
    return {
        "app": app,
        "http": guarded_protocol(cap, api_cfg.header_timeout_s, api_cfg.body_timeout_s, api_cfg.body_min_rate_bytes_s),
        "timeout_keep_alive": max(1, int(round(api_cfg.keep_alive_timeout_s))),
        "limit_concurrency": cap + 8,  # requests in flight; the connection cap bites first
        "backlog": 128,
        "h11_max_incomplete_event_size": 16 * 1024,  # request head bytes
        "log_level": "warning",
        "log_config": None,
        "access_log": False,
        "lifespan": "off",
    }


class QuietServer(uvicorn.Server):
    """uvicorn's server, waking once a second instead of ten times (uvicorn polls ``should_exit`` and refreshes
    its Date header on a 0.1 s tick: about 0.2 % of a core on an idle line). The Date header stays exact to the
    second; ``request_exit()`` ends the wait at once, so stopping is not slower."""

    TICK_S = 1.0

    _wake: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864000  # every tick is a "full second" tick for on_tick (Date header)
            try:
                await asyncio.wait_for(self._wake.wait(), self.TICK_S)
            except asyncio.TimeoutError:
                pass
            should_exit = await self.on_tick(counter)

    def request_exit(self) -> None:
        """``should_exit``, and wake the main loop now (from any thread)."""
        self.should_exit = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # the loop has already closed
                pass


@dataclass
class ApiServer:
    """A running API server (``start_api``): its URL, and ``stop()``."""

    server: QuietServer
    thread: threading.Thread
    url: str

    def stop(self, timeout: float) -> None:
        """Ask uvicorn to exit and wait for its thread at most ``timeout`` seconds."""
        self.server.request_exit()
        self.thread.join(timeout=timeout)


def start_api(app: Any, api_cfg: Any, start_timeout_s: float = API_START_TIMEOUT_S) -> ApiServer:
    """Serve ``app`` on ``api_cfg.host:api_cfg.port`` with ``server_config``'s bounds, uvicorn in a daemon
    thread. The socket is bound here, so a port in use is a clear RuntimeError and port 0 gets a free port
    (logged). Returns once the server accepts connections; RuntimeError if it did not start in time."""
    family = socket.AF_INET6 if ":" in api_cfg.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((api_cfg.host, api_cfg.port))
    except OSError as e:
        sock.close()
        raise RuntimeError(f"api: cannot listen on {api_cfg.host}:{api_cfg.port}: {e.strerror}") from None
    sock.listen(64)
    port = sock.getsockname()[1]
    server = QuietServer(uvicorn.Config(**server_config(app, api_cfg)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="api", daemon=True)
    thread.start()
    host = f"[{api_cfg.host}]" if family == socket.AF_INET6 else api_cfg.host
    handle = ApiServer(server, thread, f"http://{host}:{port}")
    deadline = time.monotonic() + start_timeout_s
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        handle.stop(1.0)
        raise RuntimeError(f"api: the HTTP server did not start within {start_timeout_s:g} s (see the log above)")
    log.info("API listening on %s (docs at %s/docs)", handle.url, handle.url)
    return handle
