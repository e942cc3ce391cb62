"""A run's policy: how it selects, fits and leases; fixed at creation so replicas agree.

Compute modules (selection, estimates, the predictor's fit) read it; the runs API embeds it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.common import INT32_MAX, whole

StrategyField = Literal["uniform", "posterior", "window", "target", "informative"]


class SelectionConfig(BaseModel):
    """How a run picks prompts; fixed at creation so every replica selects alike."""

    # strict: a JSON number where a number goes (not "0.5" or true), a JSON boolean for a flag
    model_config = ConfigDict(extra="forbid", strict=True)

    discount: float = Field(0.995, gt=0, le=1, description="weight of an outcome per step of age")
    explore: float = Field(
        0.0,
        ge=0,
        le=1,
        description=(
            "informative and posterior: share of each batch taken from the scanned prompts the "
            "ranking passed over (informative: those with history, stalest first)"
        ),
    )
    oversample: float | None = Field(
        None,
        ge=1,
        le=100,
        description=(
            "candidates scanned per served slot; unset: derived at each batch (informative, "
            "target, posterior: the whole free pool up to 8,192 candidates, at least 4 per "
            "slot; window: 4)"
        ),
    )
    target: float = Field(0.5, gt=0, lt=1, description="pass rate posterior/target seek")
    window_lo: float = Field(0.15, ge=0, le=1, description="window: lowest predicted rate kept")
    window_hi: float = Field(0.85, ge=0, le=1, description="window: highest predicted rate kept")
    max_scan: float = Field(16.0, ge=1, le=1000, description="window: most candidates per slot")
    warmup_outcomes: int = Field(
        0,
        ge=0,
        le=INT32_MAX,
        description=(
            "serve uniformly until the run has seen this many groups, unless it is warm-started "
            "(init_from) and that predictor has landed, or starts from another run's history"
        ),
    )
    budget: bool = Field(False, description="suggest a rollout count n per served prompt")
    n_min: int = Field(2, ge=1, le=1024, description="budget: fewest rollouts per prompt")
    n_max: int | None = Field(None, ge=1, le=1024, description="budget: most (default 2 G)")
    # below about 1e-3 a Beta's moments underflow; above 1e6 no history could move it
    prior_alpha: float = Field(
        1.0, ge=1e-3, le=1e6, description="Beta prior of a prompt before the first predictor fit"
    )
    prior_beta: float = Field(
        1.0, ge=1e-3, le=1e6, description="Beta prior of a prompt before the first predictor fit"
    )
    lease_seconds: float | None = Field(
        None,
        gt=0,
        le=7 * 86400,
        description="how long a served prompt stays leased; unset: DEPO_LEASE_SECONDS",
    )
    thompson_draws: int = Field(
        0, ge=0, le=64, description="informative: posterior draws averaged; 0: exact expectation"
    )
    prior_strength: float | None = Field(
        None,
        ge=1e-2,
        le=1e4,
        description="pseudo-count of the predictor's prior; unset: estimated at each fit",
    )
    # 2 with tracking, which now carries the policy's progress that the floor's optimism
    # stood in for (efficacy benchmark, seed 0: 12.9% zero-variance groups against 15.2% at 4)
    min_prior_strength: float = Field(
        2.0,
        ge=0,
        le=1e4,
        description=(
            "selection only: the estimated prior weighs at least this many rollouts when "
            "scoring candidates, so one all-pass or all-fail group (or none) does not write a "
            "prompt off; /predict reports the calibrated estimate"
        ),
    )
    refit_every: int | None = Field(
        None,
        ge=1,
        le=INT32_MAX,
        description=(
            "new outcome groups between predictor fits; unset: two steps' worth of the run's "
            "groups, between 256 and 1,000"
        ),
    )
    fit_min_outcomes: int = Field(
        256, ge=1, le=INT32_MAX, description="outcome groups before the first fit"
    )
    drift_correction: bool = Field(
        True, description="shift estimates of seen prompts by how far served ones came out above"
    )
    tracking: bool = Field(
        True,
        description=(
            "shift each seen prompt's estimate by the training it has had since its groups "
            "(its own, its nearest neighbours', the run's), with logit gains fitted on the run's "
            "re-served groups at each refit; until 200 of those, drift_correction's one shift"
        ),
    )
    seed: int = Field(
        0, ge=0, le=INT32_MAX, description="seeds the epoch order and random tie-breaks"
    )

    @field_validator(
        *("warmup_outcomes", "n_min", "n_max", "thompson_draws", "refit_every"),
        *("fit_min_outcomes", "seed"),
        mode="before",
    )
    @classmethod
    def _whole(cls, value: Any) -> Any:
        return whole(value)

    @model_validator(mode="after")
    def _consistent(self) -> SelectionConfig:
        if self.window_lo > self.window_hi:
            raise ValueError(f"window_lo {self.window_lo} is above window_hi {self.window_hi}")
        if self.n_max is not None and self.n_max < self.n_min:
            raise ValueError(f"n_max {self.n_max} is below n_min {self.n_min}")
        return self
