"""Request and response bodies of batch serving."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from service.common import JsonInt, Partition, Step
from service.policy import StrategyField


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: Step
    size: JsonInt = Field(ge=1, le=100_000)
    partition: Partition = "0"
    strategy: StrategyField | None = None


class ServedPrompt(BaseModel):
    id: str
    text: str
    predicted_pass_rate: float = Field(
        description="the estimate selection scored, its prior floored at min_prior_strength; "
        "/predict reports the calibrated one"
    )
    n: int | None = None


class BatchStats(BaseModel):
    scanned: int
    kept: int
    survival_rate: float
    epoch: int
    strategy: str
    expected_informative: float | None = None
    filled: int = Field(
        0,
        description="served prompts the strategy did not pick: the scan ran out (max_scan or the "
        "pool) and these topped the batch up, nearest the target rate first; they come last",
    )


class BatchResponse(BaseModel):
    batch_id: str
    step: int
    partition: str
    expires_at: str
    prompts: list[ServedPrompt]
    stats: BatchStats
