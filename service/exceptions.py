"""Domain errors carry their HTTP status so one handler can render them all."""

from __future__ import annotations

from typing import Any


class DepoError(Exception):
    """Base of every error the API reports to a client."""

    status_code = 500
    error_type = "internal_error"

    def __init__(self, message: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.error_type, "detail": self.message}
        if self.field is not None:
            body["field"] = self.field
        body.update(self.extra)
        return body


class NotFound(DepoError):
    status_code = 404
    error_type = "not_found"


class Conflict(DepoError):
    status_code = 409
    error_type = "conflict"


class InvalidInput(DepoError):
    """Well-formed JSON that breaks a rule only the service can check (unknown prompt, size)."""

    status_code = 422
    error_type = "invalid_input"


class PayloadTooLarge(DepoError):
    status_code = 413
    error_type = "payload_too_large"


class Unauthorized(DepoError):
    status_code = 401
    error_type = "unauthorized"
    challenge = "Bearer"


class Forbidden(DepoError):
    """A valid key asked for what its namespace may not do (name another namespace)."""

    status_code = 403
    error_type = "forbidden"


class AdminUnauthorized(Unauthorized):
    """Asks a browser for the key: its Basic auth prompt, the key as the password."""

    challenge = 'Basic realm="depo admin"'


class Unavailable(DepoError):
    """A backing service is down for now; the request may be retried as it is."""

    status_code = 503
    error_type = "unavailable"
