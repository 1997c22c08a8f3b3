"""The real FastAPI app over real parts: a real int8 .tflite (fixture), a real Capture on the generated
conveyor video, a real MqttSink on a real Mosquitto, and the daemon's own reload/trigger."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from edge.api.app import create_app
from edge.api.state import ApiState
from edge.judge.classifier import Classifier
from edge.runtime.metrics import Metrics
from edge.state import LoadedModel, ModelSlot
from tests.helpers import (
    AUTH,
    daemon_client,
    edge_config,
    edit_sidecar,
    failing_golden,
    package_copies,
    with_token,
)

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp"}



@pytest.fixture(scope="module")
def loaded(tiny_model: Path) -> LoadedModel:
    return LoadedModel(Classifier.load(tiny_model))


@pytest.fixture(scope="module")
def box_images(few_boxes: Path) -> dict[str, Path]:
    """One synthetic box image per class folder."""
    out = {}
    for d in sorted(p for p in few_boxes.iterdir() if p.is_dir()):
        files = sorted(f for f in d.rglob("*") if f.suffix.lower() in IMAGE_EXTS)
        if files:
            out[d.name] = files[0]
    assert len(out) >= 2, f"expected class folders with images in {few_boxes}"
    return out


def _client(cfg, loaded: LoadedModel | None, anonymous: bool = False, **parts) -> tuple[TestClient, ApiState]:
    """The app and a client; unless ``anonymous`` (or the test set a token of its own) the client holds the token."""
    auth = not anonymous and cfg.api.token is None
    if auth:
        with_token(cfg)
    state = ApiState(config=cfg, metrics=Metrics(), models=ModelSlot(loaded), **parts)
    return TestClient(create_app(state), headers=AUTH if auth else None), state


# -------------------------------------------------------------------------------- health and readiness


def test_healthz_is_always_ok(tmp_path, tiny_model, loaded):
    client, _ = _client(edge_config(tmp_path, tiny_model), loaded)
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "alive"


def test_readyz_lists_every_reason(tmp_path, tiny_model):
    cfg = edge_config(tmp_path, tiny_model)
    client, _ = _client(cfg, None)
    r = client.get("/readyz")
    assert r.status_code == 503
    reasons = r.json()["reasons"]
    assert any(x.startswith("model:") for x in reasons)
    assert any(x.startswith("camera:") for x in reasons)
    assert any(x.startswith("mqtt:") for x in reasons)


def test_readyz_names_a_failed_self_test(tmp_path, tiny_model, loaded):
    bad = LoadedModel(loaded.classifier, ("golden[0] x: score 0.9, expected 0.1",))
    client, _ = _client(edge_config(tmp_path, tiny_model, mqtt={"enabled": False}), bad)
    reasons = client.get("/readyz").json()["reasons"]
    assert any("self-test failed" in x and "golden[0]" in x for x in reasons), reasons


def test_readyz_ok_with_model_camera_and_broker(tmp_path, tiny_model, loaded, synth_video, mosquitto):
    from edge.capture.frames import Capture
    from edge.deliver.mqtt_sink import MqttSink

    video, _ = synth_video
    cfg = edge_config(tmp_path, tiny_model, broker=mosquitto, source={"uri": str(video), "loop": True, "pace": "realtime"})
    metrics = Metrics()
    cap = Capture(cfg.source, metrics).start()
    sink = MqttSink(cfg.mqtt, cfg.topic_base, metrics, "test-api-ready")
    sink.start()
    try:
        state = ApiState(config=cfg, metrics=metrics, models=ModelSlot(loaded), capture=cap, sink=sink)
        client = TestClient(create_app(state))
        deadline = time.monotonic() + 20
        while True:
            r = client.get("/readyz")
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert r.status_code == 200, r.json()
        assert r.json() == {"ready": True, "reasons": []}
        # the camera and broker are reported in /status too
        st = client.get("/status").json()
        assert st["camera"]["state"] == "ok" and st["mqtt"]["connected"] is True
        # the broker goes away -> not ready, and the reason says so
        sink.stop(2)
        r = client.get("/readyz")
        assert r.status_code == 503 and any(x.startswith("mqtt: not connected") for x in r.json()["reasons"])
    finally:
        cap.stop()
        sink.stop(1)


# -------------------------------------------------------------------------------- /predict


def test_predict_matches_the_classifier(tmp_path, tiny_model, loaded, box_images):
    client, _ = _client(edge_config(tmp_path, tiny_model), loaded)
    clf = loaded.classifier
    for name, path in box_images.items():
        data = path.read_bytes()
        r = client.post("/predict", files={"file": (path.name, data, "image/png")})
        assert r.status_code == 200, r.text
        body = r.json()
        expected = clf.predict(cv2.imread(str(path), cv2.IMREAD_COLOR))
        assert body["label"] == expected.label, name
        assert body["score"] == pytest.approx(expected.score, abs=1e-6)
        assert body["is_defect"] == (body["score"] >= body["threshold"])
        assert body["threshold"] == pytest.approx(clf.threshold)
        assert body["model_id"] == clf.model_id and body["latency_ms"] > 0
        assert body["label"] in clf.metadata.labels


def test_predict_uses_the_configured_threshold(tmp_path, tiny_model, loaded, box_images):
    client, _ = _client(edge_config(tmp_path, tiny_model, model={"threshold": 0.0}), loaded)
    path = next(iter(box_images.values()))
    body = client.post("/predict", files={"file": (path.name, path.read_bytes(), "image/png")}).json()
    assert body["threshold"] == 0.0 and body["is_defect"] is True


def _jpeg(w: int = 64, h: int = 48) -> bytes:
    img = (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(
    "name,payload,status,words",
    [
        ("empty.jpg", b"", 422, "empty"),
        ("notes.txt", b"this is not an image\n" * 10, 415, "not a decodable image"),
        ("truncated.jpg", _jpeg()[:200], 415, "not a decodable image"),
        ("random.png", bytes(range(256)) * 4, 415, "not a decodable image"),
    ],
)
def test_predict_rejects_bad_uploads_with_4xx(tmp_path, tiny_model, loaded, name, payload, status, words):
    client, _ = _client(edge_config(tmp_path, tiny_model), loaded)
    r = client.post("/predict", files={"file": (name, payload, "application/octet-stream")})
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_predict_refuses_oversize_uploads(tmp_path, tiny_model, loaded):
    cfg = edge_config(tmp_path, tiny_model, api={"max_upload_bytes": 4096})
    client, _ = _client(cfg, loaded)
    big = _jpeg(400, 300)
    assert len(big) > 4096 + 64 * 1024 or len(big) > 4096
    # a file just above the limit (declared length within the multipart slack): refused after reading
    r = client.post("/predict", files={"file": ("big.jpg", big[:5000], "image/jpeg")})
    assert r.status_code == 413 and "max_upload_bytes" in r.json()["detail"]
    # a declared body far above the limit: refused before it is read
    r = client.post("/predict", files={"file": ("huge.jpg", b"\xff" * 200_000, "image/jpeg")})
    assert r.status_code == 413 and "max_upload_bytes" in r.json()["detail"]
    # a chunked body (no Content-Length) above the limit
    def chunks():
        boundary = b"--xyz\r\n"
        yield boundary + b'Content-Disposition: form-data; name="file"; filename="c.jpg"\r\n\r\n'
        for _ in range(20):
            yield b"\0" * 10_000
        yield b"\r\n--xyz--\r\n"

    r = client.post("/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 413


def test_predict_refuses_decompression_bombs(tmp_path, tiny_model, loaded):
    client, _ = _client(edge_config(tmp_path, tiny_model), loaded)
    ok, buf = cv2.imencode(".png", np.zeros((12000, 12000), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok and len(buf) < 1_000_000
    r = client.post("/predict", files={"file": ("bomb.png", buf.tobytes(), "image/png")})
    assert r.status_code == 413 and "pixels" in r.json()["detail"]


def test_predict_without_a_file_field_is_422(tmp_path, tiny_model, loaded):
    client, _ = _client(edge_config(tmp_path, tiny_model), loaded)
    assert client.post("/predict").status_code == 422
    assert client.post("/predict", data={"other": "x"}).status_code == 422
    r = client.post("/predict", content=b"garbage", headers={"content-type": "multipart/form-data; boundary=b"})
    assert 400 <= r.status_code < 500


def test_predict_without_a_model_is_503(tmp_path, tiny_model):
    client, _ = _client(edge_config(tmp_path, tiny_model), None)
    r = client.post("/predict", files={"file": ("a.jpg", _jpeg(), "image/jpeg")})
    assert r.status_code == 503


# -------------------------------------------------------------------------------- status, snapshot, events, metrics


def test_status_summarises_without_secrets(tmp_path, tiny_model, loaded):
    cfg = edge_config(
        tmp_path, tiny_model,
        api={"token": "tok-SECRET-1"},
        mqtt={"username": "edge", "password": "pw-SECRET-2"},
        source={"uri": "rtsp://cam:pw-SECRET-3@10.0.0.5/stream"},
    )
    from edge.capture.frames import Capture

    client, state = _client(cfg, loaded, capture=Capture(cfg.source))  # never started: "disconnected"
    positive = loaded.classifier.metadata.positive_class
    state.metrics.decisions.labels(label=positive).inc(3)
    r = client.get("/status", headers={"Authorization": "Bearer tok-SECRET-1"})
    assert r.status_code == 200
    assert "SECRET" not in r.text
    body = r.json()
    assert body["config"]["source"]["uri"] == "rtsp://***@10.0.0.5/stream"
    # the readiness reasons do not leak the stream password either
    r = client.get("/readyz", headers={"Authorization": "Bearer tok-SECRET-1"})
    assert r.status_code == 503 and "SECRET" not in r.text
    assert "camera: disconnected (source rtsp://***@10.0.0.5/stream)" in r.json()["reasons"]
    assert body["model"]["model_id"] == loaded.classifier.model_id
    assert body["model"]["self_test_passed"] is True
    assert body["config"]["mqtt"]["username"] == "edge"
    assert body["uptime_s"] >= 0 and body["ready"] is False
    assert body["counters"]["decisions"][positive] == 3


def test_snapshot_draws_the_latest_frame(tmp_path, tiny_model, loaded, synth_video):
    from edge.capture.frames import Capture

    video, gt = synth_video
    cfg = edge_config(tmp_path, tiny_model, source={"uri": str(video), "pace": "fast"}, roi={k: gt["roi"][k] for k in ("x", "y", "width", "height")})
    client, state = _client(cfg, loaded)
    assert client.get("/snapshot.jpg").status_code == 503
    cap = Capture(cfg.source).start()
    try:
        frame = cap.read(timeout=10)
    finally:
        cap.stop()
    assert frame is not None
    state.latest.set_frame(frame)
    state.latest.set_verdict("defective", 0.93, True)
    r = client.get("/snapshot.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    img = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == frame.image.shape
    # the overlay changed the picture (ROI rectangle, verdict), the frame itself is untouched
    assert float(cv2.absdiff(img, frame.image).mean()) > 0.5


def test_events_newest_first_and_bounded(tmp_path, tiny_model, loaded):
    client, state = _client(edge_config(tmp_path, tiny_model), loaded)
    assert client.get("/events").json() == []
    for i in range(7):
        state.events.add({"event_id": f"e{i}", "label": "ok"})
    assert [e["event_id"] for e in client.get("/events?limit=3").json()] == ["e6", "e5", "e4"]
    assert len(client.get("/events").json()) == 7
    assert client.get("/events?limit=0").status_code == 422
    assert client.get("/events?limit=100000").status_code == 422
    assert client.get("/events?limit=abc").status_code == 422


def test_metrics_is_prometheus_text(tmp_path, tiny_model, loaded):
    client, state = _client(edge_config(tmp_path, tiny_model), loaded)
    state.metrics.defects.inc()
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "boxinspect_defects_total 1.0" in r.text


# -------------------------------------------------------------------------------- reload and trigger (the daemon's own)


def test_reload_keeps_the_old_model_when_the_new_one_is_corrupt(tmp_path, model_copy):
    client, d = daemon_client(edge_config(tmp_path, model_copy, api={"reload_without_token": True}))
    before = d.models.get()
    model_copy.write_bytes(b"\0garbage" * 100)
    r = client.post("/reload")
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["ok"] is False and "sha256" in body["reason"]
    assert d.models.get() is before
    assert d.metrics.registry.get_sample_value("boxinspect_model_reloads_total", {"outcome": "load_failed"}) == 1
    # a name that does not exist in model.dir
    r = client.post("/reload", json={"path": "nope.tflite"})
    assert r.status_code == 422 and "no model package 'nope.tflite' in model.dir" in r.json()["reason"]
    assert d.models.get() is before


def test_reload_swaps_in_a_good_model(tmp_path, model_copy, tiny_model):
    client, d = daemon_client(edge_config(tmp_path, model_copy, api={"reload_without_token": True}))
    before = d.models.get()
    # a name is taken inside model.dir (default: the configured model's folder)
    package_copies(tiny_model, model_copy.parent, ["other"])
    r = client.post("/reload", json={"path": "other.tflite"})
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is True and r.json()["model_id"] == before.classifier.model_id
    after = d.models.get()
    assert after is not before and after.self_test_passed
    assert after.classifier.path == model_copy.parent / "other.tflite"
    assert d.metrics.registry.get_sample_value("boxinspect_model_reloads_total", {"outcome": "ok"}) == 1


def test_reload_rejects_a_model_failing_its_self_test(tmp_path, model_copy):
    client, d = daemon_client(edge_config(tmp_path, model_copy, api={"reload_without_token": True}))
    before = d.models.get()
    edit_sidecar(model_copy, failing_golden)  # a re-made package (resealed), not a tampered one
    r = client.post("/reload")
    assert r.status_code == 422 and "self-test failed" in r.json()["reason"]
    assert d.models.get() is before
    assert d.metrics.registry.get_sample_value("boxinspect_model_reloads_total", {"outcome": "self_test_failed"}) == 1


def test_trigger_only_in_triggered_mode(tmp_path, model_copy):
    client, d = daemon_client(edge_config(tmp_path, model_copy), auth=True)
    assert client.post("/trigger", json={"part_id": "p1"}).status_code == 409
    client, d = daemon_client(edge_config(tmp_path, model_copy, decision={"mode": "triggered"}), auth=True)
    r = client.post("/trigger", json={"part_id": "p1"})
    assert r.status_code == 202 and r.json() == {"accepted": True, "part_id": "p1"}
    assert client.post("/trigger").status_code == 202
    assert d.decider.pending == 2
    # a refused trigger (too many waiting) is a 429, never a silent drop
    d.decider.max_pending = 1
    r = client.post("/trigger", json={"part_id": "p3"})
    assert r.status_code == 429 and "too many" in r.json()["detail"]


# -------------------------------------------------------------------------------- token


def test_token_guards_everything_but_health_and_metrics(tmp_path, tiny_model, loaded):
    """With ``api.viewing: token`` the views need the token too (issue 24: by default they are open)."""
    client, _ = _client(edge_config(tmp_path, tiny_model, api={"token": "s3cret", "viewing": "token"}), loaded)
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200
    for method, path in [("get", "/status"), ("get", "/events"), ("get", "/snapshot.jpg"),
                         ("post", "/predict"), ("post", "/reload"), ("post", "/trigger")]:
        r = getattr(client, method)(path)
        assert r.status_code == 401, (path, r.status_code)
        assert "token" in r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"
        r = getattr(client, method)(path, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["detail"] == "invalid API token"
    ok = {"Authorization": "Bearer s3cret"}
    assert client.get("/status", headers=ok).status_code == 200
    assert client.get("/events", headers=ok).status_code == 200
    r = client.post("/predict", headers=ok, files={"file": ("a.jpg", _jpeg(), "image/jpeg")})
    assert r.status_code == 200


def test_no_token_configured_means_views_only(tmp_path, tiny_model, loaded):
    """Issue 24: no credential configured = health, metrics and views; every action is a 403 that says how."""
    client, _ = _client(edge_config(tmp_path, tiny_model), loaded, anonymous=True)
    assert client.get("/status").status_code == 200
    r = client.post("/predict", files={"file": ("a.jpg", _jpeg(), "image/jpeg")})
    assert r.status_code == 403 and "api.token" in r.json()["detail"]


def test_openapi_documents_the_endpoints(tmp_path, tiny_model, loaded):
    client, _ = _client(edge_config(tmp_path, tiny_model), loaded)
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/healthz", "/readyz", "/predict", "/status", "/snapshot.jpg", "/events", "/metrics", "/reload", "/trigger"):
        assert p in paths


def test_image_dimensions_from_headers():
    from edge.api.upload import image_dimensions

    for ext in (".png", ".jpg"):
        ok, buf = cv2.imencode(ext, np.zeros((37, 53, 3), np.uint8))
        assert ok and image_dimensions(buf.tobytes()) == (53, 37)
    assert image_dimensions(b"GIF89a....") is None
    assert image_dimensions(b"\xff\xd8\xff") is None  # truncated JPEG header
