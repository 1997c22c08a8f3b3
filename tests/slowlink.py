"""A TCP forwarder that puts a fixed delay on each direction of every connection: a broker ``delay_s`` away.

Each accepted connection gets its own pair of pipes (one per direction); every chunk read is written to the other
side ``delay_s`` after it was read, in order. Latency only, no bandwidth cap: connections do not slow each other
down, so what delays a message on one of them is what that connection has queued ahead of it. Threads, no asyncio;
``close()`` ends them all.
"""

from __future__ import annotations

import queue
import socket
import threading
import time

from tests.helpers import free_port


class SlowLink:
    def __init__(self, target: tuple[str, int], delay_s: float) -> None:
        self.target = target
        self.delay_s = delay_s
        self.port = free_port()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []
        self.connections = 0
        threading.Thread(target=self._accept, name="slowlink-accept", daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self.connections += 1
            self._socks += [client, upstream]
            self._pipe(client, upstream)
            self._pipe(upstream, client)

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        chunks: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()

        def read() -> None:
            while not self._stop.is_set():
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                chunks.put((time.monotonic() + self.delay_s, data))
                if not data:
                    return

        def write() -> None:
            while True:
                due, data = chunks.get()
                time.sleep(max(0.0, due - time.monotonic()))
                if not data:
                    _shut(dst)
                    return
                try:
                    dst.sendall(data)
                except OSError:
                    _shut(src)
                    return

        threading.Thread(target=read, name="slowlink-read", daemon=True).start()
        threading.Thread(target=write, name="slowlink-write", daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        for s in self._socks:
            _shut(s)
            s.close()


def _shut(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
