"""Timestamps as they appear in events: ISO 8601 UTC with milliseconds and a ``Z``."""

from __future__ import annotations

from datetime import datetime, timezone


def iso_utc(ts: float | None = None) -> str:
    """``2026-11-26T10:15:30.123Z`` for a ``time.time()`` value (now if None)."""
    dt = datetime.now(timezone.utc) if ts is None else datetime.fromtimestamp(ts, timezone.utc)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")
