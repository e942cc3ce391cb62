"""Request and response bodies of the datasets API."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.common import ClientId, Name, Text, utf8

EmbedderName = Literal["ngrams", "hashing", "minilm", "hybrid", "ngrams-minilm", "client"]
DEFAULT_EMBEDDER: EmbedderName = "ngrams"


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
    # bounded so that the squared norm stays finite in float32
    embedding: list[Annotated[float, Field(allow_inf_nan=False, ge=-1e6, le=1e6)]] | None = Field(
        None, min_length=1, max_length=8192, description="only for datasets with embedder=client"
    )

    @field_validator("metadata")
    @classmethod
    def _storable(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        """JSON has no NaN or infinity (Python's parser takes them; they'd come back null), and
        UTF-8 no lone surrogates (the database and the content hash need it)."""
        stack: list[Any] = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"metadata holds a non-finite number ({item})")
            if isinstance(item, str):
                utf8(item)
            elif isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
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
