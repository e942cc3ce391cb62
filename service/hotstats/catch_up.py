"""Bring the hot store up to the log's position; the log is the truth, the store a cache."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.hotstats.store import Group, HotStore
from service.models import Outcome, Run
from service.policy import SelectionConfig

log = logging.getLogger(__name__)

CATCH_UP_CHUNK = 50_000


async def catch_up(
    session: AsyncSession, store: HotStore, run_id: int, target_seq: int, discount: float
) -> int:
    """Fold log rows (applied, target] into the store; returns how many rows were applied."""
    applied_rows = 0
    while True:
        applied = await store.applied_seq(run_id)
        if applied >= target_seq:
            return applied_rows
        if applied == 0 and target_seq > CATCH_UP_CHUNK:
            log.info("rebuilding hot stats of run %s from %s logged groups", run_id, target_seq)
        rows = (
            await session.execute(
                select(Outcome.seq, Outcome.prompt_idx, Outcome.step, Outcome.n, Outcome.successes)
                .where(
                    Outcome.run_id == run_id,
                    Outcome.seq > applied,
                    Outcome.seq <= target_seq,
                )
                .order_by(Outcome.seq)
                .limit(CATCH_UP_CHUNK)
            )
        ).all()
        if not rows:
            raise RuntimeError(f"outcome log of run {run_id} has no rows after seq {applied}")
        groups: list[Group] = [(r.prompt_idx, r.step, r.n, r.successes) for r in rows]
        if await store.apply(run_id, applied, rows[-1].seq, groups, discount):
            applied_rows += len(rows)


async def refresh(
    sessionmaker: async_sessionmaker[AsyncSession], store: HotStore, run_id: int
) -> None:
    """Warm the store off the request path after an ingest; readers catch up anyway."""
    async with sessionmaker() as session:
        run = await session.get_one(Run, run_id)
        discount = SelectionConfig.model_validate(run.selection).discount
        await catch_up(session, store, run_id, run.outcome_seq, discount)
