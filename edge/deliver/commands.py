"""Reject commands on an MQTT connection of their own: the priority path (issue 24).

A reject command is worth something only before its part reaches the pusher. On the event connection it waited
behind whatever that connection had queued: a replay of the outbox hands up to a page of events to paho at once, and
paho sends QoS 1 messages beyond its in-flight window only as PUBACKs come back, in order. With a broker 100 ms away
a replay of 1,000 events held a reject command for seconds (tests/test_reject_priority.py), and paho's copies are
dropped on every reconnect of the event connection (the outbox is its resend queue; commands are not in it).

``CommandChannel`` is a second paho client (``<client id>-cmd``, the same user, the same ACL: ``topic write
boxinspect/#``) that carries nothing but commands: nothing can queue ahead of one, its network thread and socket
are its own, and no replay, backlog or reconnect of the event connection touches it. No last will (the event
connection owns ``<base>/status``). While it is not connected ``publish`` returns False and the caller falls back to
the event connection (``Plant``): a command late is better than none, and the PLC checks ``deadline_at``.

A command paho has not delivered when the connection drops is not sent again after the reconnect (its part has
usually passed the pusher by then): it is counted in ``boxinspect_reject_commands_unconfirmed_total`` and logged.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from prometheus_client import CollectorRegistry, Counter, Gauge

from edge.deliver.mqtt import CallbackGuard, connect_async, make_client, probe_reason
from edge.runtime.ratelimit import RateLimit

if TYPE_CHECKING:
    from edge.config import MqttConfig

log = logging.getLogger(__name__)

MAX_INFLIGHT = 100  # commands in flight at once (one per part: the line never has this many)
LOG_REPEAT_S = 60.0


class CommandChannel:
    """One MQTT connection for reject/hold commands only. ``publish`` never waits on the event connection."""

    def __init__(self, cfg: MqttConfig, client_id: str, registry: CollectorRegistry | None = None) -> None:
        self.cfg = cfg
        self.client_id = client_id
        self.broker = f"{cfg.host}:{cfg.port}"
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._unacked: set[int] = set()  # mids handed to paho, not yet acknowledged
        self._early: set[int] = set()  # mids acknowledged before publish() had recorded them
        self._log = RateLimit(LOG_REPEAT_S)
        self.connected_gauge = Gauge("boxinspect_reject_mqtt_connected",
                                     "1 while the reject commands' own MQTT connection is up", registry=registry)
        self.unconfirmed = Counter("boxinspect_reject_commands_unconfirmed",
                                   "Reject commands handed to the command connection but not acknowledged when it "
                                   "dropped (not sent again)", registry=registry)
        self._guard = CallbackGuard()
        self._client, self._ssl = make_client(cfg, client_id, max_inflight=MAX_INFLIGHT)
        g = self._guard.wrap
        self._client.on_connect = g("cmd_on_connect", self._on_connect)
        self._client.on_connect_fail = g("cmd_on_connect_fail", self._on_connect_fail)
        self._client.on_disconnect = g("cmd_on_disconnect", self._on_disconnect)
        self._client.on_publish = g("cmd_on_publish", self._on_publish)
        self._started = False

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        if not self._started:
            self._started = True
            connect_async(self._client, self.cfg)
            log.info("reject commands: own MQTT connection to %s as %s", self.broker, self.client_id)

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Hand one command to this connection. False while it is not connected (the caller falls back)."""
        if not self._connected.is_set():
            return False
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        if qos > 0:
            with self._lock:  # the PUBACK may have come before publish() returned
                if info.mid in self._early:
                    self._early.discard(info.mid)
                else:
                    self._unacked.add(info.mid)
        return True

    def stop(self, timeout: float = 2.0) -> None:
        if not self._started:
            return
        self._started = False
        self._connected.clear()
        self.connected_gauge.set(0)
        self._client.disconnect()
        stopper = threading.Thread(target=self._client.loop_stop, name="mqtt-cmd-loop-stop", daemon=True)
        stopper.start()
        stopper.join(max(0.1, timeout))

    # -- paho callbacks (network thread) ----------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            if self._log.check(f"refused:{reason_code}")[0]:
                log.error("reject commands: broker %s refused the command connection: %s (check mqtt.username, "
                          "the ACL and a client id %s-free); commands go on the event connection meanwhile",
                          self.broker, reason_code, self.client_id)
            return
        client.drop_out_messages()  # a command from before the outage is not sent again: its part has passed
        self._connected.set()
        self.connected_gauge.set(1)
        log.info("reject commands: connected to %s (own connection)", self.broker)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if self._log.check("connect_fail")[0]:
            log.warning("reject commands: cannot connect to %s: %s; commands go on the event connection meanwhile",
                        self.broker, probe_reason(self.cfg.host, self.cfg.port, self._ssl))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        self.connected_gauge.set(0)
        with self._lock:
            lost, self._unacked, self._early = len(self._unacked), set(), set()
        if lost:
            self.unconfirmed.inc(lost)
        if was and self._started and self._log.check(f"down:{reason_code}")[0]:
            log.warning("reject commands: own connection to %s lost (%s)%s; reconnecting, commands go on the event "
                        "connection meanwhile", self.broker, reason_code,
                        f", {lost} command(s) not acknowledged" if lost else "")

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._lock:
            if mid in self._unacked:
                self._unacked.discard(mid)
            else:
                self._early.add(mid)
        if getattr(reason_code, "is_failure", False) and self._log.check(f"puback:{reason_code}")[0]:
            log.error("reject command refused by the broker: %s (check the ACL for the reject topic)", reason_code)
