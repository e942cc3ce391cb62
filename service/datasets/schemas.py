"""Request and response bodies of the datasets API."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.common import ClientId, Name, Text, storable

EmbedderName = Literal["ngrams", "hashing", "minilm", "hybrid", "ngrams-minilm", "client"]
DEFAULT_EMBEDDER: EmbedderName = "ngrams"
MAX_METADATA_DEPTH = 32

VectorValue = Annotated[float, Field(allow_inf_nan=False, ge=-1e6, le=1e6, strict=True)]
"""Bounded so that the squared norm stays finite in float32."""


class DatasetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    embedder: EmbedderName | None = Field(
        None, description="default for a new dataset: ngrams; unset matches an existing one"
    )


class DatasetRead(BaseModel):
    name: str
    embedder: str
    prompt_count: int
    embedded: int
    created_at: datetime


class PromptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: ClientId
    text: Text = Field(min_length=1, max_length=200_000)
    metadata: dict[str, Any] | None = None
    embedding: list[VectorValue] | None = Field(
        None, min_length=1, max_length=8192, description="only for datasets with embedder=client"
    )

    @field_validator("metadata")
    @classmethod
    def _storable(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        """JSON has no NaN or infinity (Python's parser takes them; they'd come back null), the
        database no NUL and UTF-8 no lone surrogates; nesting is bounded so storing and hashing
        never recurse too deep."""
        stack: list[tuple[Any, int]] = [(value, 0)]
        while stack:
            item, depth = stack.pop()
            if depth > MAX_METADATA_DEPTH:
                raise ValueError(f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels")
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"metadata holds a non-finite number ({item})")
            if isinstance(item, str):
                storable(item)
            elif isinstance(item, dict):
                stack.extend((k, depth + 1) for k in item)
                stack.extend((v, depth + 1) for v in item.values())
            elif isinstance(item, list):
                stack.extend((v, depth + 1) for v in item)
        return value


class PromptUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompts: list[PromptIn] = Field(min_length=1)


class UploadResult(BaseModel):
    inserted: int
    updated: int
    unchanged: int
    prompt_count: int


class PromptRead(BaseModel):
    id: str
    text: str
    metadata: dict[str, Any] | None
    content_hash: str
    index: int
    created_at: datetime
    updated_at: datetime
