"""Read side of a run's statistics: one prompt in detail, or the whole run summarised."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Query
from sqlalchemy import select

from service import estimates
from service.datasets import service as datasets
from service.deps import ReadSessionDep, ScopeDep, StateDep
from service.models import Dataset, Outcome
from service.openapi import errors
from service.policy import SelectionConfig
from service.runs import service as runs
from service.stats.schemas import (
    Estimate,
    HistoryEntry,
    PromptStatsRead,
    RunSummary,
)
from service.stats.summary import summarize

router = APIRouter(prefix="/runs", tags=["stats"])


@router.get(
    "/{run}/prompts/{prompt_id:path}", response_model=PromptStatsRead, responses=errors(503)
)
async def prompt_stats(
    run: str, prompt_id: str, session: ReadSessionDep, scope: ScopeDep, state: StateDep
) -> PromptStatsRead:
    r = await runs.get_by_name(session, scope, run)
    cfg = SelectionConfig.model_validate(r.selection)
    ds = await session.get_one(Dataset, r.dataset_id)
    prompt = await datasets.get_prompt(session, ds, prompt_id)
    view = await estimates.for_run(session, state.hot, state.predictor_cache, r, cfg)
    rows = await session.execute(
        select(Outcome)
        .where(Outcome.run_id == r.id, Outcome.prompt_id == prompt.id)
        .order_by(Outcome.step, Outcome.seq)
    )
    history = [
        HistoryEntry(
            step=o.step,
            n=o.n,
            successes=o.successes,
            reward_mean=o.reward_mean,
            batch_id=o.batch_id,
            received_at=o.received_at,
        )
        for o in rows.scalars()
    ]
    est = await view.at(np.array([prompt.idx], dtype=np.int64))
    [s] = await state.hot.get_many(r.id, [prompt.idx])  # the full counts, beside the estimate
    a, b = float(est.alpha[0]), float(est.beta[0])
    return PromptStatsRead(
        id=prompt.client_id,
        observations=s.groups if s else 0,
        rollouts=s.rollouts if s else 0,
        successes=s.successes if s else 0,
        observed_pass_rate=s.pass_rate if s else None,
        last_step=s.last_step if s else None,
        history=history,
        estimate=Estimate(
            pass_rate=a / (a + b),
            alpha=a,
            beta=b,
            uncertainty=float(est.std[0]),
            p_informative=float(est.p_mixed(r.group_size)[0]),
        ),
    )


@router.get("/{run}/summary", response_model=RunSummary, responses=errors(503))
async def run_summary(
    run: str,
    session: ReadSessionDep,
    scope: ScopeDep,
    state: StateDep,
    bins: int = Query(10, ge=1, le=100),
    last_steps: int = Query(1000, ge=1, le=100_000),
) -> RunSummary:
    r = await runs.get_by_name(session, scope, run)
    policy = SelectionConfig.model_validate(r.selection)
    return await summarize(session, state.hot, r, policy, bins=bins, last_steps=last_steps)
