"""Bodies of the predictor endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.common import ClientId, Text


def _exactly_one(schema: dict[str, Any]) -> None:
    """Say in the schema what `_one_of` checks: one list, the other absent or null."""
    schema["oneOf"] = [
        {"required": [key], "properties": {key: {"type": "array"}}}
        for key in ("prompt_ids", "texts")
    ]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_exactly_one)

    prompt_ids: list[ClientId] | None = Field(None, min_length=1, max_length=100_000)
    texts: list[Text] | None = Field(None, min_length=1, max_length=10_000)

    @model_validator(mode="after")
    def _one_of(self) -> PredictRequest:
        if (self.prompt_ids is None) == (self.texts is None):
            raise ValueError("send exactly one of prompt_ids or texts")
        return self


class Prediction(BaseModel):
    id: str | None = None
    pass_rate: float
    uncertainty: float
    p_informative: float
    prior: float | None = Field(
        None, description="the predictor's rate before this prompt's history"
    )
    observations: int = 0
    model_version: int | None = Field(
        None, description="the predictor version behind `prior`, as at the top of the response"
    )


class PredictResponse(BaseModel):
    model_version: int | None
    items: list[Prediction]


class PredictorRead(BaseModel):
    version: int | None
    trained_on: int
    fitted_at: datetime | None
    calibration: dict[str, Any]
    outcomes_since: int
    next_fit_at: int = Field(
        description="the run's outcome count at which the next fit is due (it runs soon after)"
    )
    init_from: str | None
    history_from: str | None = None
