"""Render every error as JSON `{"type", "detail", ...}` so clients parse one shape."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.exceptions import DepoError

log = logging.getLogger(__name__)


class ErrorResponse(JSONResponse):
    """ASCII-escaped JSON: an error may echo input that UTF-8 cannot encode (lone surrogates)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False).encode("ascii")


async def depo_error_handler(request: Request, exc: Exception) -> ErrorResponse:
    assert isinstance(exc, DepoError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    return ErrorResponse(exc.body(), status_code=exc.status_code, headers=headers)


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


async def validation_error_handler(request: Request, exc: Exception) -> ErrorResponse:
    assert isinstance(exc, RequestValidationError)
    errors = jsonable_encoder(exc.errors(), custom_encoder={float: _safe_float})
    for err in errors:
        if isinstance(err.get("input"), dict | list):
            err.pop("input")
        err.pop("ctx", None)
        err.pop("url", None)
    first = errors[0] if errors else {"loc": ["body"], "msg": "invalid request"}
    field = _field_name(tuple(first.get("loc", ())))
    return ErrorResponse(
        {
            "type": "validation_error",
            "detail": f"{field}: {first.get('msg')}",
            "field": field,
            "errors": errors,
        },
        status_code=422,
    )


def _safe_float(value: float) -> float | str:
    """NaN and infinity are not JSON; echo them back as strings."""
    return value if value == value and value not in (float("inf"), float("-inf")) else str(value)


async def http_error_handler(request: Request, exc: Exception) -> ErrorResponse:
    assert isinstance(exc, StarletteHTTPException)
    return ErrorResponse(
        {"type": "http_error", "detail": exc.detail},
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


async def unhandled_error_handler(request: Request, exc: Exception) -> ErrorResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return ErrorResponse({"type": "internal_error", "detail": "internal server error"}, 500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(DepoError, depo_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(Exception, unhandled_error_handler)
