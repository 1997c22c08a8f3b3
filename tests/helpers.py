"""Test helpers, each defined once: ports, waiting, an MQTT subscriber, a metrics reader, the daemon as a process,
and stand-ins for the daemon's parts for in-process loop tests (``Daemon(cfg, model, capture=..., sink=...)``):
``FakeClassifier`` (scores from a function), ``ReplayCapture`` (real frames, e.g. ``video_frames(path)``),
``RecordingSink`` (keeps what is published, can be told to fail).

Plain module (no pytest import), so tests, conftest and tests/broker.py all use it::

    from tests.helpers import DaemonProc, Subscriber, free_port, metric, port_open, wait_for
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np

from edge.capture.frames import Frame
from edge.deliver.broker import free_port, port_open
from edge.deliver.outbox import OutboxError
from edge.judge.localize import NO_CROP
from edge.state import CameraState, LoadedModel

__all__ = [
    "DaemonProc", "FakeClassifier", "Publisher", "RecordingSink", "ReplayCapture", "Subscriber", "cache_lock", "cached_video",
    "daemon_client", "edge_config", "tiny_daemon_cfg", "edit_sidecar", "failing_golden", "fake_model", "first_occurrences", "free_port", "package_copies",
    "metric", "port_open", "topic_base", "video_frames", "wait_for",
]

DECISION_RE = re.compile(r"decision (\S+) score=([0-9.]+) .*event=([0-9a-f-]{36})")
START_TIMEOUT = 90.0  # model load + first frames on a busy 2-core machine


def cache_lock(path: Path) -> Any:
    """A file lock (``path``.lock) held while the cached artefact ``path`` is checked and made, so parallel
    workers (``pytest -n 2``) or two local runs make it once and never read it half-written."""
    from filelock import FileLock

    return FileLock(f"{path}.lock")


def cached_video(path: Path, **make_video_kw: Any) -> tuple[Path, dict[str, Any]]:
    """A generated conveyor video (``boxinspect.synth.make_video``) at ``path`` and its ground truth, made once
    (under ``cache_lock``) and read back from ``path``.json afterwards."""
    from boxinspect.synth import make_video

    gt_path = path.with_suffix(".json")
    with cache_lock(path):
        if path.exists() and gt_path.exists():
            return path, json.loads(gt_path.read_text())
        path.parent.mkdir(parents=True, exist_ok=True)
        return path, make_video(path, **make_video_kw)


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


def edge_config(tmp_path: Path, model_path: Path | None = None, broker: Any = None, **over: Any) -> Any:
    """An edge Config for in-process tests: the model, MQTT on a closed port, outbox and evidence in ``tmp_path``,
    a camera name of its own (so its topics and MQTT client id are its own on a shared broker, also when tests run
    in parallel). ``model_path`` None: a model file that does not exist (for tests of the sink or the API without
    one). ``broker`` (a tests/broker.py Broker): MQTT on that broker, reconnecting within a second (tests stop and
    kill it). ``over``: sections to update (dicts) or keys to set."""
    from edge.config import parse_config

    mqtt: dict[str, Any] = {"port": 1, "outbox_path": str(tmp_path / "outbox.sqlite3")}
    if broker is not None:
        mqtt.update(host=broker.host, port=broker.port, reconnect_min_s=0.2, reconnect_max_s=1.0, keepalive_s=5)
    data: dict[str, Any] = {
        "camera": f"cam-{uuid.uuid4().hex[:8]}",
        "model": {"path": str(model_path if model_path is not None else tmp_path / "none.tflite")},
        "mqtt": mqtt,
        "evidence": {"dir": str(tmp_path / "evidence")},
        "station": {"db_path": str(tmp_path / "station.sqlite3")},  # issue 26: the station records, not in the cwd
    }
    for key, value in over.items():
        data.setdefault(key, {})
        if isinstance(value, dict):
            data[key].update(value)
        else:
            data[key] = value
    return parse_config(data, environ={})


def topic_base(cfg: Mapping[str, Any]) -> str:
    """``<mqtt.base_topic>/<line>/<camera>`` of a daemon config dict: where that daemon publishes and listens."""
    return f"{cfg.get('mqtt', {}).get('base_topic', 'boxinspect')}/{cfg['line']}/{cfg['camera']}"


def _labels_match(have: Mapping[str, str], want: Mapping[str, str]) -> bool:
    return all(have.get(k) == v for k, v in want.items())


def metric(source: Any, name: str, default: float | None = 0.0, **labels: str) -> float | None:
    """One Prometheus sample: ``source`` is Prometheus exposition text (``/metrics``), a registry, or an
    object with a ``registry`` (edge.runtime.metrics.Metrics). Labels not given match anything; the first sample
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


class _PahoClient:
    """close() and ``with`` for the test's paho clients (``self.client``, its network loop started)."""

    client: Any

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Subscriber(_PahoClient):
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

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client, userdata, msg) -> None:
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


class Publisher(_PahoClient):
    """A paho client that publishes test messages (triggers, commands) at QoS 1; ``send`` returns once the broker
    has acknowledged the message. ``topic``: the default topic of ``send``."""

    def __init__(self, host: str, port: int, topic: str | None = None) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.topic = topic
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=f"test-pub-{uuid.uuid4().hex[:8]}")
        self.client.connect(host, port)
        self.client.loop_start()

    def send(self, payload: str | bytes | dict[str, Any], topic: str | None = None, retain: bool = False) -> None:
        """Publish ``payload`` (a dict as JSON) on ``topic`` (default: the publisher's) and wait for the ack."""
        to = topic or self.topic
        assert to is not None, "Publisher.send: no topic"
        data = json.dumps(payload) if isinstance(payload, dict) else payload
        self.client.publish(to, data, qos=1, retain=retain).wait_for_publish(5)


@contextmanager
def serving(tmp_path: Path, cfg: dict[str, Any], **kw: Any) -> Iterator[DaemonProc]:
    """The daemon as a process with its API answering; stopped on the way out."""
    d = DaemonProc(tmp_path, cfg, **kw).start()
    try:
        d.wait_api()
        yield d
    finally:
        d.stop()


class DaemonProc:
    """One daemon process (``python -m boxinspect.cli run``) with a config written to ``workdir``.

    For a subclass (or a test) to change how it starts: ``extra_env`` (added to the environment), ``preexec_fn``
    (run in the child before the daemon, e.g. a resource limit) and ``command()`` (e.g. through a launcher).
    """

    preexec_fn: Callable[[], None] | None = None

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
        self.extra_env: dict[str, str] = {}

    def command(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "boxinspect.cli", "run", "--config", str(self.cfg_path), *extra]

    def start(self, *extra: str) -> DaemonProc:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", **self.extra_env)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(*extra), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir,
                preexec_fn=self.preexec_fn,
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

    def wait_triggers(self, timeout: float = 30.0) -> None:
        """Triggered mode: wait for the API, then for the daemon's subscription to its trigger topic."""
        self.wait_api()
        wait_for(lambda: "listening for triggers" in self.log(), timeout, "the trigger subscription", d=self)

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

    def run(self, *extra: str, timeout: float = 120.0) -> int:
        """Start, wait until the daemon exits by itself, return its exit code (killed if it outlives ``timeout``)."""
        self.start(*extra)
        try:
            return self.wait(timeout)
        finally:
            self.stop()

    def terminate(self, timeout: float) -> tuple[int, float]:
        """SIGTERM, then wait up to ``timeout`` for the exit: (exit code, seconds the shutdown took)."""
        t0 = time.monotonic()
        self.send(signal.SIGTERM)
        rc = self.wait(timeout)
        return rc, time.monotonic() - t0

    def decisions(self) -> list[tuple[str, float, str]]:
        """(label, score, event_id) of every decision the daemon logged, in order."""
        return [(m.group(1), float(m.group(2)), m.group(3)) for m in DECISION_RE.finditer(self.log())]

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)


def first_occurrences(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first copy of each event_id, in arrival order (the outbox delivers at least once)."""
    seen: set[str] = set()
    out = []
    for e in events:
        if e["event_id"] not in seen:
            seen.add(e["event_id"])
            out.append(e)
    return out


def daemon_client(cfg: Any, auth: bool = False) -> tuple[Any, Any]:
    """An in-process ``Daemon`` for ``cfg`` (its model loaded, no part started) and a FastAPI TestClient on its API:
    the daemon's own reload and trigger behind /reload and /trigger. An unexpected error answers 500, as from the
    real server (its traceback is logged), rather than raising in the test. ``auth``: the client sends the token
    of ``with_token(cfg)`` on every request."""
    from fastapi.testclient import TestClient

    if auth:
        with_token(cfg)

    from edge.api.app import create_app
    from edge.api.state import ApiState
    from edge.daemon import Daemon, load_model

    d = Daemon(cfg, load_model(cfg, cfg.model.path))
    state = ApiState(
        config=cfg, metrics=d.metrics, models=d.models, events=d.events, latest=d.latest,
        reload=d.reload, trigger=d.trigger if cfg.decision.mode == "triggered" else None,
    )
    return TestClient(create_app(state), raise_server_exceptions=False, headers=AUTH if auth else None), d


def package_copies(model: Path, into: Path, names: Iterable[str] | None = None) -> list[Path]:
    """Copies of a model package (the .tflite and its sidecar) in ``into`` (made if missing), one per name, as
    ``<name>.tflite`` (default: one copy under the model's own name): e.g. a live package and a candidate in one
    ``model.dir``, or a package a test may corrupt."""
    import shutil

    into.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names if names is not None else [model.stem]:
        dst = into / f"{name}.tflite"
        shutil.copy(model, dst)
        shutil.copy(f"{model}.json", f"{dst}.json")
        out.append(dst)
    return out


def failing_golden(doc: dict[str, Any]) -> None:
    """An ``edit_sidecar`` change: every golden sample expects a score of 5.0, which no probability is, so the
    model's self-test fails."""
    assert doc["golden"], "the fixture model has golden samples"
    for g in doc["golden"]:
        g["expected_score"] = 5.0


def sample_images(folder: Path, n: int) -> list[Path]:
    """``n`` image files spread evenly over ``folder`` (recursively, sorted): the same ones on every machine."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    return files[:: max(1, len(files) // n)][:n]


def label_dir(src: Path, dst: Path, paths: list[Path] | None = None) -> Path:
    """A folder-per-class copy of images (the layout of the operator page's feedback/)."""
    for p in paths if paths is not None else sorted(src.rglob("*.png")) + sorted(src.rglob("*.jpg")):
        (dst / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dst / p.parent.name / p.name)
    return dst


def edit_sidecar(model: Path, change: Callable[[dict[str, Any]], None], reseal: bool = True,
                 verdicts: bool = True) -> dict[str, Any]:
    """Apply ``change`` to the sidecar of ``model``. ``reseal`` recomputes package_sha256, as convert would
    (a legitimately re-made package); without it the edit is a tampering the loader must refuse. ``verdicts``
    (with ``reseal``): record the golden samples' verdicts again, as convert would; False is a sidecar resealed by
    hand with its old verdicts (issue 24: refused when the threshold or labels no longer give them)."""
    from edge.judge.model_package import ModelMetadata, package_digest, record_golden_verdicts, sidecar_path

    side = sidecar_path(model)
    doc = json.loads(side.read_text())
    change(doc)
    if reseal and verdicts and any("expected_label" in g for g in doc.get("golden", [])):
        from pydantic import ValidationError

        try:
            meta = ModelMetadata.model_validate(doc)
        except ValidationError:
            pass  # an invalid package (the test's point): the loader refuses it for that
        else:
            record_golden_verdicts(meta)
            doc["golden"] = [g.model_dump(mode="json") for g in meta.golden]
    if reseal:
        doc["package_sha256"] = package_digest(doc)
    side.write_text(json.dumps(doc, indent=1))
    return doc


# --------------------------------------------------------------------------------------------------
# Stand-ins for the daemon's parts. Each replaces a part a test is NOT about: the frames are real (the
# generated conveyor video), the decider, presence detection, evidence store and loop are the real ones.
# --------------------------------------------------------------------------------------------------


class FakeClassifier:
    """What the daemon uses of ``edge.judge.classifier.Classifier``, with ``score`` from ``score_fn(roi)``."""

    def __init__(
        self,
        score_fn: Callable[[np.ndarray], float],
        threshold: float = 0.5,
        model_id: str = "fake@000000000001",
        labels: tuple[str, str] = ("ok", "defective"),
    ) -> None:
        self.score_fn = score_fn
        self.threshold = threshold
        self.model_id = model_id
        self.path = Path(f"/fake/{model_id}.tflite")
        self.runtime_name = "fake"
        self.delegate = "none"
        self.metadata = SimpleNamespace(
            name="fake", labels=list(labels), negative_class=labels[0], positive_class=labels[1], format="fake",
            sha256="0" * 64, package_sha256="0" * 64, crop=NO_CROP, finder=None,
        )
        self.finder = None  # no learned box finder: the package's crop search alone

    def score(self, bgr: np.ndarray, located: Any = None, view: str | None = None) -> float:
        return float(self.score_fn(bgr))

    def self_test(self) -> list[str]:
        return []


def fake_model(score_fn: Callable[[np.ndarray], float], **kw: Any) -> LoadedModel:
    return LoadedModel(FakeClassifier(score_fn, **kw))  # type: ignore[arg-type]


def video_frames(path: Path, limit: int | None = None) -> Iterator[np.ndarray]:
    """The frames of a video file, read lazily (a few hundred 640x360 frames would be hundreds of MB)."""
    cap = cv2.VideoCapture(str(path))
    try:
        n = 0
        while limit is None or n < limit:
            ok, img = cap.read()
            if not ok:
                return
            yield img
            n += 1
    finally:
        cap.release()


class ReplayCapture:
    """A frame source that replays ``images`` as fast as the loop reads them. With ``end=True`` it then
    ends like a video file; with ``end=False`` it keeps the camera "ok" and delivers nothing more.
    ``current`` is the index of the frame read last (for score functions that follow ground truth)."""

    def __init__(self, images: Iterable[np.ndarray], end: bool = True) -> None:
        self._images = iter(images)
        self._end = end
        self._lock = threading.Lock()
        self.state = CameraState.DISCONNECTED
        self.finished = False
        self.frozen = False
        self.current = -1
        self.started = self.stopped = False
        self.kind = "replay"
        self.truncated: str | None = None

    @property
    def delivered_any(self) -> bool:
        return self.current >= 0

    def start(self) -> ReplayCapture:
        self.started = True
        self.state = CameraState.OK
        return self

    def stop(self, timeout: float | None = None) -> None:
        self.stopped = True

    def read(self, timeout: float = 1.0) -> Frame | None:
        with self._lock:
            img = next(self._images, None)
            if img is None:
                if self._end:
                    self.state, self.finished = CameraState.ENDED, True
                else:
                    time.sleep(min(timeout, 0.05))
                return None
            self.current += 1
            return Frame(img, self.current, time.time())

    def stats(self) -> dict[str, Any]:
        return {"kind": "replay", "frames": self.current + 1, "state": str(self.state)}


class RecordingSink:
    """Keeps every published defect, result, stats document and other message. ``fail_defects`` makes the next N
    ``publish_defect`` calls raise OutboxError (the outbox could not store the event)."""

    def __init__(self, fail_defects: int = 0, fail_results: bool = False) -> None:
        self.defects: list[dict[str, Any]] = []
        self.results: list[dict[str, Any]] = []
        self.stats: list[dict[str, Any]] = []
        self.other: list[tuple[str, bytes]] = []  # reject commands, alarms, discovery (publish())
        self.models: list[dict[str, Any]] = []  # model docs (publish_model())
        self.subscriptions: dict[str, Callable[..., None]] = {}
        self.fail_defects = fail_defects
        self.fail_results = fail_results
        self.last_error: str | None = None
        self.started = self.stopped = False
        self.connected = True
        self.outbox_depth = 0

    def start(self) -> None:
        self.started = True

    def stop(self, timeout: float = 10.0) -> None:
        self.stopped = True

    def publish_defect(self, event: dict[str, Any]) -> int | None:
        if self.fail_defects > 0:
            self.fail_defects -= 1
            raise OutboxError("database or disk is full")
        self.defects.append(dict(event))
        return len(self.defects)

    def publish_result(self, event: dict[str, Any]) -> bool:
        if self.fail_results:
            raise RuntimeError("result topic broken")
        self.results.append(dict(event))
        return True

    def publish_stats(self, stats: dict[str, Any]) -> bool:
        self.stats.append(dict(stats))
        return True

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        self.other.append((topic, payload))
        return True

    def publish_model(self, info: dict[str, Any]) -> bool:
        self.models.append(dict(info))
        return True

    def subscribe(self, topic: str, handler: Callable[..., None], what: str = "messages", qos: int = 1) -> None:
        self.subscriptions[topic] = handler

    def wait_drained(self, timeout: float) -> bool:
        return True

    def status(self) -> dict[str, Any]:
        return {"connected": True, "defects": len(self.defects)}

    def not_ready_reason(self) -> str | None:
        return None


def tiny_daemon_cfg(workdir: Path, model: Path, **over: Any) -> dict[str, Any]:
    """A daemon config (a dict for ``DaemonProc``) that runs without the trained test model: ``model`` (e.g. the
    committed tiny package), a looping folder of five generated frames at 10 fps, MQTT off (events stay in the
    outbox), the API on a free port, state in ``workdir``. ``over``: top-level keys or whole sections to set."""
    frames = workdir / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    for i in range(5):
        img = np.full((240, 320, 3), (60 + 10 * i, 80, 90), np.uint8)
        cv2.rectangle(img, (100, 60), (220, 180), (200, 180, 150), -1)
        cv2.imwrite(str(frames / f"f{i}.jpg"), img)
    cfg: dict[str, Any] = {
        "line": "l1", "camera": f"cam-{uuid.uuid4().hex[:8]}",
        "source": {"uri": str(frames), "loop": True, "fps": 10},
        "model": {"path": str(model)},
        "mqtt": {"enabled": False, "outbox_path": "outbox.sqlite3"},
        "api": {"port": free_port()},
        "evidence": {"enabled": False},
        "state_dir": str(workdir / "state"),
        "shutdown_timeout_s": 5,
    }
    cfg.update(over)
    return cfg


# ------------------------------------------------------------------------------ issue 24: closed by default

TEST_TOKEN = "test-api-token"
AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}


def with_token(cfg: Any) -> Any:
    """``cfg`` with ``api.token`` = TEST_TOKEN when it has none: without a credential nothing that stores data,
    decodes an upload, changes the model or replays history is served (edge/api/access.py)."""
    from pydantic import SecretStr

    if cfg.api.token is None:
        cfg.api.token = SecretStr(TEST_TOKEN)
    return cfg


def daemon_app(tmp_path: Path, tiny_model: Path, operator: dict[str, Any] | None = None,
               **api: Any) -> tuple[Any, Any]:
    """The real app of a real (not started) Daemon on ``tiny_model``, and a TestClient that returns server errors as
    responses (the role matrix, body and bounds tests). ``api``: api.* keys."""
    from fastapi.testclient import TestClient

    from edge.api.app import create_app
    from edge.api.state import ApiState
    from edge.daemon import Daemon, load_model

    cfg = edge_config(tmp_path, tiny_model, mqtt={"enabled": False}, api=api,
                      operator={"feedback_dir": str(tmp_path / "feedback"), **(operator or {})},
                      shadow={"dir": str(tmp_path / "shadow")})
    d = Daemon(cfg, load_model(cfg, cfg.model.path))
    from edge.deliver.audit import Audit
    from edge.deliver.station import StationStore

    station = StationStore(cfg)  # issue 26: the history, counters and audit routes are in the matrix too
    state = ApiState(config=cfg, metrics=d.metrics, models=d.models, events=d.events, latest=d.latest,
                     reload=d.reload, model_control=d.model_control, station=station, audit=Audit(station, None, "t/audit"))
    app = create_app(state)
    return app, TestClient(app, raise_server_exceptions=False)


def epoch_s(v: Any) -> float:
    """An event's time field (ISO 8601 or unix seconds) as unix seconds."""
    from datetime import datetime

    return float(v) if isinstance(v, (int, float)) else datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp()


def element_text(driver: Any, element_id: str) -> str:
    """The text of the page element ``element_id`` in a Selenium browser (also when hidden)."""
    return driver.execute_script("return document.getElementById(arguments[0]).textContent", element_id) or ""
