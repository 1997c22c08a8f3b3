"""Test helpers, each defined once: ports, waiting, an MQTT subscriber, a metrics reader, the daemon as a process.

Plain module (no pytest import), so tests, conftest and tests/broker.py all use it::

    from tests.helpers import DaemonProc, Subscriber, free_port, metric, port_open, wait_for
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from boxinspect.broker import port_open

__all__ = ["DaemonProc", "Subscriber", "edit_sidecar", "free_port", "metric", "port_open", "wait_for"]

DECISION_RE = re.compile(r"decision (\S+) score=([0-9.]+) .*event=([0-9a-f-]{36})")
START_TIMEOUT = 90.0  # model load + first frames on a busy 2-core machine


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the usual bind-to-0 trick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for(
    cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.2, d: DaemonProc | None = None
) -> Any:
    """Poll ``cond`` until it returns something truthy (returned); AssertionError naming ``what`` on timeout.

    With ``d`` (a DaemonProc), the assertion message carries the tail of the daemon's log.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = "\n".join(d.log().splitlines()[-60:]) if d is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")
        time.sleep(interval)


def _labels_match(have: Mapping[str, str], want: Mapping[str, str]) -> bool:
    return all(have.get(k) == v for k, v in want.items())


def metric(source: Any, name: str, default: float | None = 0.0, **labels: str) -> float | None:
    """One Prometheus sample: ``source`` is Prometheus exposition text (``/metrics``), a registry, or an
    object with a ``registry`` (edge.metrics.Metrics). Labels not given match anything; the first sample
    wins. ``default`` when there is no such sample."""
    if isinstance(source, str):
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(source):
            for s in family.samples:
                if s.name == name and _labels_match(s.labels, labels):
                    return float(s.value)
        return default
    registry = getattr(source, "registry", source)
    for family in registry.collect():
        for s in family.samples:
            if s.name == name and _labels_match(s.labels, labels):
                return float(s.value)
    return default


class Subscriber:
    """A paho client that records every message it receives (for assertions in tests).

    ``messages``: the JSON payloads (non-JSON skipped); ``raw``: every (topic, payload, retain).
    ``persistent=True`` uses a fixed client id and clean_session False, so with a persistent broker nothing
    published while it reconnects after a broker restart is lost.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topics: str | list[str] = "#",
        client_id: str | None = None,
        persistent: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.messages: list[dict[str, Any]] = []
        self.raw: list[tuple[str, bytes, bool]] = []  # (topic, payload, retain)
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-sub-{uuid.uuid4().hex[:8]}",
            clean_session=not persistent,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(0.2, 1)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.close()
            raise TimeoutError(f"subscriber could not subscribe to {self.topics} on {host}:{port}")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if not reason_code.is_failure:
            client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client, userdata, msg) -> None:  # noqa: ANN001
        with self._cond:
            self.raw.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            try:
                self.messages.append(json.loads(msg.payload))
            except ValueError:
                pass
            self._cond.notify_all()

    def on(self, suffix: str) -> list[tuple[str, bytes, bool]]:
        """Messages whose topic ends with ``suffix`` (for example ``/defect``)."""
        with self._cond:
            return [m for m in self.raw if m[0].endswith(suffix)]

    def json(self, suffix: str) -> list[dict]:
        return [json.loads(p) for _, p, _ in self.on(suffix)]

    def ids(self) -> list[str]:
        """event_id of every JSON message, in arrival order (repeats included)."""
        return [m["event_id"] for m in self.messages]

    def wait_for(self, predicate: Callable[[Subscriber], bool], timeout: float = 10.0) -> bool:
        """Wait until ``predicate(self)`` is true (re-checked on every message)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
            return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DaemonProc:
    """One daemon process (``python -m boxinspect.cli run``) with a config written to ``workdir``."""

    def __init__(self, workdir: Path, cfg: dict[str, Any], name: str = "daemon") -> None:
        import yaml

        self.workdir = workdir
        self.cfg = cfg
        self.name = name
        self.cfg_path = workdir / f"{name}.yaml"
        self.log_path = workdir / f"{name}.log"
        self.cfg_path.write_text(yaml.safe_dump(cfg))
        self.proc: subprocess.Popen[bytes] | None = None
        port = cfg.get("api", {}).get("port")
        self.base = f"http://127.0.0.1:{port}" if port else None

    def start(self, *extra: str) -> DaemonProc:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "boxinspect.cli", "run", "--config", str(self.cfg_path), *extra],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def get(self, path: str, **kw: Any) -> Any:
        import httpx

        assert self.base, "no API port"
        return httpx.get(self.base + path, timeout=5, **kw)

    def wait_api(self, timeout: float = START_TIMEOUT) -> None:
        import httpx

        if self.base is None:  # port 0: the daemon logs the URL it picked
            m = wait_for(lambda: re.search(r"API listening on (http://\S+)", self.log()) or self._dead(), timeout, "the API URL in the log")
            self.base = m.group(1)

        def up() -> bool:
            self._dead()
            try:
                return self.get("/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout, f"/healthz of {self.name}", d=self)

    def _dead(self) -> bool:
        assert self.alive(), f"{self.name} exited with {self.proc.returncode if self.proc else None}:\n{self.log()}"
        return False

    def status(self) -> dict[str, Any]:
        return self.get("/status").json()

    def metric(self, name: str, **labels: str) -> float:
        """A sample from ``/metrics`` (0.0 when absent)."""
        return float(metric(self.get("/metrics").text, name, **labels) or 0.0)

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def decisions(self) -> list[tuple[str, float, str]]:
        """(label, score, event_id) of every decision the daemon logged, in order."""
        return [(m.group(1), float(m.group(2)), m.group(3)) for m in DECISION_RE.finditer(self.log())]

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)


def edit_sidecar(model: Path, change: Callable[[dict[str, Any]], None], reseal: bool = True) -> dict[str, Any]:
    """Apply ``change`` to the sidecar of ``model``. ``reseal`` recomputes package_sha256, as convert would
    (a legitimately re-made package); without it the edit is a tampering the loader must refuse."""
    from edge.model_package import package_digest, sidecar_path

    side = sidecar_path(model)
    doc = json.loads(side.read_text())
    change(doc)
    if reseal:
        doc["package_sha256"] = package_digest(doc)
    side.write_text(json.dumps(doc, indent=1))
    return doc
