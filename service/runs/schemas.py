"""Request and response bodies of the runs API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.common import Name

StrategyField = Literal["uniform", "posterior"]


class SelectionConfig(BaseModel):
    """How a run picks prompts; fixed at creation so every replica selects alike."""

    model_config = ConfigDict(extra="forbid")

    discount: float = Field(0.995, gt=0, le=1, description="weight of an outcome per step of age")
    explore: float = Field(0.1, ge=0, le=1, description="share of each batch drawn at random")
    oversample: float = Field(4.0, ge=1, le=100, description="candidates scanned per served slot")
    target: float = Field(0.5, gt=0, lt=1, description="pass rate the posterior strategy seeks")
    prior_alpha: float = Field(1.0, gt=0, le=1e6)
    prior_beta: float = Field(1.0, gt=0, le=1e6)
    lease_seconds: float | None = Field(None, gt=0, le=7 * 86400)
    seed: int = Field(0, ge=0, le=2**31 - 1)


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    dataset: Name
    group_size: int = Field(ge=1, le=1024)
    success_threshold: float = Field(0.5, allow_inf_nan=False)
    strategy: StrategyField = "posterior"
    selection: SelectionConfig = Field(default_factory=SelectionConfig)


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
