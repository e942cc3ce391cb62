"""The OpenAPI schema says what the service sends: one error body, every status, the bearer key."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

ErrorType = Literal[
    "validation_error",
    "invalid_input",
    "not_found",
    "conflict",
    "payload_too_large",
    "unauthorized",
    "forbidden",
    "unavailable",
    "http_error",
    "internal_error",
]


class ValidationIssue(BaseModel):
    """One of pydantic's errors, as a 422 `validation_error` lists them."""

    type: str
    loc: list[str | int]
    msg: str
    input: Any = Field(None, description="the value at fault; left out for objects and lists")


class ErrorBody(BaseModel):
    """Every error the service answers, whatever its status (exception_handlers.py renders it)."""

    model_config = ConfigDict(extra="allow")

    type: ErrorType
    detail: str = Field(description="what is wrong, for a person; names the field when one is")
    field: str | SkipJsonSchema[None] = Field(
        None, description="the field at fault, when one is (dotted path)"
    )
    errors: list[ValidationIssue] | SkipJsonSchema[None] = Field(
        None, description="`validation_error` only: every problem found"
    )
    missing: list[str] | SkipJsonSchema[None] = Field(
        None, description="unknown prompt ids (up to 100), on an `invalid_input` about them"
    )


WHEN: dict[int, str] = {
    400: "`http_error`: the body could not be read as text (not UTF-8)",
    401: "`unauthorized`: missing or wrong API key (only when the service has keys set)",
    403: "`forbidden`: a namespace key named another namespace (`X-Depo-Namespace`), or asked "
    "for what only an admin key may see",
    404: "`not_found`: no such dataset, run or prompt, or one of a namespace the key does not "
    "see; `http_error` for a path no route matches",
    409: "`conflict`: it exists with other settings, the prompts asked for are leased, or (an "
    "admin key) several namespaces hold the name: pick one with `X-Depo-Namespace`",
    413: "`payload_too_large`: a body over DEPO_MAX_BODY_BYTES, or too many items in one request",
    422: "`validation_error`: the request does not match the schema (`errors` lists why); "
    "`invalid_input`: well-formed but wrong for this service (an unknown prompt id, say)",
    503: "`unavailable`: the stats cache (Redis) is down or stalled; retry after `Retry-After`",
}

HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "`Bearer`: the scheme to authenticate with",
            "required": True,
            "schema": {"type": "string"},
        }
    },
    503: {
        "Retry-After": {
            "description": "seconds to wait before retrying",
            "required": True,
            "schema": {"type": "string"},
        }
    },
}

_REF = "#/components/schemas/"


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for statuses a route sends that its signature does not show (409, 503)."""
    return {code: {"model": ErrorBody, "description": WHEN[code]} for code in codes}


def _statuses(operation: dict[str, Any]) -> set[int]:
    """The errors any operation of this shape can answer, whatever its handler does."""
    codes: set[int] = set()
    if "422" in operation["responses"]:  # FastAPI's rule: it has parameters or a body
        codes.add(422)
    if any(p["in"] == "path" for p in operation.get("parameters", ())):
        codes |= {404, 409}  # 409: an admin key naming what several namespaces hold
    if "requestBody" in operation:
        codes |= {400, 413}
    if operation.get("security"):
        codes |= {401, 403}
    return codes


def _error_response(code: int) -> dict[str, Any]:
    return {
        "description": WHEN[code],
        "content": {"application/json": {"schema": {"$ref": f"{_REF}ErrorBody"}}},
    }


def amend(schema: dict[str, Any]) -> dict[str, Any]:
    """Document the statuses FastAPI leaves out, and the service's 422 in place of FastAPI's."""
    models = schema.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorBody.model_json_schema(ref_template=_REF + "{model}", mode="serialization")
    models.update(error_schema.pop("$defs", {}))
    models["ErrorBody"] = error_schema
    for operations in schema["paths"].values():
        for operation in operations.values():
            responses = operation["responses"]
            for code in sorted(_statuses(operation)):
                if code == 422 or str(code) not in responses:
                    responses[str(code)] = _error_response(code)
            for code, response in responses.items():
                if int(code) in HEADERS and response.get("content"):
                    response.setdefault("headers", HEADERS[int(code)])
    for unused in ("HTTPValidationError", "ValidationError"):
        models.pop(unused, None)
    return schema


def install(app: FastAPI) -> None:
    """Amend the schema FastAPI builds, once, on the first request for it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = amend(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
