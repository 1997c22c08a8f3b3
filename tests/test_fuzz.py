"""Fuzzing the API of a running daemon process: zero 5xx allowed.

- schemathesis generates requests for every operation in the daemon's own OpenAPI document, positive
  (valid by the schema) and negative (invalid), each sent with the right token, a wrong one or none;
- Hypothesis mutates real JPEG/PNG/BMP/WebP files (bit flips, cuts, inserted bytes, header sizes) and
  uploads them to /predict.

CI runs ``BOXINSPECT_FUZZ_CASES`` (default 750; every operation gets at least 10, and the test fails if one
is never exercised) schemathesis cases and ``BOXINSPECT_FUZZ_IMAGES`` (default 300) image cases, derandomised
so a run is repeatable. ``scripts/fuzz.sh`` runs 10,000+ with
fresh randomness and writes the counts to ``BOXINSPECT_FUZZ_REPORT``; docs/RELIABILITY.md has the result.
"""

from __future__ import annotations

import collections
import json
import os
import signal
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import requests

from tests.helpers import DaemonProc, package_copies
from tests.test_daemon import SLOW, base_cfg

hypothesis = pytest.importorskip("hypothesis")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

TOKEN = "fuzz-token"
API_CASES = int(os.environ.get("BOXINSPECT_FUZZ_CASES", "750"))
IMAGE_CASES = int(os.environ.get("BOXINSPECT_FUZZ_IMAGES", "300"))
RANDOM = os.environ.get("BOXINSPECT_FUZZ_RANDOM") == "1"  # scripts/fuzz.sh: fresh randomness each run
REPORT = os.environ.get("BOXINSPECT_FUZZ_REPORT")
NOT_READY_503 = ("/readyz", "/snapshot.jpg", "/predict")


def _settings(n: int, run_seed: int = 0) -> Any:
    """Hypothesis settings for ``n`` examples; a fixed seed per run in CI, fresh randomness in fuzz.sh."""
    s = settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck), print_blob=True)
    if RANDOM:
        return s
    return lambda f: seed(run_seed)(s(f))


def _report(name: str, counts: collections.Counter) -> None:
    if not REPORT:
        return
    p = Path(REPORT)
    data = json.loads(p.read_text()) if p.exists() else {}
    data[name] = {str(k): v for k, v in sorted(counts.items())}
    p.write_text(json.dumps(data, indent=1))


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, int8_model: Path, synth_video) -> Any:
    """One daemon process for the module: a looping video, a token, its model in a model.dir."""
    tmp = tmp_path_factory.mktemp("fuzz")
    (pkg,) = package_copies(int8_model, tmp / "models", ["m"])
    video, gt = synth_video
    cfg = base_cfg(tmp, pkg, video, gt, None, api={"token": TOKEN}, logging={"level": "WARNING"})
    d = DaemonProc(tmp, cfg).start()
    try:
        d.wait_api()
        yield d
        assert d.alive(), d.log()[-3000:]
        d.send(signal.SIGTERM)
        assert d.wait(60) == 0
    finally:
        d.stop()


def _auth_headers(choice: int) -> dict[str, str]:
    return [{"Authorization": f"Bearer {TOKEN}"}, {"Authorization": "Bearer wrong"}, {}][choice]


@SLOW
def test_schemathesis_every_endpoint_with_and_without_token_never_5xx(daemon):
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(daemon.base + "/openapi.json")
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) >= 9, [o.label for o in ops]
    per_case = max(10, API_CASES // len(ops))  # first pass: every operation gets its share
    counts: collections.Counter = collections.Counter()
    per_op: collections.Counter = collections.Counter()
    failures: list[str] = []
    session = requests.Session()

    def fuzz(op: Any, n: int, run_seed: int) -> None:
        positive = op.as_strategy(GenerationMode.POSITIVE)
        negative = op.as_strategy(GenerationMode.NEGATIVE)

        @_settings(n, run_seed)
        @given(case=st.one_of(positive, negative), who=st.integers(0, 2))
        def run(case: Any, who: int) -> None:
            headers = {k: v for k, v in dict(case.headers or {}).items() if k.lower() != "authorization"}
            headers.update(_auth_headers(who))
            case.headers = headers
            r = case.call(base_url=daemon.base, session=session, timeout=60)
            counts[f"{r.status_code // 100}xx"] += 1
            per_op[case.operation.label] += 1
            # 503 is the documented "not ready / no frame yet / decode slots busy" answer of a few endpoints
            if r.status_code >= 500 and not (r.status_code == 503 and case.operation.path in NOT_READY_503):
                failures.append(f"{case.operation.label} -> {r.status_code}: {r.text[:200]}")
                raise AssertionError(failures[-1])

        run()

    for i, op in enumerate(ops):
        fuzz(op, per_case, i)
    # Operations without parameters exhaust after a few cases; the rest of the budget goes to the others.
    rich = [op for op in ops if per_op[op.label] >= per_case * 0.8]
    left = API_CASES - sum(per_op.values())
    if left > 0 and rich:
        for i, op in enumerate(rich):
            fuzz(op, left // len(rich) + 1, 1000 + i)

    total = sum(counts.values())
    _report("schemathesis", counts + collections.Counter({"total": total, "operations": len(per_op)}))
    assert not failures, failures[:5]
    assert total >= API_CASES * 0.9, (total, counts, per_op)
    assert len(per_op) == len(ops), f"operations never exercised: {set(o.label for o in ops) - set(per_op)}"
    assert daemon.alive()
    assert httpx.get(daemon.base + "/healthz", timeout=5).status_code == 200


def _seed_images() -> list[bytes]:
    rng = np.random.default_rng(3)
    img = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    out = []
    for ext, params in ((".jpg", []), (".png", []), (".bmp", []), (".webp", []), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101])):
        ok, buf = cv2.imencode(ext, img, params)
        assert ok
        out.append(buf.tobytes())
    return out


@st.composite
def mutated_image(draw: st.DrawFn) -> bytes:
    """A real image with 1-4 mutations: bit flips, cuts, inserted or overwritten bytes, huge header sizes."""
    data = bytearray(draw(st.sampled_from(_seed_images())))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "overwrite", "header_size", "truncate_head"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[pos : pos + len(chunk)] = chunk
        elif kind == "header_size":  # big sizes where the formats keep them (PNG IHDR, BMP, WebP VP8/VP8X)
            at = draw(st.sampled_from([16, 18, 20, 22, 24, 26, 27, 28]))
            if len(data) > at + 4:
                data[at : at + 4] = draw(st.sampled_from([b"\xff\xff\xff\x7f", b"\x00\x00\x00\x00", b"\xff\x3f\xff\x3f", b"\x00\x80\x00\x80"]))
        elif kind == "truncate_head":
            data = data[: draw(st.integers(0, 64))]
    return bytes(data)


@SLOW
def test_predict_with_mutated_images_never_5xx(daemon):
    counts: collections.Counter = collections.Counter()
    failures: list[str] = []
    client = httpx.Client(base_url=daemon.base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)

    @_settings(IMAGE_CASES)
    @given(data=mutated_image(), name=st.sampled_from(["a.jpg", "b.png", "c.bmp", "d.webp", "e", "f.tiff"]))
    def run(data: bytes, name: str) -> None:
        r = client.post("/predict", files={"file": (name, data, "application/octet-stream")})
        counts[str(r.status_code)] += 1
        if r.status_code >= 500:
            failures.append(f"{r.status_code}: {r.text[:200]} ({len(data)} bytes, head {data[:32].hex()})")
        assert r.status_code < 500, failures[-1]

    run()
    client.close()
    total = sum(counts.values())
    _report("predict_mutations", counts + collections.Counter({"total": total}))
    assert not failures, failures[:5]
    assert total >= IMAGE_CASES * 0.9, counts
    assert counts["200"] > 0 and (counts["415"] + counts["413"]) > 0, counts  # both kinds were reached
    assert daemon.alive()


# ------------------------------------------------------------------ issue 24: wrong content types on every route

WRONG_CASES = int(os.environ.get("BOXINSPECT_FUZZ_WRONG", "300"))
NAN_JSON = [b'{"target_recall": NaN}', b'{"cost_ratio": Infinity, "min_per_class": -Infinity}', b'{"who": NaN}',
            b'{"path": Infinity}', b"NaN", b'{"enabled": NaN, "every": 1e999}']


@st.composite
def wrong_body(draw: st.DrawFn) -> dict[str, Any]:
    """A body of a kind the route does not take: multipart with a binary part, raw binary, a form, nothing, text,
    JSON with NaN/Infinity, or random bytes declared as JSON."""
    kind = draw(st.sampled_from(["multipart", "binary", "form", "empty", "text", "nan", "json-bytes"]))
    blob = draw(st.binary(min_size=0, max_size=512))
    if kind == "multipart":
        return {"files": {draw(st.sampled_from(["file", "body", "path"])): ("x.bin", blob, "application/octet-stream")}}
    if kind == "binary":
        return {"content": blob, "headers": {"Content-Type": "application/octet-stream"}}
    if kind == "form":
        return {"data": draw(st.dictionaries(st.sampled_from(["path", "label", "who", "enabled", "kind", "id"]),
                                             st.text(max_size=20), max_size=4))}
    if kind == "empty":
        return {"content": b""}
    if kind == "text":
        return {"content": blob, "headers": {"Content-Type": "text/plain; charset=latin-1"}}
    if kind == "nan":
        return {"content": draw(st.sampled_from(NAN_JSON)), "headers": {"Content-Type": "application/json"}}
    return {"content": blob, "headers": {"Content-Type": "application/json"}}


@SLOW
def test_wrong_content_types_on_every_route_never_5xx(daemon):
    doc = httpx.get(daemon.base + "/openapi.json", timeout=30).json()
    ops = [(m.upper(), p.replace("{name}", "x").replace("{event_id}", "x").replace("{check_id}", "x")
            .replace("{which}", "thumb")) for p, item in doc["paths"].items() for m in item]
    counts: collections.Counter = collections.Counter()
    failures: list[str] = []
    client = httpx.Client(base_url=daemon.base, timeout=60)

    @_settings(WRONG_CASES, 24)
    @given(op=st.sampled_from(ops), body=wrong_body(), who=st.integers(0, 2))
    def run(op: tuple[str, str], body: dict[str, Any], who: int) -> None:
        method, path = op
        kw = dict(body)
        headers = {**kw.pop("headers", {}), **_auth_headers(who)}
        r = client.request(method, path, headers=headers, **kw)
        counts[f"{r.status_code // 100}xx"] += 1
        if r.status_code >= 500 and not (r.status_code == 503 and path in NOT_READY_503 + ("/ui/check", "/ui/check/current")):
            failures.append(f"{method} {path} -> {r.status_code}: {r.text[:200]}")
            raise AssertionError(failures[-1])

    run()
    client.close()
    total = sum(counts.values())
    _report("wrong_content_types", counts + collections.Counter({"total": total, "operations": len(ops)}))
    assert not failures, failures[:5]
    assert daemon.alive()
