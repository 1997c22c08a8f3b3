"""Plant integration, the one object the daemon talks to: deadlines and fail-safe (edge/judge/deadline.py), reject
outputs (edge/deliver/reject.py), the OPC UA server (edge/deliver/opcua.py), Home Assistant discovery
(edge/deliver/homeassistant.py) and the SPC alarm (edge/judge/spc.py). Everything but the deadline bookkeeping is off by
default. See docs/INTEGRATION.md.

The daemon calls, in this order of a part's life:

- ``on_trigger(part_id, at)`` -> the part id to give the decider (one is made up if the trigger had none);
  ``trigger_refused(part_id, reason)`` if the decider refused it (the part then gets its timeout decision);
- ``before_publish(decision, exit_at)`` before a decision is published: stamps deadline, slack and action;
  False means the part already got a timeout decision and this one must not be published;
- ``command(event)`` right after the decision is stamped, before its evidence and outbox write: the reject command
  (on its own MQTT connection, edge/deliver/commands.py) and pulse;
- ``after_publish(event)`` after it was published: SPC, OPC UA;
- ``tick()`` from its loop: (re)announces Home Assistant discovery and the alarm state after each connect,
  refreshes the OPC UA status nodes;
- ``stop()`` at shutdown, before the MQTT sink stops: parts still waiting get their timeout decisions.

Timeout decisions reach the daemon through ``emit`` (from the deadline watchdog thread).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge.deliver.commands import CommandChannel
from edge.deliver.homeassistant import publish_discovery
from edge.deliver.mqtt_sink import MqttSink
from edge.deliver.reject import GpiodPulse, RejectOutput
from edge.judge.deadline import DeadlineTracker, TriggerGate
from edge.judge.decision import Decision
from edge.judge.spc import AlarmState, SpcMonitor

if TYPE_CHECKING:
    from edge.config import Config
    from edge.deliver.opcua import OpcuaServer
    from edge.runtime.metrics import Metrics
    from edge.state import EventSink

log = logging.getLogger(__name__)

STATUS_REFRESH_S = 1.0
RATE_WINDOW = 100  # decisions in the defect rate of the stats (Home Assistant's "defect rate")


class Plant:
    def __init__(
        self,
        cfg: Config,
        metrics: Metrics,
        emit: Callable[[Decision], None],
        context: Callable[[], tuple[tuple[str, str], float, str]],
        cancel: Callable[[str], Any] | None = None,
        status: Callable[[], dict[str, Any]] | None = None,
        version: str = "",
    ) -> None:
        self.cfg = cfg
        self.version = version
        self.status = status
        self.tracker = DeadlineTracker(cfg.reject, emit, context, cancel, registry=metrics.registry)
        self.spc = SpcMonitor(cfg.spc, registry=metrics.registry) if cfg.spc.enabled else None
        self.registry = metrics.registry
        self.sink: EventSink | None = None
        self.reject: RejectOutput | None = None
        self.opcua: OpcuaServer | None = None
        self.commands: CommandChannel | None = None
        self._announced = False
        self._status_at = 0.0
        self._recent: deque[bool] = deque(maxlen=RATE_WINDOW)
        self.last: dict[str, Any] | None = None
        self.counts = {"decisions": 0, "defects": 0, "timeouts": 0, "late": 0, "rejects": 0}
        self.alarm_topic = f"{cfg.topic_base}/alarm"
        self.trigger_gate = TriggerGate(cfg.decision.trigger_min_gap_ms / 1000.0, metrics.registry,
                                        cfg.decision.trigger_burst)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, sink: EventSink | None) -> None:
        cfg = self.cfg
        self.sink = sink
        publish: Callable[[str, bytes, int, bool], bool] | None = (
            sink.publish if (sink is not None and cfg.mqtt.enabled) else None)
        if publish is not None and cfg.reject.mqtt and cfg.reject.mqtt_own_connection and isinstance(sink, MqttSink):
            self.commands = CommandChannel(cfg.mqtt, f"{sink.client_id}-cmd", self.registry)
            self.commands.start()
            publish = self._publish_command
        pulse = GpiodPulse(cfg.reject.gpio) if cfg.reject.gpio.enabled else None
        if cfg.opcua.enabled:
            from edge.deliver.opcua import OpcuaServer

            self.opcua = OpcuaServer(cfg.opcua, cfg.line, cfg.camera)
            self.opcua.start()
        self.reject = RejectOutput(
            cfg.reject, cfg.reject.topic or f"{cfg.topic_base}/reject", publish, pulse, self.registry,
            on_pulse=self._on_pulse if self.opcua is not None else None,
        )
        if cfg.reject.mqtt and publish is None:
            log.warning("reject.mqtt is on but MQTT is disabled: no reject commands will be sent")
        self.tracker.start()
        self.tick(force=True)

    def stop(self) -> None:
        self.tracker.stop()  # pending parts get their timeout decisions through the daemon, now
        if self.reject is not None:
            self.reject.close()
        if self.commands is not None:
            self.commands.stop()
        if self.opcua is not None:
            self.opcua.stop()

    # -- a part's life --------------------------------------------------------------------------
    def on_trigger(self, part_id: str | None, at: float) -> str:
        pid = part_id if part_id else self.tracker.new_part_id()
        self.tracker.register(pid, at)
        return pid

    def admit_trigger(self, at: float) -> bool:
        """Issue 24: a trigger closer than ``decision.trigger_min_gap_ms`` to the last accepted one is dropped and
        counted, not made into a part (10,000 triggers in 2 s made 6,330 timeout rejects on 548d7c7)."""
        return self.trigger_gate.admit(at)

    def passage_opened(self, at: float) -> str:
        return self.tracker.open_passage(at)

    def passage_discarded(self, part_id: str) -> None:
        self.tracker.forget(part_id)

    def trigger_refused(self, part_id: str, reason: str) -> None:
        self.tracker.refuse(part_id, reason)

    def before_publish(self, decision: Decision, exit_at: float | None = None) -> bool:
        if decision.kind == "timeout":
            return True  # stamped by the tracker
        return self.tracker.resolve(decision, exit_at)

    def command(self, event: dict[str, Any]) -> None:
        """The reject command and pulse of a stamped decision, first (issue 24): before its evidence JPEGs and its
        outbox write, on the command connection, so neither a slow disk nor the event connection delays it."""
        if self.reject is not None:
            self.reject.handle(event)

    def after_publish(self, event: dict[str, Any]) -> None:
        c = self.counts
        c["decisions"] += 1
        c["defects"] += bool(event.get("is_defect"))
        c["timeouts"] += event.get("kind") == "timeout"
        c["late"] += bool(event.get("late"))
        c["rejects"] += event.get("action") == "reject"
        self.last = event
        if event.get("kind") != "timeout":
            self._recent.append(bool(event.get("is_defect")))
        if self.spc is not None and event.get("kind") != "timeout":
            changed = self.spc.update(bool(event.get("is_defect")))
            if changed is not None:
                self._publish_alarm(changed)
        if self.opcua is not None:
            self.opcua.update(self._decision_nodes(event))

    # -- periodic -------------------------------------------------------------------------------
    def tick(self, force: bool = False, frame_seen: bool = True) -> None:
        self.tracker.heartbeat(frame_seen)  # open passages' deadlines move only while frames arrive
        sink = self.sink
        connected = bool(sink is not None and self.cfg.mqtt.enabled and sink.connected)
        if connected and not self._announced:
            self._announced = True
            if self.cfg.homeassistant.enabled:
                publish_discovery(self.cfg, self._publish, self.version)
            if self.spc is not None:
                self._publish_alarm(self.spc.state)
        elif not connected:
            self._announced = False
        now = time.monotonic()
        if self.opcua is not None and self.status is not None and (force or now - self._status_at >= STATUS_REFRESH_S):
            self._status_at = now
            try:
                s = self.status()
                self.opcua.update({
                    "Model.ModelId": str(s.get("model_id") or ""),
                    "Model.SelfTestOk": bool(s.get("self_test_ok")),
                    "Camera.State": str(s.get("camera_state") or ""),
                    "Outbox.Depth": int(s.get("outbox_depth") or 0),
                })
            except Exception as e:
                log.warning("OPC UA status not updated: %s", e)

    def stats(self) -> dict[str, Any]:
        last = self.last or {}
        rate = 100.0 * sum(self._recent) / len(self._recent) if self._recent else None
        return {
            "defect_rate_pct": None if rate is None else round(rate, 2),
            "last_label": last.get("label"),
            "last_score": last.get("score"),
            "last_part_id": last.get("part_id"),
            "deadline": self.tracker.stats(),
            "spc_alarm": bool(self.spc is not None and self.spc.state.active),
            "spc": None if self.spc is None else {
                "active": self.spc.state.active, "rules": list(self.spc.state.rules), "reason": self.spc.state.reason,
            },
        }

    # -- helpers --------------------------------------------------------------------------------
    def _publish_command(self, topic: str, payload: bytes, qos: int, retain: bool) -> bool:
        """On the command connection; while it is down, on the event connection (late beats never)."""
        if self.commands is not None and self.commands.publish(topic, payload, qos, retain):
            return True
        return self._publish(topic, payload, qos, retain)

    def _publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> bool:
        return self.sink is not None and self.sink.publish(topic, payload, qos, retain)

    def _publish_alarm(self, state: AlarmState) -> None:
        msg = state.to_message(self.cfg.line, self.cfg.camera)
        if not self._publish(self.alarm_topic, json.dumps(msg, separators=(",", ":")).encode(), 1, True):
            log.warning("SPC alarm state (%s) not published: MQTT not connected; sent again after the next connect",
                        "active" if state.active else "clear")
            self._announced = False
        if self.opcua is not None:
            self.opcua.update({"Spc.Alarm": state.active})

    def _on_pulse(self, active: bool) -> None:
        if self.opcua is not None:
            self.opcua.update({"Reject.Pulse": active})

    def _decision_nodes(self, event: dict[str, Any]) -> dict[str, Any]:
        from datetime import datetime

        def when(iso: str | None) -> datetime | None:
            return None if not iso else datetime.fromisoformat(iso.replace("Z", "+00:00"))

        c = self.counts
        score = event.get("score")
        return {
            "LastDecision.PartId": str(event.get("part_id") or ""),
            "LastDecision.EventId": str(event.get("event_id") or ""),
            "LastDecision.Verdict": str(event.get("label") or ""),
            "LastDecision.Action": str(event.get("action") or ""),
            "LastDecision.Kind": str(event.get("kind") or ""),
            "LastDecision.IsDefect": bool(event.get("is_defect")),
            "LastDecision.Score": float(score) if score is not None else -1.0,
            "LastDecision.Threshold": float(event.get("threshold") or 0.0),
            "LastDecision.Time": when(event.get("decided_at")),
            "LastDecision.DeadlineTime": when(event.get("deadline_at")),
            "LastDecision.SlackMs": float(event.get("slack_ms") or 0.0),
            "LastDecision.Late": bool(event.get("late")),
            "Counters.Decisions": c["decisions"],
            "Counters.Defects": c["defects"],
            "Counters.Timeouts": c["timeouts"],
            "Counters.Late": c["late"],
            "Reject.Count": c["rejects"],
            "LastDecision.Sequence": c["decisions"],  # last: a client watching it sees a complete decision
        }
