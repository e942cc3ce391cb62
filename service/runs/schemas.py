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
    history_from: Name | None = Field(
        None,
        description=(
            "start each prompt's prior from this run's counts (same dataset), discounted by a "
            "weight learned from this run's outcomes; does not copy the predictor (init_from does)"
        ),
    )

    @model_validator(mode="after")
    def _budget_fits(self) -> RunCreate:
        if self.selection.budget and self.selection.n_min > self.group_size:
            raise ValueError(
                f"selection.n_min {self.selection.n_min} is above group_size "
                f"{self.group_size}: a batch's budget is size x group_size rollouts"
            )
        return self


class HistoryRead(BaseModel):
    """Where a `history_from` run's starting counts came from, and how much they weigh now."""

    source: str = Field(description="the run the counts were copied from")
    source_seq: int = Field(description="the source's log position copied")
    source_step: int = Field(description="the source's step its counts are discounted to")
    prompts: int = Field(description="prompts with counts in the copy")
    strength: float = Field(
        description=(
            "kappa: a prompt's n source rollouts count at weight kappa / (kappa + n), so its "
            "history is worth at most kappa rollouts"
        )
    )
    weight: float = Field(
        description="the weight of one group's worth of source history (n = group_size), in [0, 1]"
    )
    learned: bool = Field(description="false: the default, before a fit had enough evidence")
    weight_prompts: int = Field(
        description="prompts with both histories the newest fit learned the strength on"
    )


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
    history_from: str | None = None
    history: HistoryRead | None = None
