"""Predictor figures for the pages: versions over time and a reliability diagram of one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import Outcome, PredictorVersion

BINS = 10


@dataclass(frozen=True)
class VersionRow:
    version: int
    trained_on: int
    fitted_at: datetime
    calibration: dict[str, Any]


async def history(session: AsyncSession, run_id: int) -> list[VersionRow]:
    """Every version's calibration, without the blobs (megabytes each)."""
    rows = await session.execute(
        select(
            PredictorVersion.version,
            PredictorVersion.trained_on,
            PredictorVersion.fitted_at,
            PredictorVersion.calibration,
        )
        .where(PredictorVersion.run_id == run_id)
        .order_by(PredictorVersion.version)
    )
    return [VersionRow(v, t, f, c or {}) for v, t, f, c in rows.tuples()]


@dataclass(frozen=True)
class Reliability:
    """How version `scored` did on the prompts of groups logged after its fit, up to `upto`."""

    scored: int
    upto: int
    bins: list[tuple[float, float, float, float, int]]  # lo, hi, mean predicted, observed, n

    @property
    def prompts(self) -> int:
        return sum(b[4] for b in self.bins)


ReliabilityCache = dict[tuple[int, int], "Reliability | None"]
"""(run id, newest version): the figures are fixed once that version exists."""


async def reliability(
    session: AsyncSession, run_id: int, newest: VersionRow, cache: ReliabilityCache
) -> Reliability | None:
    """The newest version's scored one, binned like the fit scored it (fit.py `_calibration`)."""
    key = (run_id, newest.version)
    if key in cache:
        return cache[key]
    scored = newest.calibration.get("scored_version")
    out = None
    if scored is not None:
        prev = (
            await session.execute(
                select(PredictorVersion.trained_on, PredictorVersion.priors).where(
                    PredictorVersion.run_id == run_id, PredictorVersion.version == int(scored)
                )
            )
        ).one_or_none()
        if prev is not None and prev.priors:
            out = await _binned(session, run_id, int(scored), prev.trained_on, newest, prev.priors)
    cache[key] = out
    return out


async def _binned(
    session: AsyncSession, run_id: int, scored: int, after: int, newest: VersionRow, blob: bytes
) -> Reliability:
    rows = (
        await session.execute(
            select(Outcome.prompt_idx, func.sum(Outcome.n), func.sum(Outcome.successes))
            .where(
                Outcome.run_id == run_id,
                Outcome.seq > after,
                Outcome.seq <= newest.trained_on,
            )
            .group_by(Outcome.prompt_idx)
        )
    ).all()
    pri = np.frombuffer(blob, dtype=np.float32).astype(np.float64)
    if rows:
        idx, n, k = (np.array(c, dtype=np.float64) for c in zip(*rows, strict=True))
        ok = (idx < len(pri)) & (n > 0)
        idx, n, k = idx[ok].astype(np.int64), n[ok], k[ok]
        pred, obs = pri[idx], k / n
        ok = ~np.isnan(pred)
        pred, obs = pred[ok], obs[ok]
    else:
        pred = obs = np.zeros(0)
    which = np.minimum((pred * BINS).astype(np.int64), BINS - 1)
    bins = []
    for b in range(BINS):
        m = which == b
        if m.any():
            bins.append(
                (
                    b / BINS,
                    (b + 1) / BINS,
                    float(pred[m].mean()),
                    float(obs[m].mean()),
                    int(m.sum()),
                )
            )
    return Reliability(scored, newest.trained_on, bins)
