"""Create and look up runs; `lock` serialises everything that advances a run's log."""

from __future__ import annotations

from sqlalchemy import distinct, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.datasets import service as datasets
from service.db import insert_unless_raced
from service.estimator.history import DEFAULT_STRENGTH, MIN_PROMPTS, weight
from service.exceptions import Conflict, InvalidInput, NotFound
from service.history import snapshot
from service.hotstats.store import HotStore
from service.models import Dataset, Outcome, Run, RunHistory
from service.policy import SelectionConfig
from service.predictor import versions
from service.runs.schemas import HistoryRead, RunCreate, RunRead
from service.scope import Scope, find


async def _find(session: AsyncSession, namespace: str, name: str) -> Run | None:
    stmt = select(Run).where(Run.namespace == namespace, Run.name == name)
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_by_name(session: AsyncSession, scope: Scope, name: str) -> Run:
    """Another namespace's run is not found, as if it did not exist: every route asks here."""
    run = await find(session, Run, scope, name)
    if run is None:
        raise NotFound(f"run {name!r} not found")
    return run


async def lock(session: AsyncSession, run_id: int) -> Run:
    """Row lock (PostgreSQL) and fresh counters; SQLite's BEGIN IMMEDIATE already serialises."""
    stmt = (
        select(Run)
        .where(Run.id == run_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.execute(stmt)).scalar_one()


def _settings(run: Run) -> dict[str, object]:
    return {
        "group_size": run.group_size,
        "success_threshold": run.success_threshold,
        "strategy": run.strategy,
        "selection": SelectionConfig.model_validate(run.selection).model_dump(),
    }


async def create(
    session: AsyncSession, scope: Scope, body: RunCreate, hot: HotStore
) -> tuple[Run, bool]:
    """Idempotent like datasets: identical settings return the run, others conflict.

    Made in the caller's home namespace, over a dataset (and from runs) of that namespace.
    A new run with `history_from` gets a copy of that run's counts, taken now.
    """
    ns = scope.home
    home = Scope(home=ns, admin=False, explicit=True)
    dataset = await datasets.get_by_name(session, home, body.dataset)
    if body.init_from is not None:
        try:
            source = await get_by_name(session, home, body.init_from)
        except NotFound:
            raise InvalidInput(f"run {body.init_from!r} not found", field="init_from") from None
        learned_on = await session.get_one(Dataset, source.dataset_id)
        if learned_on.embedder != dataset.embedder:
            raise InvalidInput(
                f"run {body.init_from!r} learned on embedder {learned_on.embedder!r}; "
                f"dataset {dataset.name!r} uses {dataset.embedder!r}",
                field="init_from",
            )
    history_source = None
    if body.history_from is not None:
        try:
            history_source = await get_by_name(session, home, body.history_from)
        except NotFound:
            raise InvalidInput(
                f"run {body.history_from!r} not found", field="history_from"
            ) from None
        if history_source.dataset_id != dataset.id:
            raise InvalidInput(
                f"run {body.history_from!r} is over another dataset than {dataset.name!r}",
                field="history_from",
            )
    wanted = {
        "group_size": body.group_size,
        "success_threshold": body.success_threshold,
        "strategy": body.strategy,
        "selection": body.selection.model_dump(),
    }
    found = await _find(session, ns, body.name)
    if found is not None:
        existing = found
    else:
        # read before the insert: a copy the source's hot stats cannot give (Redis down) fails
        # the request with nothing written
        history = None
        if history_source is not None:
            history = await snapshot.take(session, hot, history_source)
        row = Run(
            namespace=ns,
            name=body.name,
            dataset_id=dataset.id,
            group_size=body.group_size,
            success_threshold=body.success_threshold,
            strategy=body.strategy,
            selection=body.selection.model_dump(),
            init_from=body.init_from,
            history_from=body.history_from,
            outcome_seq=0,
            batch_seq=0,
            epoch=0,
            epoch_cursor=0,
            epoch_size=0,
            epoch_head=[],
            groups=0,
            rollouts=0,
            successes=0,
            zero_variance_groups=0,
            max_step=-1,
        )
        existing, created = await insert_unless_raced(
            session, row, lambda: _find(session, ns, body.name)
        )
        if created:
            if history is not None:
                history.run_id = existing.id
                session.add(history)
                await session.flush()
            return existing, True
    if existing.dataset_id != dataset.id:
        raise Conflict(f"run {body.name!r} exists over another dataset", field="dataset")
    if existing.init_from != body.init_from:
        raise Conflict(f"run {body.name!r} exists with other init_from", field="init_from")
    if existing.history_from != body.history_from:
        raise Conflict(f"run {body.name!r} exists with other history_from", field="history_from")
    have = _settings(existing)
    for key, value in wanted.items():
        if have[key] != value:
            raise Conflict(f"run {body.name!r} exists with other {key}", field=key)
    return existing, False


async def read(session: AsyncSession, run: Run) -> RunRead:
    dataset = await session.get_one(Dataset, run.dataset_id)
    steps = (
        await session.execute(
            select(func.count(distinct(Outcome.step))).where(Outcome.run_id == run.id)
        )
    ).scalar_one()
    return RunRead(
        name=run.name,
        dataset=dataset.name,
        group_size=run.group_size,
        success_threshold=run.success_threshold,
        strategy=run.strategy,
        selection=SelectionConfig.model_validate(run.selection),
        created_at=run.created_at,
        steps_seen=steps,
        last_step=run.max_step if run.max_step >= 0 else None,
        outcomes=run.groups,
        rollouts=run.rollouts,
        successes=run.successes,
        zero_variance_share=run.zero_variance_groups / run.groups if run.groups else None,
        batches_served=run.batch_seq,
        epoch=run.epoch,
        init_from=run.init_from,
        history_from=run.history_from,
        history=await _history(session, run) if run.history_from else None,
    )


async def _history(session: AsyncSession, run: Run) -> HistoryRead | None:
    row = await session.get(RunHistory, run.id)
    if row is None:
        return None
    newest = await versions.latest(session, run.id, blobs=False)
    cal = newest.calibration if newest is not None else {}
    k = cal.get("history_strength")
    kappa = DEFAULT_STRENGTH if k is None else float(k)
    overlap = int(cal.get("history_prompts", 0))
    return HistoryRead(
        source=row.source_name,
        source_seq=row.source_seq,
        source_step=row.source_step,
        prompts=row.prompts,
        strength=kappa,
        weight=float(weight(kappa, run.group_size)),
        learned=k is not None and overlap >= MIN_PROMPTS,
        weight_prompts=overlap,
    )
