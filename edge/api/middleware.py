"""ASGI middleware and handlers every route shares: the upload limit, one JSON 500 per unexpected error, 429s."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse

from edge.runtime.ratelimit import RateLimited

log = logging.getLogger(__name__)


class BodyTooLarge(HTTPException):
    """Raised from the request's ``receive`` once a body passes the limit; FastAPI turns it into a 413."""


class BodyLimit:
    """ASGI middleware: refuse request bodies above ``limit`` bytes on ``paths`` with 413.

    A declared ``Content-Length`` above the limit is refused before anything is read; a chunked body
    is counted as it arrives and cut off at the limit (the body is never buffered beyond it).
    """

    def __init__(self, app: Any, paths: tuple[str, ...], limit: int, detail: str) -> None:
        self.app, self.paths, self.limit, self.detail = app, paths, limit, detail

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        if scope["type"] != "http" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers") or ():
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                body = json.dumps({"detail": f"request body is {int(value)} bytes; {self.detail}"}).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 413,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        seen = 0

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(413, f"request body is over {self.limit} bytes; {self.detail}")
            return message

        await self.app(scope, limited_receive, send)


async def rate_limited(request: Any, exc: Exception) -> JSONResponse:
    wait = exc.retry_after if isinstance(exc, RateLimited) else 1.0
    return JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": str(max(1, round(wait)))})


class CatchAll:
    """ASGI middleware: an unexpected exception becomes one logged traceback and a JSON 500.

    (A FastAPI ``exception_handler(Exception)`` answers too, but Starlette then re-raises the exception to
    the server, which logs the same traceback a second time.)
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log.error("API error on %s %s", scope.get("method"), scope.get("path"), exc_info=exc)
            if not started:
                response = JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)
                await response(scope, receive, send)
