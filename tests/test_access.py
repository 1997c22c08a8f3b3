"""Closed by default (issue 24, item 1): the endpoint x role matrix, every cell, on the real app and the real server.

In process: the daemon's full app (operator page, model life cycle) over the tiny model; every route the app
serves is asked anonymously, with a wrong token and with the token, under a default install (no credential),
a token install, and ``api.viewing: token``. On a real uvicorn server: a refused request is answered from its
head, before a byte of its body arrives, and the connection is closed.
"""

from __future__ import annotations

import re
import socket
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edge.api.access import Role, role_table
from tests.helpers import AUTH, TEST_TOKEN, daemon_app

PARAMS = {"name": "x", "event_id": "x", "check_id": "x", "which": "thumb"}
MOUNT_FILES = {"/static": "/static/app.js", "/swagger": "/swagger/swagger-ui-bundle.js"}
BINARY = {"files": {"file": ("x.bin", bytes(range(256)) * 4, "application/octet-stream")}}
REFUSED = (401, 403)


def _cells(app: Any) -> list[tuple[str, str, Role | None]]:
    return [(m, MOUNT_FILES.get(p) or re.sub(r"\{(\w+)\}", lambda g: PARAMS.get(g.group(1), "x"), p), role)
            for m, p, role in role_table(app.routes) if m in ("GET", "POST", "DELETE", "PUT", "PATCH")]


def _ask(client: TestClient, method: str, path: str, headers: dict[str, str] | None = None) -> int:
    kw: dict[str, Any] = dict(BINARY) if method != "GET" else {}
    return client.request(method, path, headers=headers or {}, **kw).status_code


def test_every_route_has_a_role_and_every_action_is_closed(tmp_path, tiny_model):
    app, _ = daemon_app(tmp_path, tiny_model)
    table = role_table(app.routes)
    actions = [(m, p, r) for m, p, r in table if m not in ("GET", "HEAD", "OPTIONS")]
    assert len(actions) >= 14, actions
    assert all(r in (Role.OPERATE, Role.ENGINEER) for _, _, r in actions), actions
    opened = {p for m, p, r in table if r is None}
    assert {"/healthz", "/readyz", "/metrics"} <= opened
    assert opened <= {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/", "/station", "/static", "/swagger"}, opened


def test_default_install_anonymous_gets_403_on_every_action_and_views_stay_open(tmp_path, tiny_model):
    app, client = daemon_app(tmp_path, tiny_model)
    refused, viewed = 0, 0
    for method, path, role in _cells(app):
        status = _ask(client, method, path)
        if role in (Role.OPERATE, Role.ENGINEER):
            assert status == 403, (method, path, status)
            refused += 1
        else:
            assert status not in REFUSED, (method, path, status)
            viewed += role is Role.VIEW
    r = client.get("/events", params={"since_seq": 0})  # replaying history: not a view
    assert r.status_code == 403 and "api.token" in r.json()["detail"]
    assert refused >= 14 and viewed >= 8
    assert not (tmp_path / "feedback").exists() or not any((tmp_path / "feedback").rglob("*.jpg"))


@pytest.mark.parametrize("viewing", ["open", "token"])
def test_token_install_every_cell(tmp_path, tiny_model, viewing):
    app, client = daemon_app(tmp_path, tiny_model, token=TEST_TOKEN, viewing=viewing)
    for method, path, role in _cells(app):
        anon, wrong = _ask(client, method, path), _ask(client, method, path, {"Authorization": "Bearer wrong"})
        holder = _ask(client, method, path, AUTH)
        if role is None:
            assert anon not in REFUSED and holder not in REFUSED, (method, path)
        elif role is Role.VIEW and viewing == "open":
            assert anon not in REFUSED and holder not in REFUSED, (method, path, anon)
        else:
            assert anon == 401 and wrong == 401, (method, path, anon, wrong)
            assert holder not in REFUSED, (method, path, holder)
    assert client.get("/events", params={"since_seq": 0}).status_code == 401
    assert client.get("/events", params={"since_seq": 0}, headers=AUTH).status_code not in REFUSED


def test_viewing_is_one_setting_for_the_live_image_on_both_routes(tmp_path, tiny_model):
    """Issue 24: /snapshot.jpg was protected while /ui/frame.jpg showed the same image to anyone."""
    for viewing, want in (("open", False), ("token", True)):
        app, client = daemon_app(tmp_path / viewing, tiny_model, token=TEST_TOKEN, viewing=viewing)
        for path in ("/snapshot.jpg", "/ui/frame.jpg", "/status", "/ui/summary", "/events", "/ui/decisions"):
            assert (client.get(path).status_code == 401) is want, (viewing, path)


def test_the_page_says_how_to_enable_actions(tmp_path, tiny_model, caplog):
    with caplog.at_level("WARNING", logger="edge.api.app"):
        _, client = daemon_app(tmp_path, tiny_model)
    assert any("no credential configured" in m and "api.token" in m for m in caplog.messages)
    s = client.get("/ui/summary").json()
    assert s["access"]["actions_enabled"] is False and "api.token" in s["access"]["how_to_enable"]


def test_a_refused_request_is_answered_from_its_head_and_closed(tmp_path, tiny_model):
    """A real server: an anonymous upload announcing 5 MB gets its 403 before sending a byte of it, and the
    connection is closed (so trickling the body cannot hold a connection)."""
    from edge.api.server import start_api

    app, _ = daemon_app(tmp_path, tiny_model)
    cfg = app.state.boxinspect.config
    server = start_api(app, cfg.api.model_copy(update={"host": "127.0.0.1", "port": 0}), 20)
    try:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /ui/check HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                      b"Content-Length: 5000000\r\n\r\n")
            data = b""
            t0 = time.monotonic()
            while time.monotonic() - t0 < 10:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        head = data.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.1 403"), data[:200]
        assert b"connection: close" in head
        assert not chunk, "the server kept the connection open"
    finally:
        server.stop(5)
