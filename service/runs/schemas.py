"""Request and response bodies of the runs API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.common import JsonInt, Name
from service.policy import SelectionConfig, StrategyField


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    dataset: Name
    group_size: JsonInt = Field(ge=1, le=1024)
    success_threshold: float = Field(0.5, allow_inf_nan=False, ge=-1e12, le=1e12, strict=True)
    strategy: StrategyField = "informative"
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    init_from: Name | None = Field(
        None, description="warm-start the predictor from this run's newest version"
    )

    @model_validator(mode="after")
    def _budget_fits(self) -> RunCreate:
        if self.selection.budget and self.selection.n_min > self.group_size:
            raise ValueError(
                f"selection.n_min {self.selection.n_min} is above group_size "
                f"{self.group_size}: a batch's budget is size x group_size rollouts"
            )
        return self


class RunRead(BaseModel):
    name: str
    dataset: str
    group_size: int
    success_threshold: float
    strategy: str
    selection: SelectionConfig
    created_at: datetime
    steps_seen: int
    last_step: int | None
    outcomes: int
    rollouts: int
    successes: int
    zero_variance_share: float | None
    batches_served: int
    epoch: int
    init_from: str | None = None
