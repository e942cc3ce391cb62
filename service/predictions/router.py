"""Predict pass rates for stored prompts or raw texts, and show the current predictor."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import ReadSessionDep, ScopeDep, StateDep
from service.openapi import errors
from service.policy import SelectionConfig
from service.predictions import service
from service.predictions.schemas import PredictorRead, PredictRequest, PredictResponse
from service.runs import service as runs

router = APIRouter(prefix="/runs", tags=["predictor"])


@router.post("/{run}/predict", response_model=PredictResponse, responses=errors(503))
async def predict_pass_rates(
    run: str, body: PredictRequest, session: ReadSessionDep, scope: ScopeDep, state: StateDep
) -> PredictResponse:
    """Stored prompts get prior plus history; raw texts (routing queries) get the prior alone."""
    r = await runs.get_by_name(session, scope, run)
    policy = SelectionConfig.model_validate(r.selection)
    if body.prompt_ids is not None:
        return await service.for_prompts(
            session, state.hot, state.predictor_cache, r, policy, body.prompt_ids
        )
    return await service.for_texts(
        session, state.predictor_cache, state.embedders, r, policy, body.texts or []
    )


@router.get("/{run}/predictor", response_model=PredictorRead)
async def get_predictor(run: str, session: ReadSessionDep, scope: ScopeDep) -> PredictorRead:
    return await service.current(session, await runs.get_by_name(session, scope, run))
