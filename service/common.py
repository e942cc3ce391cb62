"""Field types shared by several domains' schemas."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints, WithJsonSchema


def whole(value: Any) -> Any:
    """JSON Schema's integers include 8.0: take it as 8 (strict mode still refuses "8" and true)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _int_to_str(value: Any) -> Any:
    value = whole(value)
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


STORABLE = {"pattern": "^[^\\u0000]*$"}
"""The NUL rule of `storable`, for the OpenAPI schema (lone surrogates it cannot state)."""


def storable(value: str) -> str:
    """JSON lets a string hold a NUL or a lone surrogate; PostgreSQL text and UTF-8 cannot.

    Refused on every backend alike, so a string SQLite would take is not a 500 on PostgreSQL.
    """
    if "\x00" in value:
        raise ValueError("text holds a NUL character (\\u0000), which the database cannot store")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("text is not valid Unicode (a lone surrogate?)") from exc
    return value


Text = Annotated[str, AfterValidator(storable), Field(json_schema_extra=STORABLE)]


NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN.pattern)]
"""Dataset and run names appear in URLs, so keep them path-safe."""

ClientId = Annotated[
    str,
    BeforeValidator(_int_to_str),
    StringConstraints(min_length=1, max_length=512),
    AfterValidator(storable),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1, "maxLength": 512, **STORABLE},
                {"type": "integer"},
            ]
        }
    ),
]
"""Prompt ids are the client's own; integers are accepted and stored as strings."""

Partition = Annotated[
    str,
    BeforeValidator(_int_to_str),
    StringConstraints(min_length=1, max_length=100),
    AfterValidator(storable),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1, "maxLength": 100, **STORABLE},
                {"type": "integer"},
            ]
        }
    ),
]

BatchId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=32),
    AfterValidator(storable),
    Field(json_schema_extra=STORABLE),
]

INT32_MAX = 2**31 - 1
"""Counters and positions are 32-bit columns: no setting needs a value they cannot reach."""

Whole = BeforeValidator(whole)
"""After the bounds in `Annotated[int, Field(...), Whole]`, so the schema shows them."""

JsonInt = Annotated[int, Field(strict=True), Whole]
"""An integer as JSON has it: 8 or 8.0, never "8" or true; bounds go on the field."""

Step = Annotated[int, Field(ge=0, le=INT32_MAX, strict=True), Whole]
