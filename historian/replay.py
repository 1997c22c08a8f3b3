"""A daemon's replay over HTTP: ``GET <url>/events?since_seq=N`` with its API token (docs/EVENTS.md).

The daemon re-publishes the events on MQTT and returns them; the historian stores what it returns directly
(the re-published copies then arrive as duplicates and are ignored), so a replay works even while the broker
is away. Two answer shapes are read: a JSON list of events (each with ``seq`` and ``topic``), and a page
object (``{"events"|"items": [...], "next_since_seq"|"next": N}``) with paging, which is followed.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

MAX_PAGES = 50  # per request for one gap: at most 50 pages (50,000 events with the daemon's 1000 a page)


class ReplayError(RuntimeError):
    """The daemon's replay did not answer usefully (the message says why: unreachable, 401, ...)."""


@dataclass
class Page:
    events: list[dict[str, Any]]
    next_since: int | None  # where the next page starts, when the daemon says so


def _parse(body: Any) -> Page:
    if isinstance(body, list):
        return Page([e for e in body if isinstance(e, dict)], None)
    if isinstance(body, dict):
        events = body.get("events", body.get("items", body.get("data")))
        if isinstance(events, list):
            nxt = body.get("next_since_seq", body.get("next"))
            if isinstance(nxt, dict):  # a link object
                nxt = nxt.get("since_seq")
            return Page([e for e in events if isinstance(e, dict)], int(nxt) if isinstance(nxt, int) else None)
    raise ReplayError(f"unexpected replay answer: {str(body)[:200]}")


def fetch_page(url: str, token: str | None, since_seq: int, timeout: float) -> Page:
    q = urllib.parse.urlencode({"since_seq": since_seq})
    req = urllib.request.Request(f"{url.rstrip('/')}/events?{q}", headers={"Accept": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        hint = " (check daemons[].token against the daemon's api.token)" if e.code in (401, 403) else ""
        raise ReplayError(f"{url}: replay answered HTTP {e.code}{hint}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ReplayError(f"{url}: replay failed: {getattr(e, 'reason', e)}") from None
    return _parse(body)


def replay_range(url: str, token: str | None, since_seq: int, upto: int | None, timeout: float,
                 max_pages: int = MAX_PAGES) -> tuple[list[dict[str, Any]], bool]:
    """Events with seq > since_seq, page by page until ``upto`` is passed (None: one page). Returns the events
    and whether the daemon's outbox was read past ``upto`` (so a seq up to it that is absent is not there)."""
    out: list[dict[str, Any]] = []
    since = since_seq
    for _ in range(max_pages):
        page = fetch_page(url, token, since, timeout)
        seqs = [int(e["seq"]) for e in page.events if isinstance(e.get("seq"), int)]
        out.extend(page.events)
        if not seqs:
            return out, True  # nothing after `since`: the outbox has no more
        last = max(seqs)
        if upto is None:
            return out, False
        if last >= upto:
            return out, True
        nxt = page.next_since if page.next_since is not None else last
        if nxt <= since:
            return out, True
        since = nxt
    return out, False
