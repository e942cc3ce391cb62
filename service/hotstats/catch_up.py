"""Bring the hot store up to the log's position; the log is the truth, the store a cache."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.hotstats.store import Group, HotStore, Position
from service.models import Outcome, Run
from service.policy import SelectionConfig

log = logging.getLogger(__name__)

CATCH_UP_CHUNK = 50_000


async def catch_up(
    session: AsyncSession, store: HotStore, run_id: int, target_seq: int, discount: float
) -> int:
    """Fold log rows (applied, target] into the store; returns how many rows were applied.

    Stats whose position is not on this log (a restore or failover put the log behind them,
    or a different row at their `seq`) are dropped and rebuilt, whichever side is ahead. The
    first check trusts `session`'s view of the log, so read it in a snapshot no older than the
    store: on SQLite a read transaction keeps the snapshot of its first query.
    """
    applied_rows = 0
    checked = False
    while True:
        at = await store.position(run_id)
        if not await _on_log(session, run_id, at):
            if checked and at.seq > target_seq:
                # on the log a moment ago: another reader folded rows committed after this
                # session's snapshot (SQLite's deferred reads), not a restore
                return applied_rows
            log.warning(
                "hot stats of run %s are at seq %s, which the log does not hold: rebuilding",
                run_id,
                at.seq,
            )
            await store.reset(run_id, at)
            continue
        checked = True
        if at.seq >= target_seq:  # ahead on this log: rows committed since the caller looked
            return applied_rows
        if at.seq == 0 and target_seq > CATCH_UP_CHUNK:
            log.info("rebuilding hot stats of run %s from %s logged groups", run_id, target_seq)
        rows = (
            await session.execute(
                select(
                    Outcome.seq,
                    Outcome.prompt_idx,
                    Outcome.step,
                    Outcome.n,
                    Outcome.successes,
                    Outcome.log_token,
                )
                .where(
                    Outcome.run_id == run_id,
                    Outcome.seq > at.seq,
                    Outcome.seq <= target_seq,
                )
                .order_by(Outcome.seq)
                .limit(CATCH_UP_CHUNK)
            )
        ).all()
        if not rows:
            raise RuntimeError(f"outcome log of run {run_id} has no rows after seq {at.seq}")
        groups: list[Group] = [(r.prompt_idx, r.step, r.n, r.successes) for r in rows]
        head = Position(rows[-1].seq, rows[-1].log_token or "")
        if await store.apply(run_id, at, head, groups, discount):
            applied_rows += len(rows)


async def _on_log(session: AsyncSession, run_id: int, at: Position) -> bool:
    """Whether the log holds the row the stats last folded, from the same ingest."""
    if at.seq == 0:
        return True
    token = (
        await session.execute(
            select(Outcome.log_token).where(Outcome.run_id == run_id, Outcome.seq == at.seq)
        )
    ).one_or_none()
    return token is not None and (token[0] or "") == at.token


async def refresh(
    sessionmaker: async_sessionmaker[AsyncSession], store: HotStore, run_id: int
) -> None:
    """Warm the store off the request path after an ingest; readers catch up anyway."""
    async with sessionmaker() as session:
        run = await session.get_one(Run, run_id)
        discount = SelectionConfig.model_validate(run.selection).discount
        await catch_up(session, store, run_id, run.outcome_seq, discount)
