"""Heavy objects created once at startup and shared by every request (the composition root).

Only infrastructure lives here, so no domain package that a router uses is imported by it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.background import Background
from service.config import Settings
from service.embedding import Embedders, EmbeddingJobs
from service.hotstats.store import HotStore
from service.jobs import Jobs
from service.metrics import Metrics
from service.predictor.cache import PredictorCache
from service.predictor.fit import FitJobs


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    read_engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    read_sessionmaker: async_sessionmaker[AsyncSession]
    hot: HotStore
    metrics: Metrics
    embedders: Embedders
    embedding_jobs: EmbeddingJobs
    jobs: Jobs
    background: Background
    predictor_cache: PredictorCache
    fits: FitJobs
