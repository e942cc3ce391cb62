"""Stored predictor versions: the newest is served, older ones keep their history only.

The request path reads the newest version's per-prompt priors, cached per process by version.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from service.estimator import PredictorState
from service.estimator.prior import Prior
from service.models import PredictorVersion, Run
from service.predictor import tracking
from service.predictor.cache import PredictorCache

KEEP_BLOBS = 3


async def latest(
    session: AsyncSession, run_id: int, *, blobs: bool = True
) -> PredictorVersion | None:
    """The newest version; `blobs=False` leaves model, priors and replay (megabytes) unloaded."""
    stmt = (
        select(PredictorVersion)
        .where(PredictorVersion.run_id == run_id)
        .order_by(PredictorVersion.version.desc())
        .limit(1)
    )
    if not blobs:
        stmt = stmt.options(
            defer(PredictorVersion.state),
            defer(PredictorVersion.priors),
            defer(PredictorVersion.tracking),
            defer(PredictorVersion.shifts),
            defer(PredictorVersion.mixed),
        )
    return (await session.execute(stmt)).scalar_one_or_none()


async def latest_version(session: AsyncSession, run_id: int) -> int | None:
    stmt = select(func.max(PredictorVersion.version)).where(PredictorVersion.run_id == run_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def priors(cache: PredictorCache, session: AsyncSession, run_id: int) -> Prior | None:
    """The newest version's predicted pass rate per prompt idx (NaN: not embedded at fit time)."""
    version = await latest_version(session, run_id)
    if version is None:
        return None
    cached = cache.priors.get(run_id)
    if cached is not None and cached.version == version:
        return cached
    row = (
        await session.execute(
            select(
                PredictorVersion.priors,
                PredictorVersion.calibration,
                PredictorVersion.shifts,
                PredictorVersion.mixed,
            ).where(PredictorVersion.run_id == run_id, PredictorVersion.version == version)
        )
    ).one()
    shifts = row.shifts
    if shifts is None and row.calibration.get("tracking_gain_own") is not None:
        # a version stored before shifts had a column of their own keeps them in its replay
        shifts = (
            await session.execute(
                select(PredictorVersion.tracking).where(
                    PredictorVersion.run_id == run_id, PredictorVersion.version == version
                )
            )
        ).scalar_one()
    prior = Prior(
        version=version,
        rates=np.frombuffer(row.priors, dtype=np.float32),
        drift=float(row.calibration.get("served_drift_logit", 0.0)),
        strength=row.calibration.get("prior_strength"),
        tracked=tracking.unpack_shifts(shifts),
        mixed=np.frombuffer(row.mixed, dtype=np.float32) if row.mixed else None,
        history_strength=row.calibration.get("history_strength"),
    )
    cache.priors[run_id] = prior
    return prior


async def model(
    cache: PredictorCache, session: AsyncSession, run_id: int
) -> tuple[int, PredictorState] | None:
    version = await latest_version(session, run_id)
    if version is None:
        return None
    cached = cache.states.get(run_id)
    if cached is None or cached[0] != version:
        blob = (
            await session.execute(
                select(PredictorVersion.state).where(
                    PredictorVersion.run_id == run_id, PredictorVersion.version == version
                )
            )
        ).scalar_one()
        cached = (version, PredictorState.from_bytes(blob))
        cache.states[run_id] = cached
    return cached


async def prune(session: AsyncSession, run_id: int, newest: int) -> None:
    """Drop the model and prior blobs of versions nobody reads any more; keep their history.

    Only the newest version is served, and a sparse n-gram state is about 2 MB; a run that
    refits every 1,000 outcomes would otherwise store that again and again. The last
    KEEP_BLOBS versions stay whole, so a replica that just read one can still load it.
    """
    await session.execute(
        update(PredictorVersion)
        .where(
            PredictorVersion.run_id == run_id,
            PredictorVersion.version <= newest - KEEP_BLOBS,
            func.length(PredictorVersion.state) > 0,
        )
        .values(state=b"", priors=b"", tracking=None, shifts=None, mixed=None)
        .execution_options(synchronize_session=False)
    )


async def source_state(session: AsyncSession, run: Run) -> PredictorState | None:
    """The newest state of the run `run` starts from: `init_from`, in its own namespace."""
    stmt = select(Run.id).where(Run.namespace == run.namespace, Run.name == run.init_from)
    src = (await session.execute(stmt)).scalar_one_or_none()
    if src is None:
        return None
    row = await latest(session, src)
    return PredictorState.from_bytes(row.state) if row is not None else None
