"""Request and response bodies of outcome reporting."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from service.common import INT32_MAX, BatchId, ClientId, Partition, Step, Whole

Reward = Annotated[float, Field(allow_inf_nan=False, ge=-1e12, le=1e12, strict=True)]
"""A JSON number (not "1.0", not true), bounded so a group's mean and variance stay finite."""

Length = Annotated[int, Field(ge=0, le=INT32_MAX, strict=True), Whole]


class GroupResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt_id: ClientId
    rewards: list[Reward] = Field(min_length=1, max_length=1024)
    mean_logprob: float | None = Field(None, allow_inf_nan=False, ge=-1e12, le=1e12, strict=True)
    response_lengths: list[Length] | None = Field(None, max_length=1024)


class OutcomeReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: Step
    batch_id: BatchId | None = None
    partition: Partition | None = Field(
        None,
        description=(
            'the reporting partition, for reports without batch_id (default "0"); with a '
            "batch_id it must match the batch's"
        ),
    )
    results: list[GroupResult] = Field(min_length=1, max_length=100_000)


class OutcomeAck(BaseModel):
    accepted: int
    duplicates: int
