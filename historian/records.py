"""MQTT messages -> typed rows. One function, ``parse``, decides what a message is by its topic's last level.

``<base>/<line>/<camera>/defect|ok|result`` -> Decision, ``.../lost`` -> LostNotice, ``.../model`` ->
ModelChange, ``.../alarm`` -> Alarm, ``.../feedback`` -> Feedback. Anything that cannot be read raises
BadMessage (the consumer keeps it in ``rejected_messages`` and acknowledges it, so one bad message never
blocks the queue).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

DECISION_TOPICS = ("defect", "ok", "result")
# Event fields stored in their own columns; everything else of the event goes to `extra` (jsonb).
_COLUMNS = (
    "event_id", "decided_at", "line", "camera", "part_id", "lot", "seq", "kind", "label", "is_defect", "action",
    "reason", "score", "max_score", "mean_score", "frame_count", "first_frame", "last_frame", "threshold",
    "model_id", "captured_at", "deadline_at", "slack_ms", "late", "mode", "fusion", "published_at",
)
_DROPPED = {"schema_version", "evidence", "views", "topic"}


class BadMessage(ValueError):
    """A message the historian cannot store as a row (the reason is the message)."""


def _time(v: Any, what: str, required: bool = True) -> datetime | None:
    if v is None and not required:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):  # unix time (the model document's loaded_at)
        return datetime.fromtimestamp(float(v), tz=timezone.utc)
    if not isinstance(v, str):
        raise BadMessage(f"{what} is not an ISO 8601 time: {v!r}")
    try:
        t = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise BadMessage(f"{what} is not an ISO 8601 time: {v!r}") from None
    if t.tzinfo is None:
        raise BadMessage(f"{what} has no time zone: {v!r}")
    return t


@dataclass
class View:
    view: str
    score: float | None
    no_box: bool
    frame_count: int | None
    first_frame: int | None
    last_frame: int | None
    evidence_path: str | None


@dataclass
class Decision:
    row: dict[str, Any]  # column -> value, for the decisions table
    views: list[View] = field(default_factory=list)
    crop_path: str | None = None  # the crop's path on the daemon (evidence.crop)

    @property
    def event_id(self) -> str:
        return str(self.row["event_id"])

    @property
    def source(self) -> tuple[str, str]:
        return str(self.row["line"]), str(self.row["camera"])

    @property
    def seq(self) -> int | None:
        s = self.row.get("seq")
        return int(s) if s is not None else None


@dataclass
class LostNotice:
    line: str
    camera: str
    first_seq: int
    last_seq: int
    notice_seq: int | None
    event_id: str
    reason: str
    doc: dict[str, Any]


@dataclass
class ModelChange:
    line: str
    camera: str
    model_id: str
    loaded_at: datetime
    threshold: float | None
    previous_model_id: str | None
    action: str | None
    who: str | None
    doc: dict[str, Any]


@dataclass
class Alarm:
    line: str
    camera: str
    changed_at: datetime
    active: bool
    rules: list[str]
    reason: str | None
    defect_rate_pct: float | None
    doc: dict[str, Any]


@dataclass
class Feedback:
    line: str
    camera: str
    event_id: str
    answered_at: datetime
    kind: str
    who: str | None
    label: str | None
    doc: dict[str, Any]
    seq: int | None = None  # its place in the daemon's outbox (mqtt.publish_feedback)
    feedback_id: str | None = None
    model_id: str | None = None
    verdict: str | None = None  # what the model said


Record = Decision | LostNotice | ModelChange | Alarm | Feedback


def _doc(payload: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError) as e:
        raise BadMessage(f"not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise BadMessage(f"not a JSON object: {type(doc).__name__}")
    return doc


def topic_source(topic: str) -> tuple[str, str, str]:
    """``<base>/<line>/<camera>/<kind>`` -> (line, camera, kind)."""
    parts = topic.split("/")
    if len(parts) < 4:
        raise BadMessage(f"topic {topic!r} is not <base>/<line>/<camera>/<kind>")
    return parts[-3], parts[-2], parts[-1]


def parse(topic: str, payload: bytes) -> Record:
    line, camera, kind = topic_source(topic)
    doc = _doc(payload)
    if kind in DECISION_TOPICS:
        return decision(doc)
    if kind == "lost":
        return _lost(doc, line, camera)
    if kind == "model":
        return _model(doc, line, camera)
    if kind == "alarm":
        return _alarm(doc, line, camera)
    if kind == "feedback":
        return _feedback(doc, line, camera)
    raise BadMessage(f"topic {topic!r}: the historian does not store .../{kind}")


def decision(ev: dict[str, Any]) -> Decision:
    """A decision event (docs/EVENTS.md) as a row. Checks what the table needs; the rest is kept as is."""
    for k in ("event_id", "decided_at", "line", "camera", "label", "is_defect", "model_id"):
        if ev.get(k) is None:
            raise BadMessage(f"decision event without {k}")
    try:
        eid = str(uuid.UUID(str(ev["event_id"])))
    except ValueError:
        raise BadMessage(f"event_id is not a UUID: {ev['event_id']!r}") from None
    row = {k: ev.get(k) for k in _COLUMNS}
    row["event_id"] = eid
    row["kind"] = ev.get("kind") or "model"
    row["is_defect"] = bool(ev["is_defect"])
    row["decided_at"] = _time(ev["decided_at"], "decided_at")
    for k in ("captured_at", "deadline_at", "published_at"):
        row[k] = _time(ev.get(k), k, required=False)
    if row["seq"] is not None and (not isinstance(row["seq"], int) or isinstance(row["seq"], bool)):
        raise BadMessage(f"seq is not an integer: {row['seq']!r}")
    for k in ("part_id", "lot"):
        if row[k] is not None:
            row[k] = str(row[k])
    extra = {k: v for k, v in ev.items() if k not in _COLUMNS and k not in _DROPPED}
    row["extra"] = json.dumps(extra) if extra else None
    evidence: dict[str, Any] = ev["evidence"] if isinstance(ev.get("evidence"), dict) else {}
    row["evidence_path"] = evidence.get("crop") or evidence.get("frame")
    views = [
        View(str(name), v.get("score"), bool(v.get("no_box")), v.get("frame_count"), v.get("first_frame"),
             v.get("last_frame"), (v.get("evidence") or {}).get("crop") if isinstance(v.get("evidence"), dict) else None)
        for name, v in (ev.get("views") or {}).items() if isinstance(v, dict)
    ]
    return Decision(row, views, evidence.get("crop"))


def _lost(doc: dict[str, Any], line: str, camera: str) -> LostNotice:
    try:
        first, last = int(doc["first_seq"]), int(doc["last_seq"])
    except (KeyError, TypeError, ValueError):
        raise BadMessage("lost notice without first_seq/last_seq") from None
    seq = doc.get("seq")
    return LostNotice(line, camera, first, last, int(seq) if isinstance(seq, int) else None,
                      str(doc.get("event_id") or ""), str(doc.get("reason") or "lost"), doc)


def _model(doc: dict[str, Any], line: str, camera: str) -> ModelChange:
    if not doc.get("model_id"):
        raise BadMessage("model document without model_id")
    change: dict[str, Any] = doc["change"] if isinstance(doc.get("change"), dict) else {}
    loaded = _time(doc.get("loaded_at") or change.get("at"), "loaded_at")
    assert loaded is not None
    thr = doc.get("threshold")
    return ModelChange(line, camera, str(doc["model_id"]), loaded, float(thr) if isinstance(thr, (int, float)) else None,
                       doc.get("previous_model_id"), change.get("action"), change.get("who"), doc)


def _alarm(doc: dict[str, Any], line: str, camera: str) -> Alarm:
    changed = _time(doc.get("changed_at"), "changed_at")
    assert changed is not None
    rate = doc.get("defect_rate_pct")
    return Alarm(line, camera, changed, bool(doc.get("active")), [str(r) for r in doc.get("rules") or []],
                 doc.get("reason"), float(rate) if isinstance(rate, (int, float)) else None, doc)


def _feedback(doc: dict[str, Any], line: str, camera: str) -> Feedback:
    """An operator's answer about a decision (edge/feedback_mqtt.py)."""
    eid = doc.get("event_id") or doc.get("decision_id")
    if not eid or not doc.get("kind"):
        raise BadMessage("feedback without event_id and kind")
    try:
        eid = str(uuid.UUID(str(eid)))
    except ValueError:
        raise BadMessage(f"feedback: the decision id is not a UUID: {eid!r}") from None
    answered = _time(doc.get("answered_at") or doc.get("at"), "answered_at")
    assert answered is not None
    seq = doc.get("seq")
    if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool)):
        raise BadMessage(f"seq is not an integer: {seq!r}")
    text = {k: (str(doc[k]) if doc.get(k) is not None else None) for k in ("who", "label", "feedback_id", "model_id",
                                                                          "verdict")}
    return Feedback(line, camera, eid, answered, str(doc["kind"]), doc=doc, seq=seq, **text)
