"""Request and response bodies of outcome reporting."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from service.common import ClientId, Step

Reward = Annotated[float, Field(allow_inf_nan=False, ge=-1e12, le=1e12)]
"""Bounded so a group's mean and variance stay finite."""


class GroupResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt_id: ClientId
    rewards: list[Reward] = Field(min_length=1, max_length=1024)
    mean_logprob: float | None = Field(None, allow_inf_nan=False, ge=-1e12, le=1e12)
    response_lengths: list[Annotated[int, Field(ge=0)]] | None = Field(None, max_length=1024)


class OutcomeReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: Step
    batch_id: str | None = Field(None, min_length=1, max_length=32)
    results: list[GroupResult] = Field(min_length=1, max_length=100_000)


class OutcomeAck(BaseModel):
    accepted: int
    duplicates: int
