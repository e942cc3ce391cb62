"""Bodies of the routing endpoint."""

from __future__ import annotations

import itertools

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.common import ClientId, Name, Text

MAX_TIERS = 16


class Tier(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    max_difficulty: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="the hardest query this tier takes (difficulty = 1 - predicted pass rate); "
        "unset only on the last tier: it takes the rest",
    )


class RouteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt_ids: list[ClientId] | None = Field(None, min_length=1, max_length=100_000)
    texts: list[Text] | None = Field(None, min_length=1, max_length=10_000)
    tiers: list[Tier] = Field(min_length=1, max_length=MAX_TIERS)
    step: int | None = Field(
        None,
        ge=0,
        le=2**31 - 1,
        description="the caller's training step, if any: the route log keeps it (admin pages)",
    )

    @field_validator("tiers")
    @classmethod
    def _ordered(cls, tiers: list[Tier]) -> list[Tier]:
        """Cheapest first: each tier takes what the ones before it did not."""
        names = [t.name for t in tiers]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"tier names must be unique; {twice} appear more than once")
        bounds = [t.max_difficulty for t in tiers]
        if any(b is None for b in bounds[:-1]):
            raise ValueError("only the last tier may leave max_difficulty unset")
        set_bounds = [b for b in bounds if b is not None]
        if any(a >= b for a, b in itertools.pairwise(set_bounds)):
            raise ValueError(
                f"max_difficulty must increase strictly from tier to tier, got {set_bounds}"
            )
        return tiers

    @model_validator(mode="after")
    def _one_of(self) -> RouteRequest:
        if (self.prompt_ids is None) == (self.texts is None):
            raise ValueError("send exactly one of prompt_ids or texts")
        return self


class RoutedItem(BaseModel):
    id: str | None = None
    tier: str | None = Field(None, description="null: harder than every tier's max_difficulty")
    difficulty: float
    pass_rate: float
    uncertainty: float


class TierShare(BaseModel):
    name: str
    max_difficulty: float | None
    count: int
    share: float = Field(description="the share of this request's items routed to the tier")
    expected_pass_rate: float | None = Field(
        None, description="the mean predicted pass rate of its items; null when it has none"
    )


class RouteResponse(BaseModel):
    model_version: int | None
    items: list[RoutedItem]
    tiers: list[TierShare]
    unrouted: int = Field(description="items harder than every tier's max_difficulty")
