"""Plant integration parts on their own: deadline tracker and fail-safe, reject outputs (MQTT on the real broker,
GPIO with a fake chip), SPC alarm, Home Assistant discovery on the real broker, the OPC UA server with a real
asyncua client. The daemon as a process with all of them: tests/test_plant_daemon.py."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import SecretStr

from edge.config import (
    Config,
    ConfigError,
    GpioConfig,
    MqttConfig,
    OpcuaConfig,
    RejectConfig,
    SpcConfig,
    parse_config,
)
from edge.deliver.homeassistant import discovery_messages, publish_discovery
from edge.deliver.mqtt_sink import MqttSink
from edge.deliver.reject import GpiodPulse, RejectOutput
from edge.judge.deadline import DeadlineTracker
from edge.judge.decision import Decision
from edge.judge.spc import SpcMonitor
from edge.runtime.metrics import Metrics
from tests.helpers import Subscriber, free_port, metric, wait_for

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "edge" / "event.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
LABELS = ("intact", "damaged")


class Clock:
    """A clock the test moves by hand (the watchdog thread reads it)."""

    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def model_decision(part_id: str | None, decided_at: float, defect: bool = False, mode: str = "triggered") -> Decision:
    score = 0.9 if defect else 0.1
    return Decision(
        event_id=str(uuid.uuid4()), part_id=part_id, label=LABELS[defect], is_defect=defect, score=score,
        max_score=score, mean_score=score, frame_count=3, first_frame=1, last_frame=3, threshold=0.5,
        model_id="m-1", captured_at=decided_at - 0.01, decided_at=decided_at, mode=mode,
    )


def make_tracker(policy: str = "reject", deadline_ms: float = 500) -> tuple[DeadlineTracker, list[Decision], list[str], Clock, Metrics]:
    emitted: list[Decision] = []
    cancelled: list[str] = []
    clock = Clock()
    m = Metrics()
    tr = DeadlineTracker(
        RejectConfig(deadline_ms=deadline_ms, on_timeout=policy), emitted.append, lambda: (LABELS, 0.5, "m-1"),
        cancel=cancelled.append, registry=m.registry, clock=clock,
    )
    return tr, emitted, cancelled, clock, m


# ------------------------------------------------------------------------------------------------ deadlines


def test_deadline_met_and_missed() -> None:
    tr, emitted, cancelled, clock, m = make_tracker(deadline_ms=500)
    tr.start()
    try:
        t0 = clock.t
        tr.register("A", t0)
        tr.register("B", t0)
        # A is decided 200 ms after its trigger: in time, 300 ms of slack
        clock.t = t0 + 0.2
        a = model_decision("A", clock.t, defect=True)
        assert tr.resolve(a)
        assert a.late is False and a.slack_ms == pytest.approx(300, abs=1) and a.action == "reject"
        assert not emitted
        # B is not decided: once the clock passes its deadline the watchdog emits its timeout decision
        clock.t = t0 + 0.6
        wait_for(lambda: emitted, 10, "the timeout decision of B", interval=0.01)
        (b,) = emitted
        assert b.part_id == "B" and b.kind == "timeout" and b.late is True and b.action == "reject"
        assert b.slack_ms == pytest.approx(-100, abs=1)
        assert cancelled == ["B"]
        # the model decision of B that comes afterwards is superseded: one decision per part
        assert not tr.resolve(model_decision("B", clock.t))
    finally:
        tr.stop()
    assert metric(m, "boxinspect_deadline_slack_seconds_count") == 2
    assert metric(m, "boxinspect_decisions_late_total") == 1
    assert metric(m, "boxinspect_timeouts_total", action="reject") == 1
    assert metric(m, "boxinspect_decisions_superseded_total") == 1
    assert tr.stats()["pending"] == 0


@pytest.mark.parametrize("policy, is_defect", [("reject", True), ("pass", False), ("hold", True)])
def test_each_fail_safe_policy_makes_a_valid_timeout_event(policy: str, is_defect: bool) -> None:
    tr, emitted, _, clock, _ = make_tracker(policy=policy)
    tr.start()
    try:
        tr.register("P-1", clock.t)
        clock.t += 1.0
        wait_for(lambda: emitted, 10, "a timeout decision", interval=0.01)
    finally:
        tr.stop()
    (d,) = emitted
    ev = d.to_event("line1", "cam1")
    VALIDATOR.validate(ev)
    assert ev["kind"] == "timeout" and ev["action"] == policy and ev["is_defect"] is is_defect
    assert ev["label"] == "timeout" and ev["score"] is None and ev["frame_count"] == 0 and ev["late"] is True
    assert "500 ms" in ev["reason"] and ev["part_id"] == "P-1"


def test_refused_and_pending_parts_are_never_dropped() -> None:
    tr, emitted, _, clock, _ = make_tracker()
    tr.start()
    tr.register("R", clock.t)
    tr.refuse("R", "trigger refused: too many triggers waiting for frames")
    assert [d.reason for d in emitted] == ["trigger refused: too many triggers waiting for frames"]
    tr.register("S1", clock.t)
    tr.register("S1", clock.t)  # the same id twice: two parts, two decisions
    tr.stop("daemon stopping")
    assert [(d.part_id, d.reason) for d in emitted[1:]] == [("S1", "daemon stopping")] * 2
    assert tr.pending == 0


def test_continuous_parts_are_numbered_and_timed_from_the_roi_exit() -> None:
    tr, _, _, clock, _ = make_tracker(deadline_ms=1000)
    d1 = model_decision(None, clock.t, mode="continuous")
    assert tr.resolve(d1, exit_at=clock.t - 0.25)
    d2 = model_decision(None, clock.t, mode="continuous")
    assert tr.resolve(d2, exit_at=clock.t - 1.5)
    assert (d1.part_id, d1.late, round(d1.slack_ms)) == ("1", False, 750)
    assert (d2.part_id, d2.late, round(d2.slack_ms)) == ("2", True, -500)


def test_open_passage_times_out_only_when_the_loop_stalls() -> None:
    tr, emitted, _, clock, m = make_tracker(deadline_ms=1000)
    tr.start()
    try:
        pid = tr.open_passage(clock.t)
        assert pid == "1"
        for _ in range(5):  # the loop turns: 5 s with the box in view, no timeout
            clock.t += 0.5
            tr.heartbeat()
            time.sleep(0.03)
        assert not emitted
        d = model_decision("1", clock.t, mode="continuous")
        assert tr.resolve(d, exit_at=clock.t - 0.2) and (d.late, round(d.slack_ms)) == (False, 800)
        pid = tr.open_passage(clock.t)
        tr.forget(pid)  # too short to be a box: never a part
        pid = tr.open_passage(clock.t)
        clock.t += 1.5  # no heartbeat: the loop is stuck
        wait_for(lambda: emitted, 10, "the timeout of the open passage", interval=0.01)
    finally:
        tr.stop()
    (t,) = emitted
    assert (t.part_id, t.mode, t.kind) == ("3", "continuous", "timeout") and "stalled" in (t.reason or "")
    assert not tr.resolve(model_decision("3", clock.t, mode="continuous"), exit_at=clock.t)  # superseded
    assert metric(m, "boxinspect_decisions_superseded_total") == 1


# ------------------------------------------------------------------------------------------------ reject outputs


class FakeRequest:
    """Stands in for gpiod's LineRequest: records every value set on a line."""

    def __init__(self) -> None:
        self.values: list[tuple[int, str]] = []
        self.released = False
        self.lock = threading.Lock()

    def set_value(self, line: int, value: Any) -> None:
        with self.lock:
            self.values.append((line, value.name))

    def release(self) -> None:
        self.released = True


class FakeChip:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict, str | None]] = []
        self.request = FakeRequest()

    def request_lines(self, path: str, config: dict, consumer: str | None = None) -> FakeRequest:
        self.requests.append((path, config, consumer))
        return self.request


def test_gpio_pulse_through_the_gpiod_v2_api_with_a_fake_chip() -> None:
    from gpiod.line import Direction, Value

    chip = FakeChip()
    cfg = GpioConfig(enabled=True, chip="/dev/gpiochip7", line=23, active_low=True, pulse_ms=50)
    out = GpiodPulse(cfg, request_lines=chip.request_lines)
    ((path, config, consumer),) = chip.requests
    settings = config[23]
    assert path == "/dev/gpiochip7" and consumer == "boxinspect"
    assert settings.direction == Direction.OUTPUT and settings.output_value == Value.INACTIVE and settings.active_low
    out.pulse(0.05)
    assert out.active and chip.request.values == [(23, "ACTIVE")]
    out.pulse(0.05)  # a reject during the pulse extends it: no second edge
    wait_for(lambda: not out.active, 10, "the end of the pulse", interval=0.01)
    assert chip.request.values == [(23, "ACTIVE"), (23, "INACTIVE")]
    out.pulse(0.05)
    wait_for(lambda: not out.active, 10, "the end of the second pulse", interval=0.01)
    out.close()
    assert chip.request.values[-3:] == [(23, "ACTIVE"), (23, "INACTIVE"), (23, "INACTIVE")] and chip.request.released


def test_gpio_error_names_the_key() -> None:
    def no_chip(path: str, config: dict, consumer: str | None = None) -> None:
        raise FileNotFoundError(2, "No such file or directory")

    with pytest.raises(RuntimeError, match=r"reject.gpio: cannot request line 17 of /dev/gpiochip0"):
        GpiodPulse(GpioConfig(enabled=True), request_lines=no_chip)


def test_reject_command_on_the_broker(mosquitto: Any, tmp_path: Path) -> None:
    base = f"boxinspect/t/c{uuid.uuid4().hex[:6]}"
    sink = MqttSink(MqttConfig(host=mosquitto.host, port=mosquitto.port, outbox_path=tmp_path / "o.sqlite3"), base)
    chip = FakeChip()
    pulses: list[bool] = []
    m = Metrics()
    cfg = RejectConfig(mqtt=True, gpio=GpioConfig(enabled=True, pulse_ms=30))
    out = RejectOutput(cfg, f"{base}/reject", sink.publish, GpiodPulse(cfg.gpio, request_lines=chip.request_lines),
                       m.registry, on_pulse=pulses.append)
    with Subscriber(mosquitto.host, mosquitto.port, f"{base}/reject") as sub:
        sink.start()
        try:
            assert sink.wait_connected(10)
            ev = {"part_id": "P-7", "event_id": "e1", "action": "reject", "kind": "model", "deadline_at": "x", "late": False}
            out.handle(ev)
            out.handle({**ev, "part_id": "P-8", "action": "pass"})  # nothing for a passed part
            out.handle({**ev, "part_id": "P-9", "action": "hold", "kind": "timeout", "reason": "no decision"})
            assert sub.wait_for(lambda s: len(s.on("/reject")) >= 2, 10)
            time.sleep(0.2)
            msgs = sub.on("/reject")
        finally:
            sink.stop(2)
    cmds = [json.loads(p) for _, p, _ in msgs]
    assert [(c["part_id"], c["action"]) for c in cmds] == [("P-7", "reject"), ("P-9", "hold")]
    assert not any(retained for _, _, retained in msgs)
    assert chip.request.values[0] == (17, "ACTIVE")  # the pulse fired for the reject only
    wait_for(lambda: pulses == [True, False], 10, "the OPC UA pulse flag to go up and down", interval=0.01)
    assert metric(m, "boxinspect_reject_commands_total", output="mqtt", outcome="sent") == 2
    assert metric(m, "boxinspect_reject_commands_total", output="gpio", outcome="sent") == 1


# ------------------------------------------------------------------------------------------------ SPC


def test_spc_consecutive_rule_sets_and_clears_with_hysteresis() -> None:
    m = Metrics()
    spc = SpcMonitor(SpcConfig(enabled=True, consecutive=3, clear_consecutive_ok=2, window=100, rate_pct=90, clear_rate_pct=80), m.registry)
    seq = [True, True, False, True, True]
    assert [spc.update(x) for x in seq] == [None] * 5  # never 3 in a row
    s = spc.update(True)
    assert s is not None and s.active and s.rules == ["consecutive"] and "3 defective parts in a row" in s.reason
    assert metric(m, "boxinspect_spc_alarm", rule="consecutive") == 1
    assert spc.update(False) is None  # one good part is not enough: hysteresis
    assert spc.update(True) is None and spc.update(False) is None
    s = spc.update(False)
    assert s is not None and not s.active
    assert metric(m, "boxinspect_spc_alarm", rule="consecutive") == 0
    assert metric(m, "boxinspect_spc_alarms_total", rule="consecutive") == 1


def test_spc_rate_rule_needs_a_full_window_and_clears_below_the_lower_limit() -> None:
    spc = SpcMonitor(SpcConfig(enabled=True, consecutive=100, window=10, rate_pct=30, clear_rate_pct=10))
    changes = []
    pattern = [True, False, False] * 3 + [True] * 1  # 4 of 10 = 40 % once the window is full
    for x in pattern:
        changes.append(spc.update(x))
    assert changes[:-1] == [None] * 9
    assert changes[-1] is not None and changes[-1].rules == ["rate"]
    # 20 %: below the raising limit but above the clearing limit: still active
    for x in [False, False]:
        assert spc.update(x) is None
    cleared = None
    for _ in range(10):
        cleared = cleared or spc.update(False)
    assert cleared is not None and not cleared.active and spc.defect_rate_pct <= 10


def test_spc_config_needs_hysteresis() -> None:
    with pytest.raises(ConfigError, match="spc: Value error, clear_rate_pct must be below rate_pct"):
        parse_config({"spc": {"rate_pct": 10, "clear_rate_pct": 10}}, environ={})


# ------------------------------------------------------------------------------------------------ Home Assistant

# Configuration variables of HA's MQTT sensor / binary_sensor integrations (their documentation pages), as far
# as discovery payloads use them; anything else in a payload would be a typo HA ignores or rejects.
HA_COMMON = {
    "availability", "availability_mode", "availability_template", "availability_topic", "device", "device_class",
    "enabled_by_default", "encoding", "entity_category", "expire_after", "force_update", "icon",
    "json_attributes_template", "json_attributes_topic", "name", "object_id", "default_entity_id", "payload_available",
    "payload_not_available", "qos", "state_topic", "unique_id", "value_template", "origin",
}
HA_FIELDS = {
    "sensor": HA_COMMON | {"last_reset_value_template", "state_class", "unit_of_measurement", "suggested_display_precision", "options"},
    "binary_sensor": HA_COMMON | {"off_delay", "payload_off", "payload_on"},
}
HA_DEVICE_FIELDS = {"configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model", "model_id",
                    "name", "serial_number", "suggested_area", "sw_version", "via_device"}
HA_STATE_CLASSES = {"measurement", "total", "total_increasing"}
HA_BINARY_DEVICE_CLASSES = {"connectivity", "problem", "running", "power", "safety"}


def check_ha_payload(topic: str, payload: dict[str, Any], base: str) -> None:
    prefix, component, node, object_id, last = topic.split("/")
    assert prefix == "homeassistant" and last == "config" and component in HA_FIELDS
    assert set(payload) <= HA_FIELDS[component], set(payload) - HA_FIELDS[component]
    assert payload["state_topic"] == f"{base}/stats"
    assert payload["unique_id"].endswith(object_id) and payload["unique_id"].startswith(node)
    assert payload["availability_topic"] == f"{base}/status" and "availability" not in payload  # never both
    assert (payload["payload_available"], payload["payload_not_available"]) == ("online", "offline")
    assert set(payload["device"]) <= HA_DEVICE_FIELDS and payload["device"]["identifiers"] == [node]
    assert payload["value_template"].startswith("{{") and payload["value_template"].endswith("}}")
    if "state_class" in payload:
        assert payload["state_class"] in HA_STATE_CLASSES
    if component == "binary_sensor":
        assert payload["device_class"] in HA_BINARY_DEVICE_CLASSES and {payload["payload_on"], payload["payload_off"]} == {"ON", "OFF"}


def test_home_assistant_discovery_payloads_on_the_broker(mosquitto: Any, tmp_path: Path) -> None:
    cam = f"c{uuid.uuid4().hex[:6]}"
    cfg = parse_config({"line": "l1", "camera": cam, "homeassistant": {"enabled": True},
                        "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "outbox_path": str(tmp_path / "o.sqlite3")}},
                       environ={})
    expected = discovery_messages(cfg, "1.2.3")
    objects = {t.split("/")[3] for t in expected}
    assert objects == {"defect_rate", "last_verdict", "last_score", "fps", "outbox_depth", "camera_ok"}
    for topic, payload in expected.items():
        check_ha_payload(topic, payload, cfg.topic_base)
    sink = MqttSink(cfg.mqtt, cfg.topic_base)
    sink.start()
    try:
        assert sink.wait_connected(10)
        assert publish_discovery(cfg, sink.publish, "1.2.3") == len(expected)
        time.sleep(0.3)
    finally:
        sink.stop(2)
    node = f"boxinspect_l1_{cam}"
    # a subscriber that comes later (Home Assistant restarting) gets them: retained
    with Subscriber(mosquitto.host, mosquitto.port, f"homeassistant/+/{node}/+/config") as sub:
        assert sub.wait_for(lambda s: len(s.raw) >= len(expected), 10)
        got = {t: (json.loads(p), r) for t, p, r in sub.raw}
        # clean up the retained messages of this test
        for t in got:
            sub.client.publish(t, b"", qos=1, retain=True).wait_for_publish(5)
    assert {t: p for t, (p, _) in got.items()} == expected and all(r for _, r in got.values())
    # the state the templates read is what the daemon's stats carry
    stats_keys = {"defect_rate_pct", "last_label", "last_score", "fps", "outbox_depth", "camera_state"}
    for payload in expected.values():
        assert any(f"value_json.{k}" in payload["value_template"] for k in stats_keys)


# ------------------------------------------------------------------------------------------------ OPC UA


# A real asyncua server start takes seconds of CPU (keys, address space): the full lane, not the fast one.
OPCUA_SERVER = pytest.mark.slow


def opcua_cfg(**kw: Any) -> OpcuaConfig:
    base: dict[str, Any] = {"enabled": True, "endpoint": f"opc.tcp://127.0.0.1:{free_port()}/boxinspect/",
                            "username": "plc", "password": SecretStr("s3cret")}
    base.update(kw)
    return OpcuaConfig(**base)


def test_opcua_config_refuses_an_open_server_unless_asked() -> None:
    with pytest.raises(ConfigError, match="opcua: Value error, no way to log in"):
        parse_config({"opcua": {"enabled": True}}, environ={})
    assert parse_config({"opcua": {"enabled": True, "allow_anonymous": True}}, environ={}).opcua.allow_anonymous
    with pytest.raises(ConfigError, match="needs certificate and private_key"):
        parse_config({"opcua": {"enabled": True, "username": "u", "password": "p", "security_policy": "Basic256Sha256_Sign"}}, environ={})
    assert not Config().opcua.enabled


async def _subscribe(url: str, user: str | None, password: str | None, node_path: str, n: int, timeout: float) -> list[Any]:
    from asyncua import Client

    client = Client(url)
    if user is not None:
        client.set_user(user)
        client.set_password(password or "")
    got: list[Any] = []

    class Handler:
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            got.append(val)

    async with client:
        idx = await client.get_namespace_index("urn:boxinspect")
        node = client.get_node(f"ns={idx};s={node_path}")
        sub = await client.create_subscription(50, Handler())
        await sub.subscribe_data_change(node)
        end = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < end:
            await asyncio.sleep(0.05)
        await sub.delete()
    return got


@OPCUA_SERVER
def test_opcua_server_subscription_and_security() -> None:
    from asyncua import Client
    from asyncua.ua.uaerrors import BadIdentityTokenRejected, BadUserAccessDenied

    from edge.deliver.opcua import OpcuaServer

    cfg = opcua_cfg()
    server = OpcuaServer(cfg, "l1", "c1")
    server.start()
    try:
        results: list[list[Any]] = []
        t = threading.Thread(target=lambda: results.append(
            asyncio.run(_subscribe(cfg.endpoint, "plc", "s3cret", "l1.c1.LastDecision.PartId", 4, 20))))
        t.start()
        time.sleep(1.5)  # let the client subscribe (the first notification is the initial value)
        for pid in ("P-1", "P-2", "P-3"):
            server.update({"LastDecision.PartId": pid, "LastDecision.Sequence": 1}).result(5)
            time.sleep(0.2)
        t.join(30)
        assert results and results[0][-3:] == ["P-1", "P-2", "P-3"], results

        async def login(user: str | None, password: str | None) -> None:
            c = Client(cfg.endpoint)
            if user is not None:
                c.set_user(user)
                c.set_password(password or "")
            async with c:
                pass

        with pytest.raises(BadIdentityTokenRejected):  # anonymous: not offered unless allow_anonymous
            asyncio.run(login(None, None))
        with pytest.raises(BadUserAccessDenied):
            asyncio.run(login("plc", "wrong"))
        with pytest.raises(KeyError):
            server.update({"No.Such": 1})
    finally:
        server.stop()


def _cert(tmp: Path, name: str, uri: str, server: bool) -> tuple[Path, Path]:
    """A self-signed OPC UA application certificate (DER) and its key (PEM), made with asyncua's own helpers."""
    import ipaddress

    from asyncua.crypto import cert_gen
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key, name, {}, [x509.UniformResourceIdentifier(uri), x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    cert_path, key_path = tmp / f"{name}.der", tmp / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return cert_path, key_path


@OPCUA_SERVER
def test_opcua_signed_and_encrypted_channel_with_password_and_certificate_login(tmp_path: Path) -> None:
    from asyncua import Client
    from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
    from asyncua.ua import MessageSecurityMode

    from edge.deliver.opcua import OpcuaServer

    server_cert, server_key = _cert(tmp_path, "server", "urn:freeopcua:python:server", server=True)
    client_cert, client_key = _cert(tmp_path, "client", "urn:freeopcua:client", server=False)
    cfg = opcua_cfg(security_policy="Basic256Sha256_SignAndEncrypt", certificate=server_cert, private_key=server_key,
                    trusted_client_certs=[client_cert])
    server = OpcuaServer(cfg, "l1", "c1")
    server.start()

    async def read_part_id(secure: bool, user: str | None, password: str | None, cert_login: bool = False) -> Any:
        c = Client(cfg.endpoint)
        if secure:
            await c.set_security(SecurityPolicyBasic256Sha256, str(client_cert), str(client_key),
                                 mode=MessageSecurityMode.SignAndEncrypt)
        if user is not None:
            c.set_user(user)
            c.set_password(password or "")
        if cert_login:  # X509 identity token: the user is the trusted client certificate
            await c.load_client_certificate(str(client_cert))
            await c.load_private_key(str(client_key))
        async with c:
            idx = await c.get_namespace_index("urn:boxinspect")
            return await c.get_node(f"ns={idx};s=l1.c1.LastDecision.PartId").read_value()

    try:
        server.update({"LastDecision.PartId": "ENC-1"}).result(5)
        assert asyncio.run(read_part_id(True, "plc", "s3cret")) == "ENC-1"  # password over an encrypted channel
        assert asyncio.run(read_part_id(True, None, None, cert_login=True)) == "ENC-1"  # certificate as the user
        with pytest.raises(Exception):  # noqa: B017 (asyncua raises different errors per version): no plain channel
            asyncio.run(read_part_id(False, "plc", "s3cret"))
    finally:
        server.stop()


@OPCUA_SERVER
def test_opcua_port_in_use_is_a_clear_error() -> None:
    import socket

    from edge.deliver.opcua import OpcuaServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        cfg = opcua_cfg(endpoint=f"opc.tcp://127.0.0.1:{s.getsockname()[1]}/boxinspect/")
        server = OpcuaServer(cfg, "l1", "c1")
        with pytest.raises(RuntimeError, match=r"opcua: cannot start on opc.tcp://127.0.0.1:\d+/boxinspect/: .*address already in use"):
            server.start()
        server.stop()


def test_opcua_users_from_a_file(tmp_path: Path) -> None:
    """Issue 24: with allow_anonymous false, users come from opcua.users_file (scrypt hashes); a real client logs in
    with a listed password, a wrong one is refused, a bad file stops start-up naming its line."""
    from asyncua import Client
    from asyncua.ua.uaerrors import BadUserAccessDenied

    from edge.deliver.opcua import OpcuaServer
    from edge.deliver.opcua_users import UsersFileError, load_users, user_line

    users = tmp_path / "opcua-users"
    users.write_text(f"# plant users\n{user_line('line-plc', 'pw-1')}\n{user_line('scada', 'pw-2')}\n")
    cfg = OpcuaConfig(enabled=True, endpoint=f"opc.tcp://127.0.0.1:{free_port()}/boxinspect/", users_file=users)
    server = OpcuaServer(cfg, "l1", "c1")
    server.start()
    try:
        async def login(user: str, password: str) -> None:
            c = Client(cfg.endpoint)
            c.set_user(user)
            c.set_password(password)
            async with c:
                pass

        asyncio.run(login("line-plc", "pw-1"))
        asyncio.run(login("scada", "pw-2"))
        with pytest.raises(BadUserAccessDenied):
            asyncio.run(login("scada", "pw-1"))
    finally:
        server.stop()
    users.write_text("plc:plaintext\n")
    with pytest.raises(UsersFileError, match="line 1"):
        load_users(users)


def test_stack_light_lamps_follow_the_station_alarms_on_gpio_lines(tmp_path: Path) -> None:
    """issue 26: ``station.gpio`` holds a lamp's line active while its alarm is (an NG not yet acknowledged), and
    inactive after the acknowledgement; a line that cannot be had leaves the station working without that lamp."""
    from edge.api.state import ApiState
    from edge.api.station import AckRequest, StationState
    from edge.runtime.metrics import Metrics
    from edge.state import ModelSlot
    from tests.helpers import edge_config

    chip = FakeChip()
    cfg = edge_config(tmp_path, station={"gpio": {"ng": {"chip": "/dev/gpiochip3", "line": 5},
                                                                  "spc": {"line": 6, "active_low": True}}})
    state = ApiState(config=cfg, metrics=Metrics(), models=ModelSlot(None))
    station = StationState(state, request_lines=chip.request_lines)
    station.start_outputs()
    station.stop_outputs()  # the test drives the updates itself
    assert sorted(station.lamps) == ["ng", "spc"] and [r[0] for r in chip.requests] == ["/dev/gpiochip3", "/dev/gpiochip0"]
    station.update_outputs()
    assert chip.request.values == [(5, "INACTIVE"), (6, "INACTIVE")]  # no alarm: both lamps off
    state.events.add({"event_id": "e1", "is_defect": True, "label": "defective", "decided_at": "2026-12-06T03:00:00Z"})
    station.update_outputs()
    station.update_outputs()  # no change: nothing more reaches the chip
    assert chip.request.values[2:] == [(5, "ACTIVE")]
    station.acknowledge(AckRequest(alarm="ng"), "otto")
    station.update_outputs()
    assert chip.request.values[3:] == [(5, "INACTIVE")]

    def no_chip(path: str, config: dict, consumer: str | None = None) -> None:
        raise FileNotFoundError(2, "No such file or directory")

    broken = StationState(state, request_lines=no_chip)
    broken.start_outputs()
    broken.stop_outputs()
    assert broken.lamps == {}
