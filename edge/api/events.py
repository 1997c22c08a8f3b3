"""``GET /events``: recent decisions; with ``since_seq`` a paged, rate-limited replay of the outbox (engineer role)."""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response

from edge.api.access import Access, app_access, principal
from edge.api.deps import VIEW, State
from edge.config import Config
from edge.deliver.replay import ReplayReader
from edge.runtime.principal import Principal, Role
from edge.runtime.ratelimit import TokenBucket
from edge.state import EVENTS_MAX

router = APIRouter(tags=["status"])


@dataclass
class Replays:
    """One app's replay budget and outbox reader (issue 24: paged, rate-limited, read beside the writer)."""

    limit: TokenBucket
    reader: ReplayReader

    @classmethod
    def of(cls, cfg: Config) -> Replays:
        return cls(TokenBucket(cfg.api.replays_per_minute), ReplayReader(cfg.mqtt.outbox_path))


def replays(request: Request) -> Replays:
    """FastAPI dependency: made at the app's first replay, kept on ``app.state``."""
    found = getattr(request.app.state, "replays", None)
    if not isinstance(found, Replays):
        with _lock:
            found = getattr(request.app.state, "replays", None)
            if not isinstance(found, Replays):
                found = Replays.of(request.app.state.boxinspect.config)
                request.app.state.replays = found
    return found


_lock = threading.Lock()


@router.get(
    "/events",
    summary="Recent decisions, newest first; with since_seq: replay of the outbox",
    dependencies=VIEW,
)
def events(
    state: State,
    replay: Annotated[Replays, Depends(replays)],
    access: Annotated[Access, Depends(app_access)],
    response: Response,
    limit: int = Query(50, ge=1, le=EVENTS_MAX, description=f"how many (1..{EVENTS_MAX})"),
    since_seq: int | None = Query(
        None, ge=0, le=2**62,
        description="replay: re-publish every event still in the outbox with seq > since_seq (original event_id "
        "and seq, oldest first, at most api.replay_page_max: X-Next-Since-Seq names the next page) and return them "
        "(docs/EVENTS.md)",
    ),
    who: Principal = Depends(principal),
) -> list[dict[str, Any]]:
    cfg = state.config
    if since_seq is None:
        return state.events.latest(limit)
    access.demand(who, Role.ENGINEER)  # a replay re-publishes history: not a view
    if getattr(state.sink, "replay", None) is None:
        raise HTTPException(404, "no outbox: replay needs the MQTT sink")
    wait = replay.limit.take()  # issue 24: paged, rate-limited, read beside the writer (edge/runtime/ratelimit.py)
    if wait > 0:
        raise HTTPException(429, f"too many replays: at most {cfg.api.replays_per_minute} a minute "
                            "(api.replays_per_minute)", {"Retry-After": str(max(1, round(wait)))})
    page = cfg.api.replay_page_max
    try:
        rows = replay.reader.since(since_seq, page)
    except sqlite3.Error as e:
        raise HTTPException(503, f"replay failed: cannot read the outbox: {e}") from None
    republish = getattr(state.sink, "republish", None)
    if republish is not None:
        republish(rows)
    if len(rows) == page:
        response.headers["X-Next-Since-Seq"] = str(rows[-1].seq)
    out: list[dict[str, Any]] = []
    for row in rows:
        try:
            doc = json.loads(row.payload)
        except ValueError:
            continue
        if isinstance(doc, dict):
            doc["seq"] = row.seq
            doc["topic"] = row.topic
            out.append(doc)
    return out
