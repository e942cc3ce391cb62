"""Field types shared by several domains' schemas."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints


def _int_to_str(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


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


Text = Annotated[str, AfterValidator(storable)]


NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN.pattern)]
"""Dataset and run names appear in URLs, so keep them path-safe."""

ClientId = Annotated[
    str,
    BeforeValidator(_int_to_str),
    StringConstraints(min_length=1, max_length=512),
    AfterValidator(storable),
]
"""Prompt ids are the client's own; integers are accepted and stored as strings."""

Partition = Annotated[
    str,
    BeforeValidator(_int_to_str),
    StringConstraints(min_length=1, max_length=100),
    AfterValidator(storable),
]

BatchId = Annotated[str, StringConstraints(min_length=1, max_length=32), AfterValidator(storable)]

INT32_MAX = 2**31 - 1
"""Counters and positions are 32-bit columns: no setting needs a value they cannot reach."""

Step = Annotated[int, Field(ge=0, le=INT32_MAX, strict=True)]
