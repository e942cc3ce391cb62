"""Render every error as JSON `{"type", "detail", ...}` so clients parse one shape."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import AuthenticationError, OutOfMemoryError, ReadOnlyError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.exceptions import DepoError, Unauthorized, Unavailable

log = logging.getLogger(__name__)


class ErrorResponse(JSONResponse):
    """ASCII-escaped JSON: an error may echo input that UTF-8 cannot encode (lone surrogates)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False).encode("ascii")


async def depo_error_handler(request: Request, exc: Exception) -> ErrorResponse:
    assert isinstance(exc, DepoError)
    headers = {"WWW-Authenticate": exc.challenge} if isinstance(exc, Unauthorized) else None
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


async def cache_error_handler(request: Request, exc: Exception) -> ErrorResponse:
    """Redis down, restarting or stalled: a 503 the trainer can retry, not an opaque 500."""
    log.warning("stats cache unavailable on %s %s: %r", request.method, request.url.path, exc)
    err = Unavailable("the stats cache (Redis) is unavailable; retry shortly")
    return ErrorResponse(err.body(), status_code=err.status_code, headers={"Retry-After": "1"})


async def http_error_handler(request: Request, exc: Exception) -> ErrorResponse:
    assert isinstance(exc, StarletteHTTPException)
    return ErrorResponse(
        {"type": "http_error", "detail": exc.detail},
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


def _internal_error(method: str | None, path: str | None) -> ErrorResponse:
    log.exception("unhandled error on %s %s", method, path)
    return ErrorResponse({"type": "internal_error", "detail": "internal server error"}, 500)


async def unhandled_error_handler(request: Request, exc: Exception) -> ErrorResponse:
    return _internal_error(request.method, request.url.path)


class CatchAll:
    """Answer an unhandled error with the JSON 500 here, inside the app.

    Starlette's outermost handler re-raises after answering, and the server then closes the
    keep-alive connection: a trainer's pooled client would see its next, unrelated request
    (an outcome report, say) reset. Answered here, the connection stays usable.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            if started:
                raise
            await _internal_error(scope.get("method"), scope.get("path"))(scope, receive, send)


def install(app: FastAPI) -> None:
    app.add_exception_handler(DepoError, depo_error_handler)
    # transient: down, restarting, loading, stalled, failing over, out of memory
    for transient in (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OutOfMemoryError):
        app.add_exception_handler(transient, cache_error_handler)
    # a ConnectionError too, but retrying cannot fix a wrong password: a 500 for the operator
    app.add_exception_handler(AuthenticationError, unhandled_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(Exception, unhandled_error_handler)
