"""The operator page at ``/``: what a person at the line needs, assembled from one router per concern.

- Live view and counters (edge/api/live.py): the current frame with the ROI; while a box is in it, "inspecting..."
  and the located box, never a verdict. Beside it the result tile: the verdict drawn on the frame that decided the
  last box. Camera, model, MQTT and outbox state with the ``/readyz`` reasons, counters.
- Recent decisions with thumbnails; the full frame and the crop of each (edge/api/decisions.py).
- Manual check of an uploaded image or of the current frame (edge/api/checks.py).
- Feedback on a decision or a check, collection mode, the label queue and the label review (edge/api/labels.py).
- What the page holds between requests: edge/api/page_state.py.

Read-only views follow ``api.viewing``; every action needs its role (edge/api/access.py). Every response carries
a Content-Security-Policy that allows this origin only: the page, its script and style, and the Swagger UI at
``/docs`` (served from the ``fastapi-offline`` package's files, not a CDN) load nothing from anywhere else.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders

from edge.api import checks, decisions, labels, live
from edge.api.page_state import OperatorState
from edge.api.state import ApiState

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
# Swagger UI sets style attributes from its scripts; that needs 'unsafe-inline' styles on /docs (still no other origin).
DOCS_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def swagger_dir() -> Path | None:
    """Swagger UI's files as shipped by the fastapi-offline package (None if it is not installed)."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    d = Path(fastapi_offline.__file__).parent / "static"
    return d if (d / "swagger-ui-bundle.js").is_file() else None


def install_operator(app: FastAPI, state: ApiState) -> None:
    """Add the page, its endpoints, the offline /docs and the CSP header to ``app``."""
    cfg = state.config
    _install_headers(app)
    _install_docs(app)
    if not cfg.operator.enabled:
        return
    op = state.operator if isinstance(state.operator, OperatorState) else None
    if op is None:
        op = OperatorState(cfg, state.metrics)
        state.operator = op
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for module in (live, decisions, checks, labels):
        app.include_router(module.router)
    app.include_router(page)


class SecurityHeaders:
    """Pure ASGI middleware: the CSP (and nosniff, no-referrer) on every response, at almost no cost per request."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = DOCS_CSP if scope.get("path") == "/docs" else CSP

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", csp)
                for k, v in SECURITY_HEADERS.items():
                    headers.setdefault(k, v)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _install_headers(app: FastAPI) -> None:
    app.add_middleware(SecurityHeaders)


def _install_docs(app: FastAPI) -> None:
    sdir = swagger_dir()
    if sdir is None:
        log.warning("fastapi-offline is not installed: /docs is off (the OpenAPI schema stays at /openapi.json)")
        return
    app.mount("/swagger", StaticFiles(directory=sdir), name="swagger")

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(STATIC_DIR / "docs.html", media_type="text/html")


page = APIRouter(tags=["operator page"])


@page.get("/", include_in_schema=False)
def index() -> HTMLResponse:
    return HTMLResponse((STATIC_DIR / "index.html").read_text(), headers={"Cache-Control": "no-store"})
