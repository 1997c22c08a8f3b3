"""OPC UA server (optional extra ``plant``: asyncua): what a PLC or SCADA reads instead of MQTT JSON.

One object ``<line>.<camera>`` under Objects, in the namespace ``opcua.namespace``, with string node ids
``ns=<idx>;s=<line>.<camera>.<Path>`` (the node table is in docs/INTEGRATION.md). The server runs its own
asyncio loop in a thread; the daemon calls ``update()`` from any thread and the writes are queued to that
loop, in order. ``LastDecision.Sequence`` is written last for each decision, so a client that watches it
(subscription or poll) reads a consistent decision.

Security: anonymous clients only with ``opcua.allow_anonymous: true``; otherwise username/password
(``opcua.username``/``opcua.password``) and/or X509 user certificates (``opcua.trusted_client_certs``).
``opcua.security_policy`` other than ``none`` signs (and encrypts) the channel with the server's
``certificate``/``private_key``; use it whenever passwords cross a network.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
from concurrent.futures import Future
from datetime import datetime, timezone
from typing import Any

from edge.config import OpcuaConfig
from edge.deliver.opcua_users import check_password, load_users

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
NO_SCORE = -1.0  # Score of a timeout decision (there is none)

# path -> (VariantType name, initial value, description)
NODES: dict[str, tuple[str, Any, str]] = {
    "LastDecision.PartId": ("String", "", "part id (trigger) or passage number (continuous)"),
    "LastDecision.EventId": ("String", "", "event_id of the decision event"),
    "LastDecision.Verdict": ("String", "", "label: a model class, or 'timeout'"),
    "LastDecision.Action": ("String", "", "reject | pass | hold"),
    "LastDecision.Kind": ("String", "", "model | timeout"),
    "LastDecision.IsDefect": ("Boolean", False, "the part is not passed as good"),
    "LastDecision.Score": ("Double", NO_SCORE, "box score 0..1; -1 for a timeout decision"),
    "LastDecision.Threshold": ("Double", 0.0, "threshold in force"),
    "LastDecision.Time": ("DateTime", None, "when the decision was made (UTC)"),
    "LastDecision.DeadlineTime": ("DateTime", None, "when the part reaches the pusher (UTC)"),
    "LastDecision.SlackMs": ("Double", 0.0, "deadline minus decision time, ms (negative: late)"),
    "LastDecision.Late": ("Boolean", False, "the decision missed its deadline"),
    "LastDecision.Sequence": ("UInt32", 0, "grows by one per decision, written last"),
    "Counters.Decisions": ("UInt32", 0, "decisions (model and timeout)"),
    "Counters.Defects": ("UInt32", 0, "decisions with is_defect"),
    "Counters.Timeouts": ("UInt32", 0, "timeout decisions"),
    "Counters.Late": ("UInt32", 0, "decisions that missed their deadline"),
    "Reject.Pulse": ("Boolean", False, "true for reject.gpio.pulse_ms per reject"),
    "Reject.Count": ("UInt32", 0, "reject actions so far"),
    "Model.ModelId": ("String", "", "model in use"),
    "Model.SelfTestOk": ("Boolean", False, "the model's golden-sample self-test passed"),
    "Camera.State": ("String", "", "ok | stalled | disconnected | ended"),
    "Outbox.Depth": ("UInt32", 0, "defect events waiting for the broker"),
    "Spc.Alarm": ("Boolean", False, "SPC alarm active"),
}


class _Users:
    """asyncua user manager: anonymous only if allowed, else the configured user or a trusted certificate."""

    def __init__(self, cfg: OpcuaConfig, trusted_der: list[bytes]) -> None:
        self.cfg = cfg
        self.trusted_der = trusted_der
        self.file_users = load_users(cfg.users_file) if cfg.users_file is not None else {}  # issue 24

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None) -> Any:
        from asyncua.crypto.permission_rules import User, UserRole

        cfg = self.cfg
        # asyncua passes the peer certificate of the secure channel for any token type, so the username
        # decides first, then a trusted certificate, then anonymous access.
        if username is not None and username in self.file_users:  # opcua.users_file
            if check_password(self.file_users[username], password or ""):
                return User(role=UserRole.User, name=username)
            log.warning("OPC UA: login refused for user %r", username)
            return None
        if username is not None:
            if cfg.username is None or cfg.password is None:
                return None
            ok = hmac.compare_digest(username.encode(), cfg.username.encode()) and hmac.compare_digest(
                (password or "").encode(), cfg.password.get_secret_value().encode()
            )
            if not ok:
                log.warning("OPC UA: login refused for user %r", username)
                return None
            return User(role=UserRole.User, name=username)
        if certificate is not None and certificate in self.trusted_der:
            return User(role=UserRole.User, name="certificate")
        if cfg.allow_anonymous:
            return User(role=UserRole.Anonymous)
        return None


class OpcuaServer:
    """The OPC UA namespace of one daemon. ``start()`` blocks until the server listens (or raises)."""

    def __init__(self, cfg: OpcuaConfig, line: str, camera: str) -> None:
        self.cfg = cfg
        self.prefix = f"{line}.{camera}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._nodes: dict[str, Any] = {}
        self._types: dict[str, Any] = {}
        self.namespace_index: int | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        try:
            import asyncua  # noqa: F401
        except ImportError as e:
            raise RuntimeError("opcua: the python package asyncua is not installed (pip install 'boxinspect[plant]')") from e
        self._thread = threading.Thread(target=self._run, name="opcua", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"opcua: the server did not start within {timeout:g} s")
        if self._error is not None:
            raise RuntimeError(f"opcua: cannot start on {self.cfg.endpoint}: {self._error}") from None
        log.info("OPC UA server on %s (namespace %s = ns %s, objects %s.*; anonymous %s)", self.cfg.endpoint,
                 self.cfg.namespace, self.namespace_index, self.prefix, "allowed" if self.cfg.allow_anonymous else "refused")

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as e:  # reported to start(), or logged if it dies later
            if not self._ready.is_set():
                self._error = e
                self._ready.set()
            else:
                log.exception("OPC UA server stopped with an error")
        finally:
            loop.close()

    async def _serve(self) -> None:
        from asyncua import ua
        from asyncua.crypto import uacrypto
        from asyncua.server.server import Server
        from asyncua.ua.attribute_ids import AttributeIds

        cfg = self.cfg
        trusted = [
            uacrypto.der_from_x509(await uacrypto.load_certificate(str(p)))  # type: ignore[no-untyped-call]
            for p in cfg.trusted_client_certs
        ]
        server = Server(user_manager=_Users(cfg, trusted))  # type: ignore[arg-type]
        await server.init()
        server.set_endpoint(cfg.endpoint)
        server.set_server_name("boxinspect")
        policy = {
            "none": ua.SecurityPolicyType.NoSecurity,
            "Basic256Sha256_Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
            "Basic256Sha256_SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
        }[cfg.security_policy]
        server.set_security_policy([policy])
        tokens: list[type] = []
        if cfg.allow_anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        if cfg.username or cfg.users_file is not None:
            tokens.append(ua.UserNameIdentityToken)
        if cfg.trusted_client_certs:
            tokens.append(ua.X509IdentityToken)
        server.set_identity_tokens(tokens)
        if cfg.certificate is not None and cfg.private_key is not None:
            await server.load_certificate(str(cfg.certificate))
            await server.load_private_key(str(cfg.private_key))
        idx = await server.register_namespace(cfg.namespace)
        self.namespace_index = idx
        root = await server.nodes.objects.add_object(f"ns={idx};s={self.prefix}", f"{idx}:{self.prefix}")
        groups: dict[str, Any] = {}
        for path, (vtype, initial, description) in NODES.items():
            group, name = path.split(".", 1)
            if group not in groups:
                groups[group] = await root.add_object(f"ns={idx};s={self.prefix}.{group}", f"{idx}:{group}")
            vt = getattr(ua.VariantType, vtype)
            if vtype == "DateTime" and initial is None:
                initial = datetime(1970, 1, 1, tzinfo=timezone.utc)
            node = await groups[group].add_variable(f"ns={idx};s={self.prefix}.{path}", f"{idx}:{name}", ua.Variant(initial, vt))
            await node.write_attribute(AttributeIds.Description, ua.DataValue(ua.Variant(ua.LocalizedText(description))))
            self._nodes[path], self._types[path] = node, vt
        self._stop = asyncio.Event()
        async with server:
            self._ready.set()
            await self._stop.wait()

    def stop(self, timeout: float = 5.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # loop already closed
                pass
        if self._thread is not None:
            self._thread.join(timeout)

    # -- updates (any thread) -------------------------------------------------------------------
    def update(self, values: dict[str, Any]) -> Future[None] | None:
        """Write ``{path: value}`` in the given order (later keys after earlier ones). Unknown paths are an error."""
        loop = self._loop
        if loop is None or loop.is_closed() or not self._ready.is_set() or self._error is not None:
            return None
        for path in values:
            if path not in NODES:
                raise KeyError(f"no OPC UA node {path}")
        return asyncio.run_coroutine_threadsafe(self._write(dict(values)), loop)

    async def _write(self, values: dict[str, Any]) -> None:
        from asyncua import ua

        for path, value in values.items():
            vt = self._types[path]
            if vt == ua.VariantType.DateTime and value is None:
                value = datetime(1970, 1, 1, tzinfo=timezone.utc)
            try:
                await self._nodes[path].write_value(ua.DataValue(ua.Variant(value, vt)))
            except Exception as e:  # one bad value must not stop the others
                log.warning("OPC UA: %s not updated to %r: %s", path, value, e)
