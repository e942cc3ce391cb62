"""A run's log folded into per-step and per-prompt totals, kept per process and topped up.

The pages read these totals instead of the outcome log: the first view of a run aggregates
its log once (SQL GROUP BY), later views fold in only the rows past the last seq they saw
(`ix` on (run_id, seq)), so a run with a million groups costs a few small queries per view.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt
from sqlalchemy import Integer, case, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import Outcome, Run

BINS = 10  # pass-rate bins of a step's groups (the heatmap's rows)
F64 = npt.NDArray[np.float64]

# columns of StepTotals.table, one row per step
GROUPS, ZERO, ROLLOUTS, ZERO_ROLLOUTS, SUCCESSES = range(5)
HIST = 5  # BINS columns from here: groups per pass-rate bin


@dataclass
class RunTotals:
    """Totals of a run's log up to `seq`; steps sorted, one row each."""

    seq: int = 0
    steps: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    table: F64 = field(default_factory=lambda: np.zeros((0, HIST + BINS)))
    prompt_groups: F64 = field(default_factory=lambda: np.zeros(0))
    prompt_rollouts: F64 = field(default_factory=lambda: np.zeros(0))
    prompt_successes: F64 = field(default_factory=lambda: np.zeros(0))
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def observed_rates(self) -> F64:
        """Observed pass rate of every prompt with a group, as the summary endpoint gives it."""
        seen = self.prompt_rollouts > 0
        out: F64 = self.prompt_successes[seen] / self.prompt_rollouts[seen]
        return out


class RunLogCache:
    """One RunTotals per (run id, created_at): a re-created run never reads a stale entry."""

    def __init__(self) -> None:
        self._runs: dict[tuple[int, datetime], RunTotals] = {}

    async def totals(self, session: AsyncSession, run: Run, pool: int) -> RunTotals:
        t = self._runs.setdefault((run.id, run.created_at), RunTotals())
        async with t.lock:
            if t.seq < run.outcome_seq:
                await _fold_in(session, t, run.id, run.outcome_seq, pool)
        return t


async def _fold_in(session: AsyncSession, t: RunTotals, run_id: int, upto: int, pool: int) -> None:
    rows = (t.seq < Outcome.seq) & (Outcome.seq <= upto) & (Outcome.run_id == run_id)
    bucket = (Outcome.successes * BINS) // Outcome.n
    zero = cast(Outcome.zero_variance, Integer)
    by_step = (
        await session.execute(
            select(
                Outcome.step,
                bucket,
                func.count(),
                func.sum(zero),
                func.sum(Outcome.n),
                func.sum(case((Outcome.zero_variance, Outcome.n), else_=0)),
                func.sum(Outcome.successes),
            )
            .where(rows)
            .group_by(Outcome.step, bucket)
        )
    ).all()
    by_prompt = (
        await session.execute(
            select(
                Outcome.prompt_idx, func.count(), func.sum(Outcome.n), func.sum(Outcome.successes)
            )
            .where(rows)
            .group_by(Outcome.prompt_idx)
        )
    ).all()
    if by_step:
        raw = np.array([tuple(float(v or 0) for v in r) for r in by_step], dtype=np.float64)
        new_steps = raw[:, 0].astype(np.int64)
        steps = np.union1d(t.steps, new_steps)
        table = np.zeros((len(steps), HIST + BINS))
        table[np.searchsorted(steps, t.steps)] = t.table
        at = np.searchsorted(steps, new_steps)
        np.add.at(table[:, :HIST], at, raw[:, 2:7])
        np.add.at(table, (at, HIST + np.minimum(raw[:, 1].astype(np.int64), BINS - 1)), raw[:, 2])
        t.steps, t.table = steps, table
    if by_prompt:
        raw = np.array([tuple(float(v or 0) for v in r) for r in by_prompt], dtype=np.float64)
        idx = raw[:, 0].astype(np.int64)
        size = max(pool, int(idx.max()) + 1, len(t.prompt_groups))
        for name, col in (("prompt_groups", 1), ("prompt_rollouts", 2), ("prompt_successes", 3)):
            grown = np.zeros(size)
            old = getattr(t, name)
            grown[: len(old)] = old
            np.add.at(grown, idx, raw[:, col])
            setattr(t, name, grown)
    t.seq = upto
