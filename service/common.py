"""Field types shared by several domains' schemas."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, StringConstraints


def _int_to_str(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")]
"""Dataset and run names appear in URLs, so keep them path-safe."""

ClientId = Annotated[
    str, BeforeValidator(_int_to_str), StringConstraints(min_length=1, max_length=512)
]
"""Prompt ids are the client's own; integers are accepted and stored as strings."""

Partition = Annotated[
    str, BeforeValidator(_int_to_str), StringConstraints(min_length=1, max_length=100)
]

Step = Annotated[int, Field(ge=0, le=2**31 - 1)]
