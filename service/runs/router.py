"""HTTP surface of runs."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Response, status

from service.deps import ReadSessionDep, SessionDep, StateDep
from service.predictor import service as predictor
from service.runs import service
from service.runs.schemas import RunCreate, RunRead
from service.state import AppState

router = APIRouter(prefix="/runs", tags=["runs"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=RunRead)
async def create_run(
    body: RunCreate,
    session: SessionDep,
    state: StateDep,
    response: Response,
    background: BackgroundTasks,
) -> RunRead:
    run, created = await service.create(session, body)
    if not created:
        response.status_code = status.HTTP_200_OK
    elif run.init_from is not None:
        background.add_task(_warm_start, state, run.id)
    return await service.read(session, run)


async def _warm_start(state: AppState, run_id: int) -> None:
    predictor.schedule_fit(state, run_id)


@router.get("/{run}", response_model=RunRead)
async def get_run(run: str, session: ReadSessionDep) -> RunRead:
    return await service.read(session, await service.get_by_name(session, run))
