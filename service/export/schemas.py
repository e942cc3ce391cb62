"""Query of the export endpoint: filters, ordering, format."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.exceptions import InvalidInput

ExportFormat = Literal["jsonl", "csv", "parquet"]
OrderKey = Literal["idx", "pass_rate", "uncertainty", "p_informative", "prior", "observations"]

MAX_ORDERED_LIMIT = 1_000_000
"""An ordered export keeps its best `limit` keys in memory (16 bytes each): 16 MB at most."""


class ExportQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: ExportFormat = "jsonl"
    min_pass_rate: float = Field(0.0, ge=0.0, le=1.0, description="lowest estimated pass rate")
    max_pass_rate: float = Field(1.0, ge=0.0, le=1.0, description="highest estimated pass rate")
    min_p_informative: float = Field(
        0.0, ge=0.0, le=1.0, description="least P(mixed group) at the run's group_size"
    )
    seen: bool | None = Field(
        None, description="true: prompts with at least one group; false: none yet; unset: all"
    )
    limit: int | None = Field(None, ge=1, le=2**31 - 1, description="at most this many rows")
    order_by: OrderKey = Field("idx", description="the key `limit` keeps the first rows of")
    descending: bool = False
    include_text: bool = False
    include_metadata: bool = True
    chunk: int = Field(5_000, ge=100, le=50_000, description="prompts read per database query")

    def check(self) -> None:
        """Rules across fields, as 422s naming the field at fault."""
        if self.min_pass_rate > self.max_pass_rate:
            raise InvalidInput(
                f"min_pass_rate {self.min_pass_rate} is above max_pass_rate {self.max_pass_rate}",
                field="min_pass_rate",
            )
        if self.order_by != "idx" or self.descending:
            if self.limit is None:
                raise InvalidInput(
                    f"ordering by {self.order_by!r} needs a limit (at most "
                    f"{MAX_ORDERED_LIMIT:,}): the service keeps only the best rows in memory",
                    field="limit",
                )
            if self.limit > MAX_ORDERED_LIMIT:
                raise InvalidInput(
                    f"limit {self.limit:,} is above {MAX_ORDERED_LIMIT:,} for an ordered export",
                    field="limit",
                )

    @property
    def filtered(self) -> bool:
        return (
            self.min_pass_rate > 0.0
            or self.max_pass_rate < 1.0
            or self.min_p_informative > 0.0
            or self.seen is not None
        )
