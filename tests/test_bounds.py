"""Bounded everywhere (issue 24, item 2), on the daemon's own HTTP server (edge/api/server.py) and app.

- slow bodies: clients that send a request head and then trickle the body cannot hold ``api.max_connections``:
  each is closed at ``api.body_timeout_s`` plus its size at ``api.body_min_rate_bytes_s``, and /healthz answers
  meanwhile (on 548d7c7 they held every connection for as long as they kept sending);
- this also pins what edge/api/server.py relies on inside uvicorn's H11Protocol: an upgrade that changes it fails here.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import httpx

from edge.api.server import start_api
from tests.helpers import TEST_TOKEN, daemon_app, wait_for

SLOW_CLIENTS = 30


def _slow_client(host: str, port: int) -> socket.socket | None:
    try:
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(b"POST /ui/check HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TEST_TOKEN.encode()
                  + b"\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000000\r\n\r\n--b")
        s.setblocking(False)
        return s
    except OSError:
        return None


def _closed(s: socket.socket) -> bool:
    try:
        s.send(b"x")
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_slow_bodies_are_cut_off_and_health_stays_reachable(tmp_path: Path, tiny_model: Path):
    app, _ = daemon_app(tmp_path, tiny_model, token=TEST_TOKEN, max_connections=20, body_timeout_s=2.0,
                  body_min_rate_bytes_s=1000)
    cfg = app.state.boxinspect.config
    server = start_api(app, cfg.api.model_copy(update={"host": "127.0.0.1", "port": 0}), 20)
    host, port = server.url.removeprefix("http://").split(":")
    socks = [s for s in (_slow_client(host, int(port)) for _ in range(SLOW_CLIENTS)) if s is not None]
    try:
        t0 = time.monotonic()
        # one byte per client every 0.2 s (5 B/s, far below the minimum rate) until the server has closed them all
        wait_for(lambda: all([_closed(s) for s in socks]), 60, "the server to close every slow-body connection",
                 interval=0.2)
        took = time.monotonic() - t0
        assert took >= 1.5, f"closed after {took:.1f} s: before api.body_timeout_s"
        r = httpx.get(server.url + "/healthz", timeout=10)
        assert r.status_code == 200
    finally:
        for s in socks:
            s.close()
        server.stop(5)


def test_a_fast_upload_is_not_cut_off(tmp_path: Path, tiny_model: Path):
    app, _ = daemon_app(tmp_path, tiny_model, token=TEST_TOKEN, body_timeout_s=1.0, body_min_rate_bytes_s=1000)
    cfg = app.state.boxinspect.config
    server = start_api(app, cfg.api.model_copy(update={"host": "127.0.0.1", "port": 0}), 20)
    try:
        import cv2
        import numpy as np

        png = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (600, 800, 3), np.uint8))[1].tobytes()
        r = httpx.post(server.url + "/ui/check", files={"file": ("a.png", png, "image/png")},
                       headers={"Authorization": f"Bearer {TEST_TOKEN}"}, timeout=60)
        assert r.status_code == 200, r.text
    finally:
        server.stop(5)


def test_manual_checks_keep_only_small_jpegs_of_big_uploads(tmp_path: Path, tiny_model: Path):
    """On 548d7c7 the check history kept the last 20 decoded full-resolution images (3 GB for 49 MP uploads)."""
    import cv2
    import numpy as np

    from tests.helpers import AUTH

    app, client = daemon_app(tmp_path, tiny_model, token=TEST_TOKEN)
    big = np.zeros((2000, 3000, 3), np.uint8)
    cv2.rectangle(big, (500, 400), (2500, 1600), (40, 90, 200), -1)
    png = cv2.imencode(".png", big)[1].tobytes()
    for _ in range(22):
        r = client.post("/ui/check", files={"file": ("big.png", png, "image/png")}, headers=AUTH)
        assert r.status_code == 200, r.text
        assert (r.json()["width"], r.json()["height"]) == (3000, 2000)
    op = app.state.boxinspect.operator
    kept = list(op._checks.values())
    assert len(kept) == 20
    for k in kept:
        assert isinstance(k.crop, bytes) and len(k.crop) < 200_000
        assert cv2.imdecode(np.frombuffer(k.crop, np.uint8), cv2.IMREAD_COLOR).shape[1] <= 640
    check_id = kept[-1].record["check_id"]
    body = {"target": "check", "id": check_id, "kind": "correct"}
    assert client.post("/ui/feedback", json=body, headers=AUTH).status_code == 200  # still answerable as feedback


def test_replay_is_paged_rate_limited_and_never_waits_for_the_outbox_lock(tmp_path: Path, mosquitto):
    """On 548d7c7 a replay read up to 1000 rows under the outbox's own lock and re-published them all, as often
    as anyone asked: a flood dropped reject commands. Now a page, a rate, and a reader of its own."""
    import threading

    from fastapi.testclient import TestClient

    from edge.api.app import create_app
    from edge.api.state import ApiState
    from edge.deliver.mqtt_sink import MqttSink
    from edge.runtime.metrics import Metrics
    from edge.state import ModelSlot
    from tests.helpers import AUTH, edge_config
    from tests.test_delivery import published

    cfg = edge_config(tmp_path, broker=mosquitto, api={"token": TEST_TOKEN, "replay_page_max": 4, "replays_per_minute": 5},
                      mqtt={"outbox_retention_s": 600})
    sink = MqttSink(cfg.mqtt, cfg.topic_base, Metrics())
    sink.start()
    try:
        events = published(sink, 10)
        client = TestClient(create_app(ApiState(config=cfg, metrics=Metrics(), models=ModelSlot(None), sink=sink)),
                            headers=AUTH)
        seen, since, pages = [], 0, 0
        while since is not None:
            r = client.get("/events", params={"since_seq": since})
            assert r.status_code == 200, r.text
            assert len(r.json()) <= 4
            seen += [e["event_id"] for e in r.json()]
            since = int(r.headers["x-next-since-seq"]) if "x-next-since-seq" in r.headers else None
            pages += 1
        assert seen == [e["event_id"] for e in events] and pages == 3
        # the outbox's lock held (as by a writer storing an event): the replay is still answered
        with sink.outbox._lock:
            box: dict = {}
            t = threading.Thread(target=lambda: box.update(r=client.get("/events", params={"since_seq": 8})))
            t.start()
            t.join(20)
            assert not t.is_alive() and box["r"].status_code == 200 and len(box["r"].json()) == 2
        for _ in range(3):
            r = client.get("/events", params={"since_seq": 0})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert client.get("/events").status_code == 200  # recent decisions are a view: not rate-limited
    finally:
        sink.stop(5)


def _check_and_answer(client, png: bytes, who: str = "op") -> Any:
    from tests.helpers import AUTH

    check = client.post("/ui/check", files={"file": ("a.png", png, "image/png")}, headers=AUTH).json()
    return client.post("/ui/feedback", json={"target": "check", "id": check["check_id"], "kind": "correct", "who": who},
                       headers=AUTH)


def test_feedback_has_a_quota_retention_a_rate_and_provenance(tmp_path: Path, tiny_model: Path):
    """On 548d7c7 every answer added ~7 MB for ever, as fast as a script could send them, from anyone."""
    import cv2
    import numpy as np

    from tests.helpers import AUTH, metric

    app, client = daemon_app(tmp_path, tiny_model, token=TEST_TOKEN,
                       operator={"feedback_max_files": 5, "feedback_per_minute": 9})
    png = cv2.imencode(".png", np.random.default_rng(1).integers(0, 255, (120, 160, 3), np.uint8))[1].tobytes()
    for _ in range(8):
        assert _check_and_answer(client, png).status_code == 200
    store = app.state.boxinspect.operator.feedback
    reg = app.state.boxinspect.metrics
    assert len(store) == 5 and len(list((tmp_path / "feedback").rglob("*.jpg"))) == 5
    assert metric(reg, "boxinspect_feedback_removed_total", reason="count") == 3
    assert metric(reg, "boxinspect_feedback_files") == 5 and metric(reg, "boxinspect_feedback_bytes") > 0
    r = _check_and_answer(client, png)
    assert r.status_code == 200
    r = _check_and_answer(client, png)  # the 10th in a minute
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    # provenance and review
    labels = client.get("/ui/labels", headers=AUTH).json()
    assert labels["total"] == 5
    assert all(i["principal"] == "token" and i["from"] for i in labels["items"])
    assert list(labels["by_source"]) == [f"op (token from {labels['items'][0]['from']})"]
    gone = labels["items"][0]["id"]
    assert client.delete(f"/ui/labels/{gone}", headers=AUTH).status_code == 200
    assert client.delete(f"/ui/labels/{gone}", headers=AUTH).status_code == 404
    assert client.delete(f"/ui/labels/{gone}").status_code == 401
    assert metric(reg, "boxinspect_feedback_removed_total", reason="review") == 1
    # retention by age
    import time

    assert store.enforce(now=time.time() + 400 * 86400)["age"] == 4 and len(store) == 0
    assert metric(reg, "boxinspect_feedback_removed_total", reason="age") == 4
