"""Hostile input against the real API app and the real model package (issue 8, items 2, 4, 5, 7).

In process: the FastAPI app over a real int8 model, the daemon's own reload; one test runs a real uvicorn
server with the daemon's server settings to count what a 500 writes to the log. The daemon as a process
under hostile load is in tests/test_faults.py.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from edge.api.app import create_app
from edge.api.server import server_config, start_api
from edge.api.state import ApiState
from edge.capture.source import safe_uri
from edge.judge.classifier import Classifier, ModelError
from edge.judge.model_package import sidecar_path
from edge.runtime.metrics import Metrics
from edge.state import LoadedModel, ModelSlot
from tests.helpers import AUTH as TEST_AUTH
from tests.helpers import daemon_client, edge_config, edit_sidecar, package_copies, with_token

TOKEN = "t0k3n-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# the one refusal for every name that is not a package in model.dir (the name itself is echoed, shortened)
ONE_ANSWER = re.compile(r"^no model package '.*' in model\.dir \(give a \.tflite name inside model\.dir: no absolute path, no '\.\.'\)$")



@pytest.fixture()
def package(tmp_path: Path, int8_model: Path) -> Path:
    """The model package copied into tmp_path/models (model.dir), so a test can edit it."""
    (dst,) = package_copies(int8_model, tmp_path / "models", ["m"])
    return dst


@pytest.fixture(scope="module")
def loaded(int8_model: Path) -> LoadedModel:
    return LoadedModel(Classifier.load(int8_model))


# ------------------------------------------------------------------------------ item 2: model integrity


def test_convert_writes_the_package_hash(int8_model: Path):
    import json

    from edge.judge.model_package import SCHEMA_VERSION, package_digest

    raw = json.loads(sidecar_path(int8_model).read_text())
    assert raw["schema_version"] == SCHEMA_VERSION == 2
    assert raw["package_sha256"] == package_digest(raw)
    assert Classifier.load(int8_model).model_id == f"{raw['name']}@{raw['package_sha256'][:12]}"


def test_a_tampered_sidecar_is_refused_at_load_with_one_line(package: Path):
    edit_sidecar(package, lambda d: d.update(threshold=0.999), reseal=False)
    with pytest.raises(ModelError) as e:
        Classifier.load(package)
    msg = str(e.value)
    assert "\n" not in msg and "tampered model package" in msg and "sidecar hash mismatch" in msg


def test_a_sidecar_without_package_hash_is_refused(package: Path):
    edit_sidecar(package, lambda d: d.pop("package_sha256"), reseal=False)
    with pytest.raises(ModelError, match="no package_sha256.*re-run boxinspect convert"):
        Classifier.load(package)


def test_a_changed_threshold_is_a_different_model_id(package: Path, loaded: LoadedModel):
    """Re-made with another threshold (as convert would, hash recomputed): it loads, under a new id."""
    edit_sidecar(package, lambda d: d.update(threshold=0.999))
    clf = Classifier.load(package)
    assert clf.threshold == pytest.approx(0.999)
    assert clf.model_id != loaded.classifier.model_id
    assert clf.model_id.split("@")[0] == loaded.classifier.model_id.split("@")[0]


def test_reload_refuses_a_tampered_sidecar_and_keeps_the_model(tmp_path, package):
    client, d = daemon_client(edge_config(tmp_path, package, api={"token": TOKEN}))
    before = d.models.get()
    (bad,) = package_copies(package, package.parent, ["evil"])
    edit_sidecar(bad, lambda doc: doc.update(threshold=0.999), reseal=False)
    r = client.post("/reload", json={"path": "evil.tflite"}, headers=AUTH)
    assert r.status_code == 422, r.text
    assert "tampered model package" in r.json()["reason"] and "\n" not in r.json()["reason"]
    assert d.models.get() is before


def test_reload_of_a_new_threshold_logs_the_new_model_id(tmp_path, package, caplog):
    client, d = daemon_client(edge_config(tmp_path, package, api={"token": TOKEN}))
    old_id = d.models.get().classifier.model_id
    (new,) = package_copies(package, package.parent, ["strict"])
    edit_sidecar(new, lambda doc: doc.update(threshold=0.9))
    with caplog.at_level(logging.INFO, logger="edge.daemon"):
        r = client.post("/reload", json={"path": "strict.tflite"}, headers=AUTH)
    assert r.status_code == 200, r.text
    new_id = r.json()["model_id"]
    assert new_id != old_id
    assert any(f"model swapped: {old_id} -> {new_id} (threshold" in m and "-> 0.9000" in m for m in caplog.messages)


def test_reload_names_only_inside_model_dir_with_one_answer(tmp_path, package):
    """No absolute path, no '..', no symlink out of the folder, and no file-existence oracle: a missing
    name and a forbidden one get the same status and the same words; 300 characters are a 4xx."""
    client, d = daemon_client(edge_config(tmp_path, package, api={"token": TOKEN}))
    before = d.models.get()
    (outside,) = package_copies(package, package.parent.parent / "outside", ["o"])  # valid, but not in model.dir
    (package.parent / "link.tflite").symlink_to(outside)
    names = [
        "/etc/shadow", "/etc/passwd", str(outside), "../outside/o.tflite", "sub/../../outside/o.tflite",
        "link.tflite", "nope.tflite", "m.tflite.json", "..", "", "m\\..\\m.tflite", "m.tflite\0",
    ]
    answers = set()
    for name in names:
        r = client.post("/reload", json={"path": name}, headers=AUTH)
        if name == "":  # an empty name means "the configured model" (SIGHUP's reload)
            assert r.status_code == 200, r.text
            continue
        assert r.status_code == 422, (name, r.status_code, r.text)
        answers.add(ONE_ANSWER.sub("NAME", r.json()["reason"]))
    assert answers == {"NAME"}, answers
    r = client.post("/reload", json={"path": "a" * 300}, headers=AUTH)
    assert 400 <= r.status_code < 500, r.text
    assert d.models.get().classifier.model_id == before.classifier.model_id


def test_reload_needs_a_token_unless_explicitly_allowed(tmp_path, package):
    client, _ = daemon_client(edge_config(tmp_path, package))
    r = client.post("/reload")
    assert r.status_code == 403 and "api.token" in r.json()["detail"]
    client, _ = daemon_client(edge_config(tmp_path, package, api={"token": TOKEN}))
    assert client.post("/reload").status_code == 401
    assert client.post("/reload", headers=AUTH).status_code == 200
    client, _ = daemon_client(edge_config(tmp_path, package, api={"reload_without_token": True}))
    assert client.post("/reload").status_code == 200


# ------------------------------------------------------------------------------ item 4: upload bombs


def _webp_16383() -> bytes:
    """A real small lossy WebP whose header is set to 16383 x 16383 (the VP8 maximum): ~270 MP."""
    ok, buf = cv2.imencode(".webp", np.full((16, 16, 3), 128, np.uint8), [cv2.IMWRITE_WEBP_QUALITY, 50])
    data = bytearray(buf.tobytes())
    assert ok and data[12:16] == b"VP8 " and data[23:26] == b"\x9d\x01\x2a"
    data[26:30] = (16383).to_bytes(2, "little") + (16383).to_bytes(2, "little")
    return bytes(data)


def _encoded(ext: str, img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok, ext
    return buf.tobytes()


BOMBS = {
    "webp-16383": (_webp_16383, 413),
    "tiff": (lambda: _encoded(".tiff", np.zeros((64, 64, 3), np.uint8)), 415),
    "pfm": (lambda: _encoded(".pfm", np.zeros((64, 64, 3), np.float32)), 415),
    "hdr": (lambda: _encoded(".hdr", np.zeros((64, 64, 3), np.float32)), 415),
    "pam": (lambda: _encoded(".pam", np.zeros((64, 64, 3), np.uint8)), 415),
    "ppm": (lambda: _encoded(".ppm", np.zeros((64, 64, 3), np.uint8)), 415),
    "ppm-bomb": (lambda: b"P6\n60000 60000\n255\n" + b"\0" * 1000, 415),
    "pfm-bomb": (lambda: b"PF\n60000 60000\n-1.0\n" + b"\0" * 1000, 415),
    "hdr-bomb": (lambda: b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 60000 +X 60000\n" + b"\0" * 1000, 415),
    "pam-bomb": (lambda: b"P7\nWIDTH 60000\nHEIGHT 60000\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n" + b"\0" * 64, 415),
    "bmp-bomb": (lambda: b"BM" + b"\0" * 16 + (30000).to_bytes(4, "little") + (30000).to_bytes(4, "little") + b"\0" * 64, 413),
    "png-header-only": (lambda: b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 415),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_upload_bombs_and_other_formats_are_refused_before_decoding(tmp_path, int8_model, loaded, name):
    make, status = BOMBS[name]
    state = ApiState(config=with_token(edge_config(tmp_path, int8_model)), metrics=Metrics(), models=ModelSlot(loaded))
    client = TestClient(create_app(state), headers=TEST_AUTH)
    r = client.post("/predict", files={"file": (f"x.{name}", make(), "application/octet-stream")})
    assert r.status_code == status, r.text
    assert "pixels" in r.json()["detail"] or "not a decodable image" in r.json()["detail"]


def test_allowed_formats_still_work(tmp_path, int8_model, loaded):
    cfg = with_token(edge_config(tmp_path, int8_model))
    client = TestClient(create_app(ApiState(config=cfg, metrics=Metrics(), models=ModelSlot(loaded))), headers=TEST_AUTH)
    img = (np.random.default_rng(1).random((90, 120, 3)) * 255).astype(np.uint8)
    for ext in (".jpg", ".png", ".bmp", ".webp"):
        r = client.post("/predict", files={"file": (f"a{ext}", _encoded(ext, img), "application/octet-stream")})
        assert r.status_code == 200, (ext, r.text)
        assert (r.json()["width"], r.json()["height"]) == (120, 90)
    lossless = cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()
    assert lossless[12:16] == b"VP8L"
    assert client.post("/predict", files={"file": ("l.webp", lossless, "image/webp")}).status_code == 200


def test_the_pixel_limit_is_one_rule_for_every_format(tmp_path, int8_model, loaded):
    cfg = with_token(edge_config(tmp_path, int8_model, api={"max_image_pixels": 100 * 100}))
    client = TestClient(create_app(ApiState(config=cfg, metrics=Metrics(), models=ModelSlot(loaded))), headers=TEST_AUTH)
    img = np.zeros((101, 100, 3), np.uint8)
    for ext in (".jpg", ".png", ".bmp", ".webp"):
        r = client.post("/predict", files={"file": (f"a{ext}", _encoded(ext, img), "application/octet-stream")})
        assert r.status_code == 413 and "api.max_image_pixels" in r.json()["detail"], (ext, r.text)


def test_decodes_wait_for_a_slot_then_503(tmp_path, int8_model, loaded, monkeypatch):
    import edge.api.inference

    monkeypatch.setattr(edge.api.inference, "DECODE_WAIT_S", 0.2)
    cfg = with_token(edge_config(tmp_path, int8_model, api={"max_concurrent_decodes": 1}))
    app = create_app(ApiState(config=cfg, metrics=Metrics(), models=ModelSlot(loaded)))
    client = TestClient(app, headers=TEST_AUTH)
    jpg = _encoded(".jpg", np.zeros((32, 32, 3), np.uint8))
    assert client.post("/predict", files={"file": ("a.jpg", jpg, "image/jpeg")}).status_code == 200
    slots: threading.BoundedSemaphore = app.state.decode_slots
    assert slots.acquire(timeout=1)  # another request is decoding
    try:
        r = client.post("/predict", files={"file": ("a.jpg", jpg, "image/jpeg")})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
    finally:
        slots.release()
    assert client.post("/predict", files={"file": ("a.jpg", jpg, "image/jpeg")}).status_code == 200


# ------------------------------------------------------------------------------ item 7: secrets, logs, hosts

LEAKY_URIS = {
    "rtsp://admin:p@ssw0rd@10.0.0.5/stream": ("p@ssw0rd", "ssw0rd"),
    "rtsp://admin:pa/ss-w0rd@10.0.0.5:554/live": ("pa/ss-w0rd", "ss-w0rd"),
    "http://10.0.0.5/mjpg/video.mjpg?resolution=640x480&token=T0KEN-123": ("T0KEN-123",),
    "rtsp://10.0.0.5/live?user=op&password=Pw-9&channel=1": ("Pw-9",),
    "https://u:v@cam.local/x?api_key=K3Y#access_token=AT0K": ("K3Y", "AT0K", ":v@"),
}


@pytest.mark.parametrize("uri", sorted(LEAKY_URIS))
def test_safe_uri_masks_every_credential_form(uri):
    masked = safe_uri(uri)
    for secret in LEAKY_URIS[uri]:
        assert secret not in masked, masked
    assert "10.0.0.5" in masked or "cam.local" in masked  # the host stays, for the operator


def test_safe_uri_leaves_plain_sources_alone():
    for uri in ("0", "/dev/video0", "/data/line 1/belt.mp4", "rtsp://10.0.0.5:554/stream1", "http://cam/x?res=hd"):
        assert safe_uri(uri) == uri


def test_status_and_readyz_mask_an_rtsp_password_with_at_sign(tmp_path, int8_model, loaded):
    from edge.capture.frames import Capture

    cfg = edge_config(tmp_path, int8_model, source={"uri": "rtsp://admin:p@ssw0rd@10.0.0.5/stream?token=T0KEN"})
    state = ApiState(config=cfg, metrics=Metrics(), models=ModelSlot(loaded), capture=Capture(cfg.source))
    client = TestClient(create_app(state))
    for path in ("/status", "/readyz"):
        r = client.get(path)
        assert "ssw0rd" not in r.text and "T0KEN" not in r.text, r.text
    assert "rtsp://***@10.0.0.5/stream?token=***" in client.get("/readyz").text


def test_one_log_line_per_refused_trigger(tmp_path, package, caplog):
    client, d = daemon_client(edge_config(tmp_path, package, decision={"mode": "triggered"}), auth=True)
    d.decider.max_pending = 1
    assert client.post("/trigger", json={"part_id": "p1"}).status_code == 202
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert client.post("/trigger", json={"part_id": "p-over-limit"}).status_code == 429
    # one line says the trigger was refused (the part then gets its fail-safe decision, logged as a decision)
    lines = [m for m in caplog.messages if "p-over-limit" in m and "refused" in m.lower() and not m.startswith("TIMEOUT")]
    assert len(lines) == 1, lines
    assert not any(m.startswith("trigger: part p-over-limit") for m in caplog.messages), caplog.messages


def test_trusted_hosts_refuse_a_rebound_host_header(tmp_path, int8_model, loaded):
    cfg = edge_config(tmp_path, int8_model, api={"trusted_hosts": ["127.0.0.1", "localhost"]})
    client = TestClient(create_app(ApiState(config=cfg, metrics=Metrics(), models=ModelSlot(loaded))), base_url="http://127.0.0.1")
    assert client.get("/healthz").status_code == 200
    assert client.get("/healthz", headers={"Host": "localhost:8080"}).status_code == 200
    r = client.get("/status", headers={"Host": "attacker.example"})
    assert r.status_code == 400


def test_a_500_logs_one_traceback_from_a_real_server(tmp_path, int8_model, loaded, caplog):
    """Through uvicorn with the daemon's settings: one log record with a traceback, a JSON 500, no echo."""

    def broken() -> dict:
        raise ZeroDivisionError("counter exploded")

    cfg = edge_config(tmp_path, int8_model)
    state = ApiState(config=cfg, metrics=Metrics(), models=ModelSlot(loaded), counters=broken)
    with caplog.at_level(logging.INFO):
        api = start_api(create_app(state), cfg.api.model_copy(update={"host": "127.0.0.1", "port": 0}), 20)
        try:
            r = httpx.get(f"{api.url}/status", timeout=10)
        finally:
            api.stop(10)
    assert r.status_code == 500 and r.json() == {"detail": "internal error: ZeroDivisionError"}
    with_trace = [rec for rec in caplog.records if rec.exc_info]
    assert len(with_trace) == 1, [rec.getMessage() for rec in with_trace]


def test_server_settings_bound_connections(tmp_path, int8_model):
    cfg = edge_config(tmp_path, int8_model, api={"max_connections": 50, "keep_alive_timeout_s": 3, "header_timeout_s": 4})
    kw = server_config(object(), cfg.api)
    assert kw["timeout_keep_alive"] == 3 and kw["limit_concurrency"] >= 50
    assert kw["http"].__name__ == "GuardedH11Protocol"


def test_config_example_documents_reload_token_rule(repo_root: Path):
    text = (repo_root / "deploy" / "config.example.yaml").read_text()
    assert "reload_without_token: false" in text and "trusted_hosts: []" in text
