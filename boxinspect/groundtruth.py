"""Score daemon events against a synthetic video's ground truth (used by the demo and the end-to-end tests)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Match:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    matched: list[tuple[int, str]] = field(default_factory=list)  # (gt box id, event id)
    unmatched_events: list[str] = field(default_factory=list)
    missed_boxes: list[int] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def match_events(events: list[dict], gt: dict) -> Match:
    """Match defect events to defective ground-truth boxes by frame overlap, one event per box.

    An event matches a defective box when its [first_frame, last_frame] overlaps the box's
    [enter_frame, exit_frame]. A second event for the same box counts as a false positive,
    so one-event-per-box is checked too.
    """
    m = Match()
    boxes = [b for b in gt["boxes"] if b["defective"]]
    used: set[int] = set()
    for ev in events:
        f0, f1 = ev.get("first_frame"), ev.get("last_frame")
        hit = None
        if f0 is not None and f1 is not None:
            for b in boxes:
                if b["id"] not in used and f0 <= b["exit_frame"] and f1 >= b["enter_frame"]:
                    hit = b
                    break
        if hit is None:
            m.fp += 1
            m.unmatched_events.append(ev.get("event_id", "?"))
        else:
            used.add(hit["id"])
            m.tp += 1
            m.matched.append((hit["id"], ev.get("event_id", "?")))
    m.missed_boxes = [b["id"] for b in boxes if b["id"] not in used]
    m.fn = len(m.missed_boxes)
    return m
