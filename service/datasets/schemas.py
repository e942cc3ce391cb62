"""Request and response bodies of the datasets API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.common import ClientId, Name

EmbedderName = Literal["ngrams", "hashing", "minilm", "hybrid", "client"]
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
    text: str = Field(min_length=1, max_length=200_000)
    metadata: dict[str, Any] | None = None
    embedding: list[Annotated[float, Field(allow_inf_nan=False)]] | None = Field(
        None, min_length=1, max_length=8192, description="only for datasets with embedder=client"
    )


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
