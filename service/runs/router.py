"""HTTP surface of runs."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Response, status

from service.deps import ReadSessionDep, ScopeDep, SessionDep, StateDep
from service.openapi import errors
from service.predictor.fit import FitJobs
from service.runs import service
from service.runs.schemas import RunCreate, RunRead

router = APIRouter(prefix="/runs", tags=["runs"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=RunRead,
    responses={
        200: {"model": RunRead, "description": "it existed already with these settings"},
        **errors(404, 409, 503),
    },
)
async def create_run(
    body: RunCreate,
    session: SessionDep,
    scope: ScopeDep,
    state: StateDep,
    response: Response,
    background: BackgroundTasks,
) -> RunRead:
    run, created = await service.create(session, scope, body, state.hot)
    if not created:
        response.status_code = status.HTTP_200_OK
    elif run.init_from is not None:
        background.add_task(_fit_soon, state.fits, run.id)
    return await service.read(session, run)


@router.get("/{run}", response_model=RunRead)
async def get_run(run: str, session: ReadSessionDep, scope: ScopeDep) -> RunRead:
    return await service.read(session, await service.get_by_name(session, scope, run))


async def _fit_soon(fits: FitJobs, run_id: int) -> None:
    """Async on purpose: Starlette runs a plain function in a thread, off the event loop."""
    fits.schedule(run_id)
