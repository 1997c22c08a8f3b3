"""No 5xx from malformed bodies (issue 24, item 3): every action, with the token, gets every wrong kind of body.

A multipart body with a binary file part on a JSON route used to answer 500 (the validation-error answer could
not encode the raw bytes); NaN and Infinity in /model/retrain's JSON too (not JSON, so not encodable).
"""

from __future__ import annotations

import re

from tests.helpers import AUTH, TEST_TOKEN, daemon_app
from tests.test_access import PARAMS

BINARY = bytes(range(256)) * 8
BODIES = {
    "multipart-binary": {"files": {"file": ("x.bin", BINARY, "application/octet-stream")}},
    "multipart-text-and-binary": {"files": {"file": ("x.bin", b"\xff\xfe\x00" * 100, "image/png")}, "data": {"a": "b"}},
    "binary": {"content": BINARY, "headers": {"Content-Type": "application/octet-stream"}},
    "binary-as-json": {"content": b"\xff\xd8\xff\xe0" + BINARY, "headers": {"Content-Type": "application/json"}},
    "form": {"data": {"path": "x", "label": "\u00e9", "enabled": "yes"}},
    "empty": {"content": b""},
    "empty-json": {"content": b"", "headers": {"Content-Type": "application/json"}},
    "text": {"content": "héllo".encode("latin-1"), "headers": {"Content-Type": "text/plain"}},
    "nan": {"content": b'{"target_recall": NaN, "cost_ratio": Infinity, "min_per_class": -Infinity, "who": NaN}',
            "headers": {"Content-Type": "application/json"}},
    "deep": {"content": b"[" * 5000 + b"]" * 5000, "headers": {"Content-Type": "application/json"}},
}


def test_every_action_answers_every_malformed_body_with_4xx(tmp_path, tiny_model):
    app, client = daemon_app(tmp_path, tiny_model, token=TEST_TOKEN)
    from edge.api.access import role_table

    actions = [(m, re.sub(r"\{(\w+)\}", lambda g: PARAMS.get(g.group(1), "x"), p))
               for m, p, _ in role_table(app.routes) if m in ("POST", "DELETE")]
    assert len(actions) >= 14
    seen = 0
    for method, path in actions:
        for name, kw in BODIES.items():
            kw = dict(kw)
            headers = {**AUTH, **kw.pop("headers", {})}
            r = client.request(method, path, headers=headers, **kw)
            assert r.status_code < 500 or (r.status_code == 503 and path in ("/predict", "/ui/check", "/ui/check/current")), (
                method, path, name, r.status_code, r.text[:300])
            r.json()  # always a JSON answer
            seen += 1
    assert seen == len(actions) * len(BODIES)


def test_nan_in_retrain_is_a_422_that_names_the_field(tmp_path, tiny_model):
    _, client = daemon_app(tmp_path, tiny_model, token=TEST_TOKEN)
    r = client.post("/model/retrain", content=b'{"target_recall": NaN}', headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][-1] == "target_recall"
    r = client.post("/model/promote", files={"file": ("x.bin", BINARY, "application/octet-stream")}, headers=AUTH)
    assert r.status_code == 422 and "bytes" in r.text
