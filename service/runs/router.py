"""HTTP surface of runs."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from service.deps import SessionDep
from service.runs import service
from service.runs.schemas import RunCreate, RunRead

router = APIRouter(prefix="/runs", tags=["runs"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=RunRead)
async def create_run(body: RunCreate, session: SessionDep, response: Response) -> RunRead:
    run, created = await service.create(session, body)
    if not created:
        response.status_code = status.HTTP_200_OK
    return await service.read(session, run)


@router.get("/{run}", response_model=RunRead)
async def get_run(run: str, session: SessionDep) -> RunRead:
    return await service.read(session, await service.get_by_name(session, run))
