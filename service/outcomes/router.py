"""HTTP surface of outcome reporting."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks

from service.deps import ScopeDep, SessionDep, StateDep
from service.outcomes import service
from service.outcomes.schemas import OutcomeAck, OutcomeReport
from service.runs import service as runs
from service.state import AppState

router = APIRouter(prefix="/runs", tags=["outcomes"])


@router.post("/{run}/outcomes", response_model=OutcomeAck)
async def report_outcomes(
    run: str,
    body: OutcomeReport,
    session: SessionDep,
    scope: ScopeDep,
    state: StateDep,
    background: BackgroundTasks,
) -> OutcomeAck:
    r = await runs.get_by_name(session, scope, run)
    ack = await service.ingest(session, r, body)
    state.metrics.groups_ingested.inc(ack.accepted)
    state.metrics.groups_duplicate.inc(ack.duplicates)
    if r.groups:
        state.metrics.zero_variance_share.labels(run=r.name).set(r.zero_variance_groups / r.groups)
    if ack.accepted:
        # after the commit: warm the hot stats, then refit the predictor if enough is new
        background.add_task(after_ingest, state, r.id)
    return ack


async def after_ingest(state: AppState, run_id: int) -> None:
    state.background.submit("refresh", run_id)
    state.fits.schedule(run_id)
