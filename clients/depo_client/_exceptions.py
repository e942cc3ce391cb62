"""The exception tree: catch `DepoError` for everything, or one branch for what you can handle.

    DepoError
    ├── InvalidRequest          refused before sending (also a ValueError): e.g. a NaN reward
    ├── TransportError          the service could not be reached (after retries)
    └── APIError                the service answered with an error body
        ├── BadRequest          400 / 422: the request breaks a rule; fix the call
        ├── Unauthorized        401 / 403: missing or wrong API key
        ├── NotFound            404
        ├── Conflict            409: e.g. a batch asked for again with another size
        ├── PayloadTooLarge     413
        └── ServiceUnavailable  429 / 5xx that outlived the retries

`TransportError` and `ServiceUnavailable` are the "unreachable" pair (`UNREACHABLE`): transient,
and the ones `Curriculum` absorbs with its local fallback.
"""

from __future__ import annotations

from typing import Any

import httpx


class DepoError(Exception):
    """Base of every error this package raises."""


class InvalidRequest(DepoError, ValueError):
    """Refused before sending: the input cannot become a valid request (a NaN reward, say)."""


class TransportError(DepoError):
    """No HTTP answer: connection refused or reset, DNS failure, timeout."""


class APIError(DepoError):
    """The service answered with an error status and a JSON body `{"type", "detail", ...}`."""

    def __init__(
        self,
        status_code: int,
        type: str,
        detail: str,
        *,
        field: str | None = None,
        body: dict[str, Any] | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        super().__init__(f"{status_code} {type}: {detail}")
        self.status_code = status_code
        self.type = type
        self.detail = detail
        self.field = field
        self.body: dict[str, Any] = body or {}
        self.response = response


class BadRequest(APIError):
    """400 or 422: the body or a value is invalid (`field` names which)."""


class Unauthorized(APIError):
    """401 or 403: send `api_key=` (or set DEPO_API_KEY)."""


class NotFound(APIError):
    """404: no such dataset, run or prompt."""


class Conflict(APIError):
    """409: the name exists with other settings, or a batch was served with another size."""


class PayloadTooLarge(APIError):
    """413: too many prompts in one request; upload in smaller chunks."""


class ServiceUnavailable(APIError):
    """429 or 5xx still failing after every retry."""


UNREACHABLE: tuple[type[DepoError], ...] = (TransportError, ServiceUnavailable)
"""The transient errors: the service is down, overloaded or out of reach."""

_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: BadRequest,
    429: ServiceUnavailable,
}


def error_from_response(response: httpx.Response) -> APIError:
    """Turn an error response into the matching `APIError` subclass."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    body: dict[str, Any] = payload if isinstance(payload, dict) else {}
    detail = body.get("detail")
    if not isinstance(detail, str):
        detail = (
            str(detail) if detail is not None else (response.text[:500] or response.reason_phrase)
        )
    field = body.get("field")
    status = response.status_code
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServiceUnavailable if status >= 500 else APIError
    return cls(
        status,
        str(body.get("type", "http_error")),
        detail,
        field=field if isinstance(field, str) else None,
        body=body,
        response=response,
    )
