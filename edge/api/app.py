"""The daemon's HTTP API (FastAPI, OpenAPI docs at /docs): ``create_app(state)`` assembles one router per concern.

| module                   | routes                                                               |
|--------------------------|----------------------------------------------------------------------|
| edge/api/health.py       | /healthz, /readyz (always open)                                      |
| edge/api/inference.py    | POST /predict                                                        |
| edge/api/status.py       | /status, /snapshot.jpg, /metrics                                     |
| edge/api/events.py       | /events (recent decisions; replay of the outbox)                     |
| edge/api/control.py      | POST /reload, POST /trigger                                          |
| edge/api/models.py       | /model*, /ui/model, /ui/shadow* (the model's life cycle)             |
| edge/api/operator.py     | the operator page at / and its /ui/* endpoints, /docs offline        |
| edge/api/history.py      | /ui/history*, /ui/counters, /ui/trend, /ui/lot/reset, /ui/audit      |

What the routers serve is ``ApiState`` (edge/api/state.py). Who may call what is decided by edge/api/access.py
from the request head, before a body is read: with ``api.token`` set, everything but /healthz, /metrics and the
read-only views needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import logging
import threading

from fastapi import FastAPI
from starlette.middleware.trustedhost import TrustedHostMiddleware

from edge import __version__
from edge.api import control, events, health, history, inference, status
from edge.api.access import HOW_TO_ENABLE, Access, AccessGuard
from edge.api.bodies import install_validation_handler
from edge.api.middleware import BodyLimit, CatchAll, rate_limited
from edge.api.state import ApiState
from edge.config import Config
from edge.runtime.ratelimit import RateLimited

log = logging.getLogger(__name__)

MULTIPART_SLACK = 64 * 1024  # multipart framing on top of the image itself
UPLOAD_PATHS = ("/predict", "/ui/check")  # the routes that take an image upload (edge/api/upload.py)


def create_app(state: ApiState) -> FastAPI:
    cfg = state.config
    app = FastAPI(
        title="boxinspect edge daemon",
        version=__version__,
        description="Box-defect inspection at the line: health, readiness, on-demand prediction, status, "
        "the latest frame, recent decisions, Prometheus metrics, model reload and part triggers.",
        docs_url=None,  # /docs is served offline by edge/api/operator.py
        redoc_url=None,
    )
    app.state.boxinspect = state
    access = _access(cfg)
    app.state.access = access
    decodes = threading.BoundedSemaphore(cfg.api.max_concurrent_decodes)  # /predict and /ui/check share them
    app.state.decode_slots = decodes
    _install_middleware(app, state, access)

    for module in (health, inference, status, events, control):
        app.include_router(module.router)
    from edge.api.operator import install_operator

    install_operator(app, state)
    if state.model_control is not None:
        from edge.api import models

        app.include_router(models.router)
    if state.station is not None and state.audit is not None:  # issue 26: history, counters, lot reset, audit log
        app.include_router(history.router)
    return app


def _access(cfg: Config) -> Access:
    """Who may do what (edge/api/access.py): checked by AccessGuard from the request head, before any body is read."""
    from edge.api.users import UsersFile  # issue 26: named users

    users = UsersFile(cfg.api.users_file) if cfg.api.users_file is not None else None
    access = Access(cfg.api.token.get_secret_value() if cfg.api.token is not None else None, cfg.api.viewing,
                    cfg.api.reload_without_token, users)
    if not access.configured:
        log.warning("API: no credential configured: serving health, metrics and read-only views only; %s", HOW_TO_ENABLE)
    return access


def _install_middleware(app: FastAPI, state: ApiState, access: Access) -> None:
    cfg = state.config
    app.add_middleware(CatchAll)  # one log line (with traceback) and a JSON 500 per unexpected error
    app.add_middleware(AccessGuard, access=access, routes=lambda: app.router.routes)
    install_validation_handler(app)  # malformed bodies (bytes, NaN) are a 422, never a 500 (edge/api/bodies.py)
    app.add_exception_handler(RateLimited, rate_limited)  # a store or replay over its rate: 429 (edge/runtime/ratelimit.py)
    if cfg.api.trusted_hosts:  # DNS rebinding: a browser page on another name cannot reach the API
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(cfg.api.trusted_hosts))
    # The upload limit as plain ASGI middleware: works with every FastAPI/Starlette this package supports
    # (FastAPI's own per-route ``max_body_size`` exists only from 0.164, which needs Python 3.11).
    app.add_middleware(
        BodyLimit,
        paths=UPLOAD_PATHS,
        limit=cfg.api.max_upload_bytes + MULTIPART_SLACK,
        detail=f"uploads are limited to {cfg.api.max_upload_bytes} bytes (api.max_upload_bytes)",
    )
