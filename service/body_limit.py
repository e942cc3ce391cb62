"""Request bodies are counted as they arrive: a chunked or mislabelled one meets the limit too."""

from __future__ import annotations

import logging

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


def payload_too_large(size: str, limit: int, *, close: bool = False) -> JSONResponse:
    """The one 413 body, whether the size was declared in Content-Length or counted."""
    return JSONResponse(
        {"type": "payload_too_large", "detail": f"body of {size} bytes is above {limit}"},
        status_code=413,
        headers={"connection": "close"} if close else None,
    )


class BodyTooLarge(Exception):
    """Raised by `receive` once the body is past the limit; the rest of it is never read."""


class BodyLimit:
    """Pure ASGI middleware: counts body bytes in `receive` and answers 413 past `max_bytes`.

    Whatever the app makes of the interruption (FastAPI turns a failed body read into a 400, an
    endpoint reading the stream raises, rolling its session back) is dropped in favour of the
    413, unless the app had already started its response.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = 0
        tripped = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, tripped
            if tripped:
                raise BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    tripped = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if tripped and not started:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not tripped or started:
                raise
            log.debug("app raised after its body went over the limit", exc_info=True)
        if tripped and not started:
            # the client may still be sending: close the connection rather than drain it
            response = payload_too_large(f"at least {received}", self.max_bytes, close=True)
            await response(scope, receive, send)
