"""Bodies of the per-prompt and per-run statistics endpoints."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class Estimate(BaseModel):
    pass_rate: float
    alpha: float
    beta: float
    uncertainty: float
    p_informative: float


class HistoryEntry(BaseModel):
    step: int
    n: int
    successes: int
    reward_mean: float
    batch_id: str | None
    received_at: datetime


class PromptStatsRead(BaseModel):
    id: str
    observations: int
    rollouts: int
    successes: int
    observed_pass_rate: float | None
    last_step: int | None
    history: list[HistoryEntry]
    estimate: Estimate


class HistogramBin(BaseModel):
    lo: float
    hi: float
    prompts: int


class StepShare(BaseModel):
    step: int
    groups: int
    zero_variance_share: float


class RunSummary(BaseModel):
    run: str
    pool: int
    prompts_seen: int
    groups: int
    rollouts: int
    zero_variance_share: float | None
    all_fail_prompts: int
    all_pass_prompts: int
    pass_rate_histogram: list[HistogramBin]
    zero_variance_by_step: list[StepShare]
