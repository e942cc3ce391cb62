"""Serve a batch per (run, step, partition): draw in epoch order, let a strategy keep some."""

from __future__ import annotations

import functools
import math
import uuid
from datetime import timedelta

import numpy as np
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service import selection
from service.batches.models import Batch, BatchItem
from service.batches.schemas import BatchRequest, BatchResponse, BatchStats, ServedPrompt
from service.datasets import service as datasets
from service.datasets.models import Dataset, Prompt
from service.db import bulk_insert, utcnow
from service.exceptions import Conflict, InvalidInput
from service.predictor import service as predictor
from service.predictor.cache import Prior
from service.runs import service as runs
from service.runs.models import Run
from service.runs.schemas import SelectionConfig
from service.selection.budget import allocate, mixed
from service.state import AppState
from service.stats.math import p_informative
from service.stats.service import catch_up

IntArray = selection.strategies.IntArray
BUDGET_CELLS = 2_000_000  # prompts x candidate n values: bounds the split's time and memory


async def get_or_create(
    session: AsyncSession, state: AppState, run: Run, body: BatchRequest
) -> tuple[BatchResponse, bool]:
    """Ranks and retries asking for the same key get the stored batch back."""
    found = await _find(session, run.id, body.step, body.partition)
    if found is not None:
        return await _render(session, found, body.size), False
    dataset = await session.get_one(Dataset, run.dataset_id)
    if body.size > dataset.prompt_count:
        raise InvalidInput(
            f"size {body.size} is above the pool of {dataset.prompt_count} prompts", field="size"
        )
    cfg = SelectionConfig.model_validate(run.selection)
    if selection.get(body.strategy or run.strategy).needs_stats or cfg.budget:
        # before the run's lock: a stalled cache then fails this request without holding up
        # the outcome reports that wait on the lock (under it, catching up is one read)
        await catch_up(session, state.hot, run.id, run.outcome_seq, cfg.discount)
    run = await runs.lock(session, run.id)
    found = await _find(session, run.id, body.step, body.partition)
    if found is not None:
        return await _render(session, found, body.size), False
    return await _create(session, state, run, dataset, body), True


async def _find(session: AsyncSession, run_id: int, step: int, partition: str) -> Batch | None:
    stmt = select(Batch).where(
        Batch.run_id == run_id, Batch.step == step, Batch.partition == partition
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def _render(session: AsyncSession, batch: Batch, size: int) -> BatchResponse:
    if size != batch.size:
        raise Conflict(
            f"batch for step {batch.step}, partition {batch.partition!r} was served with size "
            f"{batch.size}",
            field="size",
        )
    rows = await session.execute(
        select(Prompt.client_id, Prompt.text, BatchItem.predicted, BatchItem.suggested_n)
        .join(Prompt, Prompt.id == BatchItem.prompt_id)
        .where(BatchItem.batch_id == batch.id)
        .order_by(BatchItem.position)
    )
    prompts = [
        ServedPrompt(id=r.client_id, text=r.text, predicted_pass_rate=r.predicted, n=r.suggested_n)
        for r in rows
    ]
    return BatchResponse(
        batch_id=batch.id,
        step=batch.step,
        partition=batch.partition,
        expires_at=batch.expires_at.isoformat(),
        prompts=prompts,
        stats=BatchStats.model_validate(batch.stats),
    )


async def leased_idxs(session: AsyncSession, run_id: int) -> set[int]:
    """Prompts out in unexpired batches that have not been reported yet."""
    rows = await session.execute(
        select(BatchItem.prompt_idx)
        .join(Batch, Batch.id == BatchItem.batch_id)
        .where(Batch.run_id == run_id, Batch.expires_at > utcnow(), BatchItem.reported.is_(False))
    )
    return set(rows.scalars())


@functools.lru_cache(maxsize=16)
def _epoch_order(seed: int, run_id: int, epoch: int, size: int, head: tuple[int, ...]) -> IntArray:
    """An epoch's order is a pure function of these, so every replica walks the same one."""
    rng = np.random.default_rng([seed, run_id, epoch])
    perm = rng.permutation(size).astype(np.int64)
    if head:
        first = np.array(head, dtype=np.int64)
        perm = np.concatenate([first, perm[~np.isin(perm, first)]])
    perm.setflags(write=False)
    return perm


class _EpochCursor:
    """Walks the run's seeded permutation of the pool; a new epoch starts when it runs out.

    A batch that crosses into a new epoch takes the old epoch's last prompts too; those lead
    the new epoch's order (`epoch_head`), so they count as served in it and never repeat there.
    """

    def __init__(self, run: Run, pool: int, cfg: SelectionConfig, skip: set[int]) -> None:
        self.run = run
        self.pool = pool
        self.seed = cfg.seed
        self.skip = skip
        self.taken: list[int] = []
        self._perm = self._permutation() if run.epoch_size else np.empty(0, dtype=np.int64)

    def _permutation(self) -> IntArray:
        head = tuple(self.run.epoch_head or ())
        return _epoch_order(self.seed, self.run.id, self.run.epoch, self.run.epoch_size, head)

    def _rollover(self) -> None:
        self.run.epoch += 1
        self.run.epoch_size = self.pool
        self.run.epoch_head = list(dict.fromkeys(self.taken))
        self.run.epoch_cursor = len(self.run.epoch_head)
        self._perm = self._permutation()

    def draw(self, wanted: int) -> IntArray:
        out: list[IntArray] = []
        got = 0
        rollovers = 0
        while got < wanted and rollovers < 2:
            if self.run.epoch_cursor >= self.run.epoch_size:
                self._rollover()
                rollovers += 1
            chunk = self._perm[self.run.epoch_cursor : self.run.epoch_cursor + 4 * (wanted - got)]
            free = chunk[~np.isin(chunk, list(self.skip))] if self.skip else chunk
            if len(free) > wanted - got:
                last = int(np.flatnonzero(np.isin(chunk, free[wanted - got - 1]))[0])
                chunk, free = chunk[: last + 1], free[: wanted - got]
            self.run.epoch_cursor += len(chunk)
            self.skip.update(int(i) for i in free)
            self.taken.extend(int(i) for i in free)
            out.append(free)
            got += len(free)
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)


async def _create(
    session: AsyncSession, state: AppState, run: Run, dataset: Dataset, body: BatchRequest
) -> BatchResponse:
    cfg = SelectionConfig.model_validate(run.selection)
    name = body.strategy or run.strategy
    prior = await predictor.priors(state, session, run.id)
    # a run warm-started from another run's predictor is not blind: once that version has
    # landed, its estimates select from the first batch on
    warm = run.init_from is not None and prior is not None
    if run.groups < cfg.warmup_outcomes and not warm:
        name = "uniform"
    strategy = selection.get(name)
    leased = await leased_idxs(session, run.id)
    free = dataset.prompt_count - len(leased)
    if body.size > free:
        raise Conflict(
            f"only {free} prompts are free: {len(leased)} are out in unreported batches",
            field="size",
        )
    if strategy.needs_stats or cfg.budget:
        await catch_up(session, state.hot, run.id, run.outcome_seq, cfg.discount)
    cursor = _EpochCursor(run, dataset.prompt_count, cfg, set(leased))
    rng = np.random.default_rng([cfg.seed, run.id, run.batch_seq + 1])
    step = max(body.step, run.max_step)
    limit = min(strategy.max_scan(body.size, cfg), free)
    cands = await _candidates(
        state, run, cfg, prior, cursor.draw(min(strategy.scan_size(body.size, cfg), free)), step
    )
    keep = strategy.choose(cands, body.size, cfg, rng, run.group_size)
    while len(keep) < body.size and len(cands) < limit:
        more = cursor.draw(min(math.ceil(body.size * cfg.oversample), limit - len(cands)))
        if len(more) == 0:
            break
        more_cands = await _candidates(state, run, cfg, prior, more, step)
        cands = selection.Candidates.concat(cands, more_cands)
        keep = strategy.choose(cands, body.size, cfg, rng, run.group_size)
    picked = len(keep)
    keep = selection.strategies.fill(keep, cands, body.size, cfg.target)
    if len(keep) < body.size:
        raise Conflict(f"could only select {len(keep)} of {body.size} prompts", field="size")
    kept = cands.take(keep)
    suggested = None
    if (
        cfg.budget
        and body.size * ((cfg.n_max or 2 * run.group_size) - cfg.n_min + 1) > BUDGET_CELLS
    ):
        raise InvalidInput(
            f"rollout budget for {body.size} prompts is too large to split; "
            "lower size or the run's n_max",
            field="size",
        )
    if cfg.budget:
        suggested = allocate(
            kept.alpha,
            kept.beta,
            body.size * run.group_size,
            cfg.n_min,
            cfg.n_max or 2 * run.group_size,
        )
        expected = float(np.mean(mixed(kept.alpha, kept.beta, suggested)))
    else:
        expected = float(np.mean(p_informative(kept.alpha, kept.beta, run.group_size)))
    stats = BatchStats(
        scanned=len(cands),
        kept=len(kept),
        survival_rate=len(kept) / len(cands) if len(cands) else 0.0,
        epoch=run.epoch,
        strategy=name,
        expected_informative=expected,
        filled=len(keep) - picked,
    )
    return await _store(session, state, run, dataset, body, kept, suggested, stats, cfg)


async def _candidates(
    state: AppState,
    run: Run,
    cfg: SelectionConfig,
    prior: Prior | None,
    idx: IntArray,
    step: int,
) -> selection.Candidates:
    est = await predictor.estimate(state, run.id, cfg, prior, idx, step, selecting=True)
    age = np.array([np.inf if s is None else step - s.last_step for s in est.stats], dtype=float)
    return selection.Candidates(idx=idx, alpha=est.alpha, beta=est.beta, seen=est.seen, age=age)


async def _store(
    session: AsyncSession,
    state: AppState,
    run: Run,
    dataset: Dataset,
    body: BatchRequest,
    kept: selection.Candidates,
    suggested: IntArray | None,
    stats: BatchStats,
    cfg: SelectionConfig,
) -> BatchResponse:
    idxs = kept.idx.tolist()
    predicted = kept.mean.tolist()
    ns = suggested.tolist() if suggested is not None else [None] * len(idxs)
    info = await datasets.prompts_by_pos(session, dataset.id, idxs)
    now = utcnow()
    lease = cfg.lease_seconds or state.settings.lease_seconds
    run.batch_seq += 1
    batch = Batch(
        id=uuid.uuid4().hex,
        run_id=run.id,
        seq=run.batch_seq,
        step=body.step,
        partition=body.partition,
        size=body.size,
        strategy=stats.strategy,
        epoch=run.epoch,
        stats=stats.model_dump(),
        created_at=now,
        expires_at=now + timedelta(seconds=lease),
    )
    session.add(batch)
    await session.flush()
    items = [
        {
            "batch_id": batch.id,
            "position": pos,
            "run_id": run.id,
            "prompt_id": info[i].pk,
            "prompt_idx": i,
            "predicted": p,
            "suggested_n": n,
            "reported": False,
        }
        for pos, (i, p, n) in enumerate(zip(idxs, predicted, ns, strict=True))
    ]
    await bulk_insert(session, BatchItem.__table__, items)  # type: ignore[arg-type]
    await session.flush()
    prompts = [
        ServedPrompt(id=info[i].client_id, text=info[i].text, predicted_pass_rate=p, n=n)
        for i, p, n in zip(idxs, predicted, ns, strict=True)
    ]
    return BatchResponse(
        batch_id=batch.id,
        step=batch.step,
        partition=batch.partition,
        expires_at=batch.expires_at.isoformat(),
        prompts=prompts,
        stats=stats,
    )
