"""Heavy objects created once at startup and shared by every request."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.config import Settings
from service.datasets.embedding import Embedders, EmbeddingJobs
from service.jobs import Jobs
from service.observability.metrics import Metrics
from service.predictor.cache import PredictorCache
from service.stats.store import HotStore


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    read_sessionmaker: async_sessionmaker[AsyncSession]
    hot: HotStore
    metrics: Metrics
    embedders: Embedders
    embedding_jobs: EmbeddingJobs
    jobs: Jobs
    predictor_cache: PredictorCache = field(default_factory=PredictorCache)
