"""Open and close the shared state, the same for an API process and a `depo worker`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.background import Background, LocalBackground, QueueBackground, lock_seconds
from service.config import Settings
from service.db import create_engine, create_sessionmaker
from service.embedding import Embedders, EmbeddingJobs
from service.hotstats import catch_up as hotstats
from service.hotstats.store import create_store
from service.jobs import Jobs
from service.metrics import Metrics
from service.predictor.cache import PredictorCache
from service.predictor.fit import FitJobs
from service.state import AppState

if TYPE_CHECKING:
    from dramatiq.brokers.redis import RedisBroker

log = logging.getLogger(__name__)


async def open_state(
    settings: Settings, metrics: Metrics, broker: RedisBroker | None = None
) -> AppState:
    """Engines, caches and the background: in-process, or the queue with DEPO_WORKERS
    (`broker`: a worker's own, which it consumes with)."""
    engine = create_engine(settings)
    read_engine = create_engine(settings, readonly=True) if settings.is_sqlite else engine
    hot = create_store(
        settings.redis_url,
        await _cache_prefix(settings, engine),
        settings.redis_timeout_seconds,
    )
    sessionmaker = create_sessionmaker(engine)
    read_sessionmaker = create_sessionmaker(read_engine)
    embedders = Embedders()
    jobs = Jobs()
    background: Background = (
        QueueBackground(settings, hot, broker) if settings.workers else LocalBackground(jobs)
    )
    embedding_jobs = EmbeddingJobs(sessionmaker, read_sessionmaker, embedders, background)
    cache = PredictorCache()
    fits = FitJobs(
        sessionmaker=sessionmaker,
        read_sessionmaker=read_sessionmaker,
        hot=hot,
        cache=cache,
        background=background,
        refit_min_seconds=settings.refit_min_seconds,
        threads=settings.fit_threads,
        metrics=metrics,
        lock_seconds=lock_seconds(settings),
    )
    embedding_jobs.on_embedded = fits.fit_runs_of
    background.handle("fit", fits.maybe_fit)
    background.handle("embed", embedding_jobs.run)
    background.handle("refresh", lambda run_id: hotstats.refresh(read_sessionmaker, hot, run_id))
    return AppState(
        settings=settings,
        engine=engine,
        read_engine=read_engine,
        sessionmaker=sessionmaker,
        read_sessionmaker=read_sessionmaker,
        hot=hot,
        metrics=metrics,
        embedders=embedders,
        embedding_jobs=embedding_jobs,
        jobs=jobs,
        background=background,
        predictor_cache=cache,
        fits=fits,
    )


async def close_state(state: AppState) -> None:
    await state.background.close()
    await state.jobs.close()
    await state.hot.close()
    await state.engine.dispose()
    await state.read_engine.dispose()


async def _cache_prefix(settings: Settings, engine: AsyncEngine) -> str:
    """Keys name the database they mirror, so a recreated one never reads another's stats."""
    if engine.dialect.name != "postgresql":
        return settings.redis_prefix
    async with engine.connect() as conn:
        oid = (
            await conn.execute(
                text("SELECT oid FROM pg_database WHERE datname = current_database()")
            )
        ).scalar_one()
    return f"{settings.redis_prefix}:db{oid}"
