"""Operator feedback on MQTT, for the plant historian (``mqtt.publish_feedback``, docs/HISTORIAN.md).

Every answer the operator page stores about a decision (correct, false reject, missed defect, or a label from the
collection queue) goes through the daemon's outbox like a defect event: stored on disk first, published at QoS 1
on ``<base>/feedback`` in seq order with the events, replayable by ``GET /events?since_seq=``. The historian
keeps it in ``operator_feedback``, joined to the decision it answers (view ``decision_feedback``).

The document (docs/EVENTS.md style, one JSON object)::

    {"kind": "false_reject", "decision_id": "<the decision's event_id>", "feedback_id": "<uuid>",
     "label": "ok", "verdict": "defective", "who": "anna", "principal": "anna", "answered_at": "...Z",
     "model_id": "...", "score": 0.91, "threshold": 0.5, "source": "decision", "line": "...", "camera": "...",
     "schema": 2}

Answers about a manual check (an uploaded image, not a decision of the line) are not published. The label is
stored before it is published: an outbox that cannot store (disk full) costs the MQTT copy, never the label.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

from edge.deliver.outbox import Outbox, OutboxError

if TYPE_CHECKING:
    from edge.config import Config
    from edge.deliver.mqtt_sink import MqttSink
    from edge.learn.feedback import FeedbackStore

log = logging.getLogger(__name__)

TOPIC_KIND = "feedback"
_COPIED = ("kind", "label", "verdict", "who", "principal", "model_id", "score", "threshold", "source", "line",
           "camera", "schema")


def feedback_document(record: dict[str, Any]) -> dict[str, Any] | None:
    """The MQTT document of a stored feedback record (edge/learn/feedback.py), or None when it answers no decision."""
    decision_id = record.get("decision_id")
    if not decision_id:
        return None
    doc = {k: record.get(k) for k in _COPIED}
    doc.update(decision_id=str(decision_id), feedback_id=str(uuid.uuid4()), answered_at=record.get("created_at"))
    return doc


class FeedbackPublisher:
    """A FeedbackStore listener: puts each answer about a decision into the outbox on ``topic``."""

    def __init__(self, outbox: Outbox, topic: str) -> None:
        self.outbox = outbox
        self.topic = topic

    def __call__(self, record: dict[str, Any]) -> int | None:
        doc = feedback_document(record)
        if doc is None:
            return None
        try:
            seq = self.outbox.put(self.topic, json.dumps(doc, separators=(",", ":")).encode(), doc["feedback_id"])
        except OutboxError as e:
            log.error("feedback on decision %s saved but not queued for MQTT (%s): the historian will not get it",
                      doc["decision_id"], e)
            return None
        log.info("feedback on decision %s queued for %s (seq %s)", doc["decision_id"], self.topic, seq)
        return seq


def publish_answers(cfg: Config, feedback: FeedbackStore, sink: MqttSink | None) -> FeedbackPublisher | None:
    """Publish ``feedback``'s answers beside ``sink``'s events when ``mqtt.publish_feedback`` is on."""
    if not cfg.mqtt.publish_feedback or sink is None:
        return None
    publisher = FeedbackPublisher(sink.outbox, f"{sink.topic_base}/{TOPIC_KIND}")
    feedback.listeners.append(publisher)
    log.info("operator feedback goes to %s (mqtt.publish_feedback)", publisher.topic)
    return publisher
