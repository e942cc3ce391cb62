"""`GET /runs/{run}/profile`: the run's view of its dataset's difficulty, whole and by a field."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.deps import ReadSessionDep, ScopeDep, StateDep
from service.profile.schemas import ProfileQuery, ProfileResponse
from service.profile.service import build

router = APIRouter(prefix="/runs", tags=["profile"])


@router.get("/{run}/profile", response_model=ProfileResponse)
async def run_profile(
    run: str,
    query: Annotated[ProfileQuery, Query()],
    session: ReadSessionDep,
    scope: ScopeDep,
    state: StateDep,
) -> ProfileResponse:
    """Histograms of estimated and observed pass rates, overall and per value of `by`."""
    return await build(session, state, scope, run, query)
