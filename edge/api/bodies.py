"""Malformed request bodies are a 422 with a readable detail, never a 500.

FastAPI's own validation-error answer echoes each error's ``input`` through ``jsonable_encoder`` and a strict
JSON encoder. Two bodies broke it: a multipart or binary body sent to a JSON route (the input is raw bytes,
``UnicodeDecodeError``) and NaN/Infinity in a JSON number (not JSON, ``ValueError``). ``install_validation_handler``
answers the same 422 shape with every input made JSON-safe: bytes become their length, non-finite numbers a
string, long strings and deep structures are cut.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

MAX_TEXT = 200
MAX_ITEMS = 20
MAX_DEPTH = 4


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as data any strict JSON encoder accepts, bounded in size."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT else value[:MAX_TEXT] + "..."
    if depth >= MAX_DEPTH:
        return "..."
    if isinstance(value, dict):
        return {str(k)[:MAX_TEXT]: json_safe(v, depth + 1) for k, v in list(value.items())[:MAX_ITEMS]}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v, depth + 1) for v in list(value)[:MAX_ITEMS]]
    return json_safe(str(value), depth + 1)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else [{"msg": str(exc)}]
    return JSONResponse({"detail": json_safe(list(errors))}, status_code=422)


def install_validation_handler(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)
