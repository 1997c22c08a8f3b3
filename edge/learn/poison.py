"""Poisoning made visible before promote (issue 24, item 4).

On 548d7c7 an anonymous script labelled good boxes "defective"; retrain reported CV 1.000 on those labels while
the candidate scored 0 on live boxes, and the page offered one-click promote. Now (besides labels needing the
operate role, edge/api/access.py, and carrying who gave them and from where, edge/learn/feedback.py):

- ``label_audit``: how many labels disagree with the live model's verdict at the time, per source (a person, a
  principal, a client address). Retrain's report carries it, next to its cross-validation.
- ``candidate_review``: the candidate's judgement on the recent live parts (the shadow statistics: every part
  decided since it was loaded) next to its CV, and a warning when it disagrees with the live model on more than
  ``shadow.confirm_above`` of them (at least ``shadow.confirm_min_parts`` judged).
- ``check_promote``: promote is refused (409) while that warning stands, unless the request says
  ``"confirm": true``; the confirmation is logged with who gave it.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TOP_SOURCES = 5


def _source(rec: dict[str, Any]) -> str:
    return f"{rec.get('who') or '-'} ({rec.get('principal') or '-'} from {rec.get('from') or '-'})"


def label_audit(feedback_dir: Path) -> dict[str, Any]:
    """Labels in ``feedback_dir`` (``<class>/<id>.json``): how many, how many disagree with the live verdict they
    answered, and the sources giving most of the disagreeing ones."""
    total, disagree = 0, 0
    by: Counter[str] = Counter()
    root = Path(feedback_dir)
    if root.is_dir():
        for rec_path in root.glob("[!.]*/*.json"):
            try:
                rec = json.loads(rec_path.read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(rec, dict):
                continue
            total += 1
            verdict, label = rec.get("verdict"), rec.get("label") or rec_path.parent.name
            if verdict is not None and verdict != label:
                disagree += 1
                by[_source(rec)] += 1
    return {"labels": total, "disagree_with_live": disagree,
            "disagree_share": round(disagree / total, 4) if total else None,
            "disagreeing_sources": dict(by.most_common(TOP_SOURCES))}


_AUDITS: dict[Path, tuple[float, dict[str, Any]]] = {}
AUDIT_TTL_S = 30.0


def cached_label_audit(feedback_dir: Path) -> dict[str, Any]:
    """``label_audit`` at most every AUDIT_TTL_S per folder (the page polls the card)."""
    now = time.monotonic()
    hit = _AUDITS.get(Path(feedback_dir))
    if hit is not None and now - hit[0] < AUDIT_TTL_S:
        return hit[1]
    audit = label_audit(feedback_dir)
    _AUDITS[Path(feedback_dir)] = (now, audit)
    return audit


def candidate_review(doc: dict[str, Any], cfg: Any) -> dict[str, Any] | None:
    """For the candidate card: its CV, its judgement on the recent live parts, and the warning (None: no candidate)."""
    cand = doc.get("candidate")
    if not cand:
        return None
    sh = doc.get("shadow") or {}
    judged, disagreed = int(sh.get("judged") or 0), int(sh.get("disagreed") or 0)
    share = disagreed / judged if judged else None
    limit, least = cfg.shadow.confirm_above, cfg.shadow.confirm_min_parts
    warn = share is not None and judged >= least and share > limit
    out: dict[str, Any] = {
        "cv": (cand.get("metrics") or {}),
        "recent_parts": {"judged": judged, "disagree_with_live": disagreed,
                         "disagree_share": round(share, 4) if share is not None else None},
        "label_audit": cached_label_audit(Path(cfg.operator.feedback_dir)),
        "label_audit_at_retrain": ((cand.get("retrain") or {}).get("label_audit")),
        "needs_confirmation": bool(warn),
        "warning": None,
    }
    if warn:
        out["warning"] = (
            f"the candidate disagrees with the live model on {disagreed} of the last {judged} parts "
            f"({share:.0%} > shadow.confirm_above {limit:.0%}): its labels may be wrong or poisoned; review them "
            "(GET /ui/labels) before promoting, or confirm")
    return out


def check_promote(doc: dict[str, Any], cfg: Any, confirm: bool, who: str | None) -> None:
    """Raise PromoteNeedsConfirmation while the review warns and ``confirm`` is not given; log a confirmation."""
    review = candidate_review(doc, cfg)
    if review is None or not review["needs_confirmation"]:
        return
    if not confirm:
        raise PromoteNeedsConfirmation(review["warning"] + ' (send {"confirm": true})')
    log.warning("promote confirmed by %s despite the warning: %s", who or "an unnamed user", review["warning"])


class PromoteNeedsConfirmation(ValueError):
    """The API answers 409 with this sentence."""
