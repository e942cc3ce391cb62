"""What the admin pages show, read from the same services the API uses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
from sqlalchemy import func, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from service import estimates
from service.admin.predictor import ReliabilityCache
from service.admin.runlog import RunLogCache
from service.hotstats.store import HotStore
from service.models import Dataset, PredictorVersion, Prompt, Run
from service.policy import SelectionConfig
from service.predictor.cache import PredictorCache
from service.scope import Scope

POOL_SAMPLE = 20_000  # prompts estimated for the pool-wide figures; enough for two decimals


class AdminCache:
    """Per-process figures the pages keep between views (see runlog.py)."""

    def __init__(self) -> None:
        self.logs = RunLogCache()
        self.reliability: ReliabilityCache = {}


@dataclass(frozen=True)
class RunRow:
    id: int
    namespace: str
    name: str
    dataset: str
    strategy: str
    group_size: int
    groups: int
    rollouts: int
    zero_variance_share: float | None
    predictor_version: int | None
    created_at: datetime


async def list_runs(
    session: AsyncSession, scope: Scope, dataset_id: int | None = None
) -> list[RunRow]:
    """Newest first, of the namespaces `scope` sees; only those over `dataset_id` when given."""
    newest = (
        select(PredictorVersion.run_id, func.max(PredictorVersion.version).label("version"))
        .group_by(PredictorVersion.run_id)
        .subquery()
    )
    rows = await session.execute(
        select(Run, Dataset.name, newest.c.version)
        .join(Dataset, Dataset.id == Run.dataset_id)
        .outerjoin(newest, newest.c.run_id == Run.id)
        .where(scope.visible(Run.namespace))
        .where(true() if dataset_id is None else Run.dataset_id == dataset_id)
        .order_by(Run.created_at.desc())
    )
    return [
        RunRow(
            id=r.id,
            namespace=r.namespace,
            name=r.name,
            dataset=ds,
            strategy=r.strategy,
            group_size=r.group_size,
            groups=r.groups,
            rollouts=r.rollouts,
            zero_variance_share=r.zero_variance_groups / r.groups if r.groups else None,
            predictor_version=version,
            created_at=r.created_at,
        )
        for r, ds, version in rows.tuples()
    ]


async def list_datasets(session: AsyncSession, scope: Scope) -> list[tuple[Dataset, int]]:
    """Each dataset `scope` sees, with how many of its prompts are embedded."""
    embedded = (
        select(Prompt.dataset_id, func.count(Prompt.embedding).label("n"))
        .group_by(Prompt.dataset_id)
        .subquery()
    )
    rows = await session.execute(
        select(Dataset, func.coalesce(embedded.c.n, 0))
        .outerjoin(embedded, embedded.c.dataset_id == Dataset.id)
        .where(scope.visible(Dataset.namespace))
        .order_by(Dataset.name, Dataset.namespace)
    )
    return [(d, int(n)) for d, n in rows.tuples()]


async def embedded_count(session: AsyncSession, dataset_id: int) -> int:
    stmt = select(func.count(Prompt.embedding)).where(Prompt.dataset_id == dataset_id)
    return int((await session.execute(stmt)).scalar_one())


@dataclass(frozen=True)
class PoolView:
    """The run's current estimate over its pool (a seeded sample of it when large)."""

    pool: int
    sampled: int
    pass_rates: npt.NDArray[np.float64]
    mixed: npt.NDArray[np.float64]  # P(a group of G is mixed) per sampled prompt

    @property
    def uniform_zero_variance(self) -> float:
        """The zero-variance share a uniform pick of the pool would give, by these estimates."""
        return float(1.0 - self.mixed.mean()) if len(self.mixed) else float("nan")


async def pool_view(
    session: AsyncSession,
    hot: HotStore,
    cache: PredictorCache,
    run: Run,
    policy: SelectionConfig,
    pool: int,
) -> PoolView:
    idx = np.arange(pool, dtype=np.int64)
    if pool > POOL_SAMPLE:
        idx = np.sort(np.random.default_rng(run.id).choice(pool, POOL_SAMPLE, replace=False))
    est = await (await estimates.for_run(session, hot, cache, run, policy)).at(idx)
    return PoolView(pool, len(idx), est.mean, est.p_mixed(run.group_size))


@dataclass(frozen=True)
class Savings:
    """This run's rollouts against two baselines, both priced by today's estimates of the pool.

    `vs_uniform`: zero-variance rollouts a uniform pick would have spent at this run's spend,
    less this run's own. `vs_dapo`: rollouts DAPO-style filtering (sample uniformly, drop
    zero-variance groups) would generate for this run's informative groups, less this run's.
    """

    groups: int
    informative_groups: int
    rollouts: int
    zero_variance_rollouts: int
    per_informative: float | None
    uniform_zero_variance: float | None
    uniform_per_informative: float | None
    vs_uniform: float | None
    vs_dapo: float | None


def savings(run: Run, view: PoolView, zero_variance_rollouts: int) -> Savings:
    informative = run.groups - run.zero_variance_groups
    per = run.rollouts / informative if informative else None
    zv_u = view.uniform_zero_variance
    known = 0.0 <= zv_u <= 1.0
    uniform = run.group_size / (1.0 - zv_u) if known and zv_u < 1.0 else None
    return Savings(
        groups=run.groups,
        informative_groups=informative,
        rollouts=run.rollouts,
        zero_variance_rollouts=zero_variance_rollouts,
        per_informative=per,
        uniform_zero_variance=zv_u if known else None,
        uniform_per_informative=uniform,
        vs_uniform=zv_u * run.rollouts - zero_variance_rollouts if known and run.groups else None,
        vs_dapo=informative * uniform - run.rollouts
        if uniform is not None and run.groups
        else None,
    )
