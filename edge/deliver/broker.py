"""A broker for the demo when none is running: Mosquitto where installed, else an embedded Python broker (amqtt).

Production lines should run a real broker (see deploy/docker-compose.yml); this exists so the demo needs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _listen_ports() -> range:
    """Ports the kernel never hands to an outgoing connection: those below its ephemeral range (Linux), else above."""
    try:
        low, high = (int(v) for v in _EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default range
    return range(20000, low) if low - 20000 >= 2000 else range(high + 1, 65536)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free now, for tests and benchmarks to give a listener they start next.

    Bind-to-0 would return a port from the kernel's ephemeral range, which the next outgoing connection (the
    daemon's own MQTT client, say) may take before the listener binds it: "Address already in use" about once in
    a few thousand starts. So the port is drawn at random from outside that range and checked by binding it.
    """
    ports, rng = _listen_ports(), random.SystemRandom()
    for _ in range(100):
        port = rng.choice(ports)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free TCP port on {host} in {ports.start}-{ports.stop - 1} after 100 tries")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class DemoBroker:
    """Start a local MQTT broker on host:port unless one already answers there (the demo, `bench pipeline`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883, prefer: str = "mosquitto") -> None:
        self.host, self.port, self.prefer = host, port, prefer
        self.kind = "none"
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> str:
        if port_open(self.host, self.port):
            self.kind = "existing"
            log.info("using the MQTT broker already running on %s:%d", self.host, self.port)
            return self.kind
        mosq = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        if mosq and self.prefer == "mosquitto":
            conf = Path(tempfile.mkdtemp(prefix="boxinspect-mosq-")) / "mosquitto.conf"
            conf.write_text(f"listener {self.port} {self.host}\nallow_anonymous true\npersistence false\n")
            self._proc = subprocess.Popen([mosq, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.kind = "mosquitto"
        else:
            # Readiness comes from the broker itself: a TCP probe of amqtt makes it log an ERROR ("No data to
            # decode MQTT packet fixed header") that looks like a failure to whoever watches the demo.
            self._thread = threading.Thread(target=self._run_amqtt, name="amqtt-broker", daemon=True)
            self._thread.start()
            self.kind = "amqtt"
            if self._ready.wait(10):
                log.info("started an amqtt broker for the demo on %s:%d", self.host, self.port)
                return self.kind
            raise RuntimeError(f"could not start an MQTT broker on {self.host}:{self.port}: {self._error or 'timed out'}")
        deadline = time.time() + 10
        while time.time() < deadline:
            if port_open(self.host, self.port):
                log.info("started a %s broker for the demo on %s:%d", self.kind, self.host, self.port)
                return self.kind
            time.sleep(0.1)
        raise RuntimeError(f"could not start an MQTT broker on {self.host}:{self.port}")

    def _run_amqtt(self) -> None:
        from amqtt.broker import Broker

        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            broker = Broker(
                {
                    "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
                    "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
                }
            )
            await broker.start()
            self._ready.set()
            await self._stop.wait()
            await broker.shutdown()

        try:
            asyncio.run(serve())
        except BaseException as e:  # reported by start(), which is waiting for readiness
            self._error = e

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            if self._thread:
                self._thread.join(5)
            self._loop = None
