"""The station's records over HTTP (issue 26): the decision history, shift and lot counters, the lot reset and the
audit log. The page is edge/api/static/history.html (``/static/history.html``, linked from the operator page).

- ``GET /ui/history``: decisions newest first, filtered by verdict (``ng``/``ok``), part id (contains) and time
  (``since``/``until``, ISO 8601), paged (``limit``, ``offset``; ``total`` says how many match).
- ``GET /ui/history.csv``: the same filter as CSV (at most ``station.csv_max_rows`` rows).
- ``GET /ui/history/{event_id}``: one decision with its event and whether each image is still there: evidence
  pruned by retention (or never saved: OK boxes are sampled) is said in words, never a broken image.
- ``GET /ui/history/{event_id}/{frame|crop}.jpg``: its evidence file (404 if pruned).
- ``GET /ui/counters``: the current shift and lot and the last ones; ``GET /ui/trend``: yield per group of
  decisions, with n, and the SPC state.
- ``POST /ui/lot/reset`` (operate): end the lot with a reason, start the next (audited).
- ``GET /ui/audit``: the audit trail, newest first.

All reads need the view role (``api.viewing``); the records are edge/deliver/station.py, the trail edge/deliver/audit.py.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from edge.api.deps import OPERATE, VIEW, State
from edge.api.page_state import jpeg_response
from edge.api.state import ApiState
from edge.deliver.audit import Audit, who_is_asking
from edge.deliver.station import HistoryQuery, StationStore

CSV_COLUMNS = ("event_id", "decided_at", "label", "is_defect", "score", "threshold", "model_id", "part_id", "frame", "crop")


class LotReset(BaseModel):
    reason: str = Field(min_length=3, max_length=200, description="why the lot ends (kept with it and audited)")
    lot: str | None = Field(default=None, min_length=1, max_length=80, description="the next lot's name (default: lot N)")


def _when(text: str | None, what: str) -> float | None:
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(422, f"{what}: not an ISO 8601 time ({text[:40]!r}), e.g. 2026-12-06T06:00:00Z") from None
    return dt.timestamp() if dt.tzinfo else dt.astimezone().timestamp()


def query(verdict: Literal["ng", "ok", "all"] | None, part: str | None, since: str | None, until: str | None) -> HistoryQuery:
    return HistoryQuery(None if verdict == "all" else verdict, part or None, _when(since, "since"), _when(until, "until"))


def image_state(path: str | None, root: Path) -> str:
    """``ok`` (the file is there), ``pruned`` (named, gone: retention) or ``not saved`` (no evidence for this decision)."""
    if not path:
        return "not saved"
    p = Path(path)
    try:
        inside = p.resolve().is_relative_to(root.resolve())
    except OSError:
        inside = False
    return "ok" if inside and p.is_file() else "pruned"


router = APIRouter(tags=["history and audit"])
VerdictQ = Query(None, description="ng, ok or all")
PartQ = Query(None, max_length=200, description="part ids containing this")
SinceQ = Query(None, max_length=40, description="from this time (ISO 8601)")
UntilQ = Query(None, max_length=40, description="until this time (ISO 8601)")


def station_store(state: State) -> StationStore:
    if state.station is None:
        raise HTTPException(404, "the station records are off (station.enabled)")
    return state.station


def audit_trail(state: State) -> Audit:
    if state.audit is None:
        raise HTTPException(404, "the audit trail is not available in this daemon")
    return state.audit


Store = Annotated[StationStore, Depends(station_store)]
Trail = Annotated[Audit, Depends(audit_trail)]


@router.get("/ui/history", summary="Decisions newest first: filter by verdict, part id and time; paged", dependencies=VIEW)
def history(state: State, store: Store, verdict: Literal["ng", "ok", "all"] | None = VerdictQ,
            part: str | None = PartQ, since: str | None = SinceQ, until: str | None = UntilQ,
            limit: int = Query(50, ge=1, le=200), offset: int = Query(0, ge=0, le=10_000_000)) -> dict[str, Any]:
    cfg = state.config
    q = query(verdict, part, since, until)
    items = store.page(q, limit, offset)
    for it in items:
        it["images"] = {k: image_state(it[k], Path(cfg.evidence.dir)) for k in ("frame", "crop")}
        it.pop("frame"), it.pop("crop")  # no file-system paths on the page
    return {"total": store.count(q), "offset": offset, "limit": limit, "items": items,
            "retention": {"max_files": cfg.evidence.max_files, "max_age_days": cfg.evidence.max_age_days}}


@router.get("/ui/history.csv", summary="The filtered decisions as CSV (at most station.csv_max_rows)", dependencies=VIEW,
            response_class=StreamingResponse, responses={200: {"content": {"text/csv": {}}}})
def history_csv(state: State, store: Store, verdict: Literal["ng", "ok", "all"] | None = VerdictQ,
                part: str | None = PartQ, since: str | None = SinceQ, until: str | None = UntilQ) -> StreamingResponse:
    cfg = state.config
    q = query(verdict, part, since, until)

    def rows() -> Iterator[str]:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(CSV_COLUMNS)
        for it in store.iterate(q, cfg.station.csv_max_rows):
            w.writerow([Path(it[c]).name if c in ("frame", "crop") and it[c] else it[c] for c in CSV_COLUMNS])
            if buf.tell() > 32_768:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue()

    name = f"boxinspect-{cfg.line}-{cfg.camera}-history.csv"
    return StreamingResponse(rows(), media_type="text/csv",
                             headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})


@router.get("/ui/history/{event_id}", summary="One decision: its event, and whether its images are still kept",
            dependencies=VIEW)
def one(state: State, store: Store, event_id: str) -> dict[str, Any]:
    found = store.get(event_id)
    if found is None:
        raise HTTPException(404, f"decision {event_id} is not in the history (kept: evidence.max_files, max_age_days)")
    images = {k: image_state(found.pop(k), Path(state.config.evidence.dir)) for k in ("frame", "crop")}
    found["event"].pop("evidence", None)
    return {**found, "images": images, "recent_images": state.operator is not None and _recent(state, event_id)}


@router.get("/ui/history/{event_id}/{which}.jpg", summary="A decision's evidence image (404 once retention pruned it)",
            dependencies=VIEW, response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
def image(state: State, store: Store, event_id: str, which: Literal["frame", "crop"]) -> Response:
    found = store.get(event_id)
    path = found.get(which) if found else None
    if image_state(path, Path(state.config.evidence.dir)) != "ok" or path is None:
        raise HTTPException(404, f"the {which} of {event_id} is not kept (evidence retention or not saved)")
    return jpeg_response(Path(path).read_bytes())


@router.get("/ui/counters", summary="The current shift and lot (boxes, NG, yield with n) and the last ones",
            dependencies=VIEW)
def counters(state: State, store: Store) -> dict[str, Any]:
    return {**store.counters(), "shifts": store.periods("shift"), "lots": store.periods("lot"),
            "timezone": state.config.station.timezone}


@router.get("/ui/trend", summary="Yield per group of the last decisions (each with n) and the SPC state", dependencies=VIEW)
def trend(state: State, store: Store, buckets: int = Query(20, ge=2, le=100),
          last: int = Query(500, ge=10, le=10_000)) -> dict[str, Any]:
    loop = state.counters() if state.counters is not None else {}
    return {"points": store.trend(buckets, last), "spc": loop.get("spc"), "spc_config": state.config.spc.model_dump()}


@router.post("/ui/lot/reset", summary="End the current lot with a reason and start the next (audited)", dependencies=OPERATE)
def lot_reset(state: State, store: Store, audit: Trail, body: LotReset) -> dict[str, Any]:
    before, after = store.reset_lot(body.reason, who_is_asking()[0], body.lot)
    audit.record("lot reset", f"{before['name']} ended ({body.reason}); {after['name']} started", before, after)
    if state.operator is not None:
        state.operator.invalidate()
    return {"ended": before, "lot": after}


@router.get("/ui/audit", summary="The audit trail, newest first: who, when, what, before and after", dependencies=VIEW)
def audit_log(store: Store, audit: Trail, limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=10_000_000),
              action: str | None = Query(None, max_length=40)) -> dict[str, Any]:
    return {"items": store.audit(limit, offset, action), "topic": audit.topic}


def _recent(state: ApiState, event_id: str) -> bool:
    has = getattr(state.operator, "has_images", None)
    return bool(has(event_id)) if callable(has) else False
