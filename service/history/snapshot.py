"""Copy a source run's per-prompt counts when a run is created, and load them back cached."""

from __future__ import annotations

import asyncio

import numpy as np
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.estimator.beta import PromptStats
from service.estimator.history import F64, Snapshot
from service.hotstats.catch_up import catch_up
from service.hotstats.store import HotStore
from service.models import Run, RunHistory
from service.policy import SelectionConfig

Dense = tuple[F64, F64]
_TRIES = 3


async def take(session: AsyncSession, hot: HotStore, source: Run) -> RunHistory:
    """The source's counts, caught up with its log and discounted to its newest step.

    Read between two equal positions of its hot stats, so the copy is the fold of one log
    prefix (`source_seq`), unless ingests kept moving it for `_TRIES` reads in a row.
    """
    discount = SelectionConfig.model_validate(source.selection).discount
    await catch_up(session, hot, source.id, source.outcome_seq, discount)
    for _ in range(_TRIES):
        before = await hot.position(source.id)
        stats = await hot.get_all(source.id)
        if await hot.position(source.id) == before:
            break
    step = max([source.max_step, 0, *(s.last_step for s in stats.values())])
    snap = await asyncio.to_thread(_discounted, stats, step, discount)
    return RunHistory(
        source_run_id=source.id,
        source_name=source.name,
        source_seq=before.seq,
        source_step=step,
        prompts=len(snap.idx),
        counts=snap.encode(),
    )


def _discounted(stats: dict[int, PromptStats], step: int, discount: float) -> Snapshot:
    idx = np.array(sorted(stats), dtype=np.int64)
    last = np.array([stats[i].last_step for i in idx], dtype=np.float64)
    decay = discount ** np.maximum(step - last, 0.0)
    s = np.array([stats[i].disc_successes for i in idx], dtype=np.float64) * decay
    f = np.array([stats[i].disc_failures for i in idx], dtype=np.float64) * decay
    return Snapshot(idx, s, f)


async def load(cache: dict[int, Dense], session: AsyncSession, run_id: int) -> Dense | None:
    """The run's snapshot by prompt idx; immutable once written, so cached per process."""
    if run_id in cache:
        return cache[run_id]
    blob = (
        await session.execute(select(RunHistory.counts).where(RunHistory.run_id == run_id))
    ).scalar_one_or_none()
    if blob is None:
        return None
    snap = Snapshot.decode(blob)
    dense = snap.dense(int(snap.idx.max()) + 1 if len(snap.idx) else 0)
    cache[run_id] = dense
    return dense
