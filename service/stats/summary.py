"""A run's statistics summarised: what the summary endpoint and the admin pages show."""

from __future__ import annotations

import numpy as np
from sqlalchemy import Integer, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.hotstats.catch_up import catch_up
from service.hotstats.store import HotStore
from service.models import Dataset, Outcome, Run
from service.policy import SelectionConfig
from service.stats.schemas import HistogramBin, RunSummary, StepShare


async def summarize(
    session: AsyncSession,
    hot: HotStore,
    r: Run,
    policy: SelectionConfig,
    *,
    bins: int = 10,
    last_steps: int = 1000,
) -> RunSummary:
    """Observed pass rates of seen prompts, zero-variance share overall and per step."""
    ds = await session.get_one(Dataset, r.dataset_id)
    await catch_up(session, hot, r.id, r.outcome_seq, policy.discount)
    all_stats = await hot.get_all(r.id)
    rates = np.array([s.successes / s.rollouts for s in all_stats.values()], dtype=np.float64)
    counts, edges = np.histogram(rates, bins=bins, range=(0.0, 1.0))
    by_step = await session.execute(
        select(
            Outcome.step,
            func.count(),
            func.sum(cast(Outcome.zero_variance, Integer)),
        )
        .where(Outcome.run_id == r.id)
        .group_by(Outcome.step)
        .order_by(Outcome.step.desc())
        .limit(last_steps)
    )
    steps = [
        StepShare(step=step, groups=n, zero_variance_share=(zv or 0) / n)
        for step, n, zv in reversed(by_step.all())
    ]
    return RunSummary(
        run=r.name,
        pool=ds.prompt_count,
        prompts_seen=len(all_stats),
        groups=r.groups,
        rollouts=r.rollouts,
        zero_variance_share=r.zero_variance_groups / r.groups if r.groups else None,
        all_fail_prompts=int((rates == 0).sum()),
        all_pass_prompts=int((rates == 1).sum()),
        pass_rate_histogram=[
            HistogramBin(lo=float(edges[i]), hi=float(edges[i + 1]), prompts=int(c))
            for i, c in enumerate(counts)
        ],
        zero_variance_by_step=steps,
    )
