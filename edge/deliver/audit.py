"""The audit trail (issue 26): every change made through the API (feedback, reload, retrain, promote, roll back,
lot reset, acknowledge) with who, when, what, before and after, in three places:

- the log: one line ``AUDIT <action> by <who> ...`` (edge/runtime/logs.py formats it like every other line);
- the station records (edge/deliver/station.py ``audit`` table, bounded by ``station.audit_keep``), which the
  history page shows (``GET /ui/audit``, edge/api/history.py);
- MQTT: ``<base>/audit``, QoS 1, retained (the latest change; a subscriber that connects later still sees it).

``who`` is the caller's principal (edge/runtime/principal.py): a named user (edge/api/users.py), ``token`` for the
shared API token, ``anonymous`` where an action is open (``api.reload_without_token``). Never null.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from edge.deliver.station import StationStore
from edge.runtime.principal import current_principal
from edge.runtime.timeutil import iso_utc

log = logging.getLogger(__name__)


class Publishes(Protocol):
    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool: ...


def who_is_asking() -> tuple[str, str | None]:
    """The current request's principal name (``anonymous`` outside a request) and client address."""
    who = current_principal.get()
    return (who.name, who.source or None) if who is not None else ("anonymous", None)


class Audit:
    """Record a change (see the module docstring). ``sink``: where ``<base>/audit`` is published (may be None)."""

    def __init__(self, store: StationStore | None, sink: Publishes | None, topic: str) -> None:
        self.store, self.sink, self.topic = store, sink, topic

    def record(self, action: str, what: str, before: Any = None, after: Any = None,
               who: str | None = None) -> dict[str, Any]:
        name, source = who_is_asking()
        entry: dict[str, Any] = {"at": iso_utc(), "who": who or name, "source": source, "action": action,
                                 "what": what, "before": before, "after": after}
        log.info("AUDIT %s by %s: %s; before=%s after=%s", action, entry["who"], what,
                 json.dumps(before, default=str), json.dumps(after, default=str),
                 extra={"audit": entry})
        if self.store is not None:
            try:
                entry["id"] = self.store.add_audit(entry)
            except Exception as e:  # the log line above holds it; the action itself is done
                log.error("audit entry not stored: %s", e)
        if self.sink is not None:
            try:
                self.sink.publish(self.topic, json.dumps(entry, default=str).encode(), qos=1, retain=True)
            except Exception as e:
                log.warning("audit entry not published on %s: %s", self.topic, e)
        return entry
