"""`POST /runs/{run}/route`: `/predict`'s estimate, then a tier per item."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import ReadSessionDep, ScopeDep, SessionDep, StateDep
from service.policy import SelectionConfig
from service.predictions import service as predictions
from service.routing import log, service
from service.routing.schemas import RouteRequest, RouteResponse
from service.runs import service as runs

router = APIRouter(prefix="/runs", tags=["routing"])


@router.post("/{run}/route", response_model=RouteResponse)
async def route_queries(
    run: str,
    body: RouteRequest,
    session: ReadSessionDep,
    writes: SessionDep,
    scope: ScopeDep,
    state: StateDep,
) -> RouteResponse:
    """Stored prompts are routed on their estimate with history; raw texts on the prior alone.

    Each answered call adds one route-log row (its tier counts), committed before the answer.
    """
    r = await runs.get_by_name(session, scope, run)
    policy = SelectionConfig.model_validate(r.selection)
    if body.prompt_ids is not None:
        predicted = await predictions.for_prompts(
            session, state.hot, state.predictor_cache, r, policy, body.prompt_ids
        )
    else:
        predicted = await predictions.for_texts(
            session, state.predictor_cache, state.embedders, r, policy, body.texts or []
        )
    routed = service.route(predicted, body.tiers)
    log.record(writes, r.id, body.step, routed)
    return routed
