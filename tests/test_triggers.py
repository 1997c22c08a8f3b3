"""Trigger messages (triggered mode): hostile payloads never become parts and never stop inspection.

The process test runs the daemon as its own process against the real Mosquitto and sends what a black-box
probe found (issue 8): ``{``, ``null``, invalid UTF-8, 1000 x ``[`` (which used to kill paho's network thread
with a RecursionError), an oversize payload. A good trigger sent after them must still be inspected.
"""

from __future__ import annotations

import json
import signal
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import DaemonProc, Publisher, metric, topic_base, wait_for
from tests.test_daemon import SLOW, base_cfg

POISON: list[tuple[bytes, str]] = [
    (b"{", "bad_json"),
    (b"null", "not_a_trigger"),
    (b"[1, 2]", "not_a_trigger"),
    (b"\xff\xfe\xfd", "not_utf8"),
    (b"[" * 1000, "too_deep"),
    (b'{"part_id": {"a": 1}}', "bad_part_id"),
    (b"x" * 100_000, "too_large"),
]


@SLOW
def test_poison_triggers_never_become_parts_and_inspection_goes_on(tmp_path, int8_model, synth_video, mosquitto):
    video, gt = synth_video
    cfg = base_cfg(tmp_path, int8_model, video, gt, mosquitto, decision={"mode": "triggered", "trigger_frames": 2})
    pub = Publisher(mosquitto.host, mosquitto.port, f"{topic_base(cfg)}/trigger")
    d = DaemonProc(tmp_path, cfg).start()
    try:
        d.wait_triggers()
        wait_for(lambda: d.get("/readyz").status_code == 200, 60, "ready", d=d)
        for payload, _ in POISON:
            pub.send(payload)
        pub.send({"part_id": "P-OK"})
        wait_for(lambda: [e["part_id"] for e in d.get("/events").json()], 60, "the good trigger's decision", d=d)
        # only the good trigger became a part; every poison payload was refused, counted, by reason
        assert [e["part_id"] for e in d.get("/events").json()] == ["P-OK"]
        for reason in {r for _, r in POISON}:
            want = sum(1 for _, r in POISON if r == reason)
            assert d.metric("boxinspect_triggers_rejected_total", reason=reason) == want, reason
        assert d.metric("boxinspect_mqtt_callback_errors_total") == 0
        # the subscription is alive: a second good trigger after the poison is inspected too
        pub.send("P-OK-2")
        wait_for(lambda: len(d.get("/events").json()) == 2, 60, "the second good trigger's decision", d=d)
        assert d.get("/events").json()[0]["part_id"] == "P-OK-2"
        r = d.get("/readyz")
        assert r.status_code == 200, r.text
        assert "trigger rejected" in d.log()
        d.send(signal.SIGTERM)
        assert d.wait(40) == 0, d.log()
    finally:
        pub.close()
        d.stop()


@pytest.mark.parametrize(
    "payload,part",
    [
        (b'{"part_id": "A-1"}', "A-1"),
        (b'{"part_id": "A-1", "line": "L1", "meta": {"shift": [1, 2]}}', "A-1"),
        (b'{"part_id": 42}', "42"),
        (b"A-2", "A-2"),
        (b"  A-2b \n", "A-2b"),
        (b' "A-3" ', "A-3"),
        (b"17", "17"),
        (b"007", "007"),
        ("Teil-Ä1".encode(), "Teil-Ä1"),
        (b"", None),
        (b"   ", None),
        (b"{}", None),
        (b'{"part_id": null}', None),
        (b'{"other": 1}', None),
    ],
)
def test_accepted_trigger_payloads(payload, part):
    from edge.deliver.mqtt import parse_trigger

    assert parse_trigger(payload) == part


@pytest.mark.parametrize(
    "payload,reason",
    POISON
    + [
        (b"true", "not_a_trigger"),
        (b"1.5", "not_a_trigger"),
        (b"NaN", "not_a_trigger"),
        (b'"unterminated', "bad_json"),
        (b"[]", "not_a_trigger"),
        (b'{"part_id": ""}', "bad_part_id"),
        (b'{"part_id": true}', "bad_part_id"),
        (b'{"part_id": "' + b"x" * 201 + b'"}', "bad_part_id"),
        (b"x" * 201, "bad_part_id"),
        (b"A\x00B", "bad_part_id"),
        (b"line1\nline2", "bad_part_id"),
        (b'{"a":' * 5 + b"1" + b"}" * 5, "too_deep"),
        (b'"' + b"[" * 1000 + b'"', "bad_part_id"),  # brackets inside a string are not nesting
    ],
)
def test_rejected_trigger_payloads(payload, reason):
    from edge.deliver.mqtt import TriggerRejected, parse_trigger

    with pytest.raises(TriggerRejected) as e:
        parse_trigger(payload)
    assert e.value.reason == reason



# ------------------------------------------------------------------ a crashing callback (real broker, in-process)


def _sink(tmp_path, mosquitto, metrics):
    from edge.config import MqttConfig
    from edge.deliver.mqtt_sink import MqttSink

    cfg = MqttConfig(
        host=mosquitto.host, port=mosquitto.port, outbox_path=tmp_path / "outbox.sqlite3", reconnect_min_s=1,
        reconnect_max_s=2,
    )
    base = f"test/guard/{uuid.uuid4().hex[:8]}"
    return MqttSink(cfg, base, metrics, client_id=f"t-guard-{uuid.uuid4().hex[:6]}"), base


def _until_received(pub: Publisher, topic: str, got: list[bytes], payload: bytes) -> None:
    """Publish ``payload`` until the handler saw it (the subscription may still be on its way)."""

    def seen() -> bool:
        if payload in got:
            return True
        pub.send(payload, topic)
        return payload in got

    wait_for(seen, 20, f"{payload!r} at the handler", interval=0.3)


def test_a_crashing_subscription_handler_is_caught_counted_reported_and_recovers(tmp_path, mosquitto):
    from edge.api.state import ApiState
    from edge.config import parse_config
    from edge.runtime.metrics import Metrics
    from edge.state import ModelSlot

    m = Metrics()
    sink, base = _sink(tmp_path, mosquitto, m)
    topic = f"{base}/cmd"
    got: list[bytes] = []

    def handler(client, userdata, msg):
        if msg.payload == b"boom":
            raise RecursionError("maximum recursion depth exceeded")  # what 1000 x '[' did to json.loads
        got.append(msg.payload)

    sink.subscribe(topic, handler, what="test commands")
    sink.start()
    pub = Publisher(mosquitto.host, mosquitto.port)
    try:
        assert sink.wait_connected(10)
        _until_received(pub, topic, got, b"before")
        assert sink.not_ready_reason() is None
        pub.send(b"boom", topic)
        label = {"callback": f"on_message:{topic}"}
        wait_for(lambda: metric(m, "boxinspect_mqtt_callback_errors_total", **label) == 1, 10, "the crash counted")
        # /readyz says so
        state = ApiState(config=parse_config({"mqtt": {"port": mosquitto.port}}), metrics=m, models=ModelSlot(), sink=sink)
        reasons = state.not_ready_reasons()
        assert any(r.startswith("mqtt: a callback crashed 1 time(s)") and "RecursionError" in r for r in reasons), reasons
        assert sink.status()["callback_errors"] == 1
        # the connection and the subscription live on
        _until_received(pub, topic, got, b"after")
        assert sink.connected
        seq = sink.publish_defect({"event_id": "ev-after-crash", "is_defect": True})
        assert seq is not None and sink.wait_drained(10)
    finally:
        pub.close()
        sink.stop(5)


def test_a_crash_in_on_connect_still_connects_subscribes_and_delivers(tmp_path, mosquitto, monkeypatch):
    """The fault: the outbox read in on_connect raises once, before the sink marked itself connected."""
    import threading

    from edge.runtime.metrics import Metrics

    m = Metrics()
    sink, base = _sink(tmp_path, mosquitto, m)
    real_depth = sink.outbox.depth
    crashed: list[bool] = []

    def depth() -> int:
        if not crashed and threading.current_thread().name.startswith("paho-mqtt-client"):
            crashed.append(True)
            raise OSError("disk I/O error")
        return real_depth()

    monkeypatch.setattr(sink.outbox, "depth", depth)
    topic = f"{base}/cmd"
    got: list[bytes] = []
    sink.subscribe(topic, lambda c, u, msg: got.append(msg.payload), what="test commands")
    sink.publish_defect({"event_id": "ev-before-connect", "is_defect": True})
    sink.start()
    pub = Publisher(mosquitto.host, mosquitto.port)
    try:
        wait_for(lambda: crashed, 10, "the injected crash")
        assert metric(m, "boxinspect_mqtt_callback_errors_total", callback="on_connect") == 1
        assert sink.wait_connected(10)
        assert sink.wait_drained(10), "the stored event was not delivered after the crash"
        _until_received(pub, topic, got, b"hello")
    finally:
        pub.close()
        sink.stop(5)


# ------------------------------------------------------------------ any payload: a part id, none, or a refusal

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["part_id", "a", "b"]), inner, max_size=3),
    max_leaves=30,
)


def _check(payload: bytes) -> None:
    from edge.deliver.mqtt import PART_ID_MAX, TriggerRejected, parse_trigger

    try:
        part = parse_trigger(payload)
    except TriggerRejected as e:
        assert e.reason in {"too_large", "not_utf8", "too_deep", "bad_json", "not_a_trigger", "bad_part_id"}
        return
    assert part is None or (1 <= len(part) <= PART_ID_MAX and part.isprintable() and part == part.strip())


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=1500))
def test_any_bytes_give_a_part_id_none_or_a_refusal(payload):
    _check(payload)


@settings(max_examples=500, deadline=None)
@given(JSON)
def test_any_json_gives_a_part_id_none_or_a_refusal(doc):
    _check(json.dumps(doc).encode())


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet='[]{}":,1a\\ ', max_size=1024))
def test_bracket_soup_never_escapes_as_another_exception(text):
    _check(text.encode())
