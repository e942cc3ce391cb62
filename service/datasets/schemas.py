"""Request and response bodies of the datasets API."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.common import ClientId, Name, Text, storable

EmbedderName = Literal["ngrams", "hashing", "minilm", "hybrid", "ngrams-minilm", "client"]
DEFAULT_EMBEDDER: EmbedderName = "ngrams"
MAX_METADATA_DEPTH = 32

VectorValue = Annotated[float, Field(allow_inf_nan=False, ge=-1e6, le=1e6, strict=True)]
"""Bounded so that the squared norm stays finite in float32."""


Bound = Annotated[float, Field(allow_inf_nan=False, ge=-1e12, le=1e12, strict=True)]
PassRate = Annotated[float, Field(allow_inf_nan=False, ge=0.0, le=1.0, strict=True)]


class DifficultyField(BaseModel):
    """A numeric metadata field read as a known difficulty, mapped linearly onto a pass rate."""

    model_config = ConfigDict(extra="forbid")

    name: Text = Field(min_length=1, max_length=200, description="the metadata key, e.g. level")
    easiest: Bound = Field(description="the field's value of the easiest prompts: pass rate 0.9")
    hardest: Bound = Field(description="the field's value of the hardest prompts: pass rate 0.1")

    @model_validator(mode="after")
    def _apart(self) -> DifficultyField:
        """The two ends fix the direction; equal ends would map every value to one rate."""
        if self.easiest == self.hardest:
            raise ValueError("easiest and hardest must differ")
        return self


class DatasetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    embedder: EmbedderName | None = Field(
        None, description="default for a new dataset: ngrams; unset matches an existing one"
    )
    difficulty_field: DifficultyField | None = Field(
        None,
        description="read each prompt's known difficulty from this numeric metadata field; "
        "unset matches an existing dataset",
    )


class DatasetRead(BaseModel):
    name: str
    embedder: str
    prompt_count: int
    embedded: int
    labelled: int = Field(description="prompts with a known difficulty (prior_pass_rate)")
    difficulty_field: DifficultyField | None
    created_at: datetime


class PromptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: ClientId
    text: Text = Field(min_length=1, max_length=200_000)
    metadata: dict[str, Any] | None = None
    embedding: list[VectorValue] | None = Field(
        None, min_length=1, max_length=8192, description="only for datasets with embedder=client"
    )
    prior_pass_rate: PassRate | None = Field(
        None,
        description="a known difficulty as a pass rate in [0, 1]: the estimate's prior before "
        "any outcome, then weighed by how well it predicted outcomes",
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
    prior_pass_rate: float | None
    created_at: datetime
    updated_at: datetime
