"""HTTP surface of batch serving."""

from __future__ import annotations

from fastapi import APIRouter

from service.batches import service
from service.batches.schemas import BatchRequest, BatchResponse
from service.deps import ScopeDep, SessionDep, StateDep
from service.openapi import errors
from service.runs import service as runs

router = APIRouter(prefix="/runs", tags=["batches"])


@router.post("/{run}/batches", response_model=BatchResponse, responses=errors(409, 503))
async def serve_batch(
    run: str, body: BatchRequest, session: SessionDep, scope: ScopeDep, state: StateDep
) -> BatchResponse:
    r = await runs.get_by_name(session, scope, run)
    batch, created = await service.get_or_create(
        session,
        r,
        body,
        hot=state.hot,
        cache=state.predictor_cache,
        default_lease=state.settings.lease_seconds,
    )
    if created:
        state.metrics.batches_served.inc()
        state.metrics.prompts_served.inc(len(batch.prompts))
    return batch
