"""Query and answer of the profile endpoint."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAX_BINS = 100
MAX_GROUPS = 200
TRACKED_VALUES = 10_000
"""Distinct values counted apart while streaming; values first met after these go to `other`."""


class ProfileQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="a top-level metadata field to group prompts by (`source`, `level`); "
        "unset: the whole dataset only",
    )
    bins: int = Field(10, ge=1, le=MAX_BINS, description="equal-width bins over [0, 1]")
    max_groups: int = Field(
        50, ge=1, le=MAX_GROUPS, description="the most prompts' values listed; the rest: `other`"
    )
    chunk: int = Field(5_000, ge=100, le=50_000, description="prompts read per database query")


class ProfileGroup(BaseModel):
    value: str | None = Field(
        description="the field's value (JSON text for numbers, booleans and null); null for "
        "the whole dataset, `other` and `missing`"
    )
    prompts: int
    seen: int = Field(description="prompts with at least one logged group in this run")
    mean_pass_rate: float | None = Field(description="mean estimated pass rate; null: none")
    mean_p_mixed: float | None = Field(
        description="mean P(a group of the run's group_size is mixed); null: no prompts"
    )
    observed_pass_rate: float | None = Field(
        description="successes / rollouts over its seen prompts; null: none seen"
    )
    estimated: list[int] = Field(description="prompts per bin of the estimated pass rate")
    observed: list[int] = Field(
        description="seen prompts per bin of their observed pass rate (successes / rollouts)"
    )


class ProfileResponse(BaseModel):
    run: str
    dataset: str
    group_size: int
    model_version: int | None
    step: int = Field(description="the step estimates are taken at (as export's X-Depo-Step)")
    by: str | None
    edges: list[float] = Field(description="bin edges, bins + 1 of them; the last bin is closed")
    overall: ProfileGroup
    groups: list[ProfileGroup] = Field(
        description="one per value of `by`, most prompts first (ties: by value), at most max_groups"
    )
    other: ProfileGroup | None = Field(
        description="every value beyond max_groups, summed; null when none"
    )
    missing: ProfileGroup | None = Field(
        description="prompts without the field (or without metadata); null when none or no `by`"
    )
    values: int = Field(description="distinct values of `by` met (counted up to 10,000)")
