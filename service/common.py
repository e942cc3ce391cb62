"""Field types shared by several domains' schemas."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints


def _int_to_str(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def utf8(value: str) -> str:
    """JSON lets a string hold a lone surrogate; UTF-8 (databases, hashes) cannot store one."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("text is not valid Unicode (a lone surrogate?)") from exc
    return value


Text = Annotated[str, AfterValidator(utf8)]


Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")]
"""Dataset and run names appear in URLs, so keep them path-safe."""

ClientId = Annotated[
    str,
    BeforeValidator(_int_to_str),
    StringConstraints(min_length=1, max_length=512),
    AfterValidator(utf8),
]
"""Prompt ids are the client's own; integers are accepted and stored as strings."""

Partition = Annotated[
    str,
    BeforeValidator(_int_to_str),
    StringConstraints(min_length=1, max_length=100),
    AfterValidator(utf8),
]

Step = Annotated[int, Field(ge=0, le=2**31 - 1)]
