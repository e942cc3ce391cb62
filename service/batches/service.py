"""Serve a batch per (run, step, partition): draw in epoch order, let a strategy keep some."""

from __future__ import annotations

import functools
import uuid
from datetime import timedelta

import numpy as np
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service import estimates, selection
from service.batches.schemas import BatchRequest, BatchResponse, BatchStats, ServedPrompt
from service.datasets import service as datasets
from service.db import bulk_insert, utcnow
from service.estimates import RunEstimates
from service.estimator.beta import p_mixed
from service.exceptions import Conflict, InvalidInput
from service.hotstats.catch_up import catch_up
from service.hotstats.store import HotStore
from service.models import Batch, BatchItem, Dataset, Prompt, Run
from service.policy import SelectionConfig
from service.predictor.cache import PredictorCache
from service.runs import service as runs
from service.selection.budget import allocate

IntArray = selection.strategies.IntArray
BUDGET_CELLS = 2_000_000  # prompts x candidate n values: bounds the split's time and memory


async def get_or_create(
    session: AsyncSession,
    run: Run,
    body: BatchRequest,
    *,
    hot: HotStore,
    cache: PredictorCache,
    default_lease: float,
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
    policy = SelectionConfig.model_validate(run.selection)
    fresh = selection.get(body.strategy or run.strategy).needs_stats or policy.budget
    if fresh:
        # before the run's lock: a stalled cache then fails this request without holding up
        # the outcome reports that wait on the lock (under it, catching up is one read)
        await catch_up(session, hot, run.id, run.outcome_seq, policy.discount)
    run = await runs.lock(session, run.id)
    found = await _find(session, run.id, body.step, body.partition)
    if found is not None:
        return await _render(session, found, body.size), False
    view = await estimates.for_run(
        session, hot, cache, run, policy, step=max(body.step, run.max_step), catch_up=fresh
    )
    lease = policy.lease_seconds or default_lease
    return await _create(session, run, dataset, body, view, lease), True


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
            skip = np.fromiter(self.skip, dtype=np.int64, count=len(self.skip))
            free = chunk[~np.isin(chunk, skip)] if len(skip) else chunk
            if len(free) > wanted - got:
                last = int(np.flatnonzero(np.isin(chunk, free[wanted - got - 1]))[0])
                chunk, free = chunk[: last + 1], free[: wanted - got]
            self.run.epoch_cursor += len(chunk)
            picked = free.tolist()
            self.skip.update(picked)
            self.taken.extend(picked)
            out.append(free)
            got += len(free)
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)


async def _create(
    session: AsyncSession,
    run: Run,
    dataset: Dataset,
    body: BatchRequest,
    view: RunEstimates,
    lease: float,
) -> BatchResponse:
    policy = view.policy
    name = body.strategy or run.strategy
    # a run warm-started from another run's predictor is not blind: once that version has
    # landed, its estimates select from the first batch on; nor is one with another's history
    warm = (run.init_from is not None and view.version is not None) or view.history is not None
    if run.groups < policy.warmup_outcomes and not warm:
        name = "uniform"
    leased = await leased_idxs(session, run.id)
    free = dataset.prompt_count - len(leased)
    if body.size > free:
        raise Conflict(
            f"only {free} prompts are free: {len(leased)} are out in unreported batches",
            field="size",
        )
    cursor = _EpochCursor(run, dataset.prompt_count, policy, set(leased))
    cands, keep, picked = await _select(selection.get(name), view, cursor, run, body.size, free)
    kept = cands.take(keep)
    suggested, expected = _split_budget(policy, kept, body.size, run.group_size)
    stats = BatchStats(
        scanned=len(cands),
        kept=len(kept),
        survival_rate=len(kept) / len(cands) if len(cands) else 0.0,
        epoch=run.epoch,
        strategy=name,
        expected_informative=expected,
        filled=len(keep) - picked,
    )
    return await _store(session, run, dataset.id, body, kept, suggested, stats, lease)


async def _select(
    strategy: selection.Strategy,
    view: RunEstimates,
    cursor: _EpochCursor,
    run: Run,
    size: int,
    free: int,
) -> tuple[selection.Candidates, IntArray, int]:
    """Scan the epoch until the strategy keeps `size`; the candidates, kept positions, picks."""
    policy = view.policy
    rng = np.random.default_rng([policy.seed, run.id, run.batch_seq + 1])
    first = min(strategy.scan_size(size, policy, free), free)
    limit = min(strategy.max_scan(size, policy, free), free)
    cands = await _candidates(view, cursor.draw(first))
    keep = strategy.choose(cands, size, policy, rng, run.group_size)
    while len(keep) < size and len(cands) < limit:
        more = cursor.draw(min(first, limit - len(cands)))
        if len(more) == 0:
            break
        cands = selection.Candidates.concat(cands, await _candidates(view, more))
        keep = strategy.choose(cands, size, policy, rng, run.group_size)
    picked = len(keep)
    keep = selection.strategies.fill(keep, cands, size, policy.target)
    if len(keep) < size:
        raise Conflict(f"could only select {len(keep)} of {size} prompts", field="size")
    return cands, keep, picked


def _split_budget(
    policy: SelectionConfig, kept: selection.Candidates, size: int, group_size: int
) -> tuple[IntArray | None, float]:
    """Rollouts suggested per prompt (budget runs only) and the batch's expected mixed share."""
    if not policy.budget:
        return None, float(np.mean(p_mixed(kept.alpha, kept.beta, group_size)))
    n_max = policy.n_max or 2 * group_size
    if size * (n_max - policy.n_min + 1) > BUDGET_CELLS:
        raise InvalidInput(
            f"rollout budget for {size} prompts is too large to split; "
            "lower size or the run's n_max",
            field="size",
        )
    suggested = allocate(kept.alpha, kept.beta, size * group_size, policy.n_min, n_max)
    return suggested, float(np.mean(p_mixed(kept.alpha, kept.beta, suggested)))


async def _candidates(view: RunEstimates, idx: IntArray) -> selection.Candidates:
    est = await view.at(idx, selecting=True)
    age = np.where(est.seen, view.step - est.stats.last_step, np.inf)
    mixed = None
    if view.prior is not None and view.prior.mixed is not None:
        inside = idx < len(view.prior.mixed)
        mixed = np.full(len(idx), np.nan)
        mixed[inside] = view.prior.mixed[idx[inside]]
        if view.history is not None:  # another run's groups already say how these would do
            hs, hf = view.history.pseudo_counts(idx)
            mixed[hs + hf > 0.5] = np.nan
    return selection.Candidates(
        idx=idx, alpha=est.alpha, beta=est.beta, seen=est.seen, age=age, mixed=mixed
    )


async def _store(
    session: AsyncSession,
    run: Run,
    dataset_id: int,
    body: BatchRequest,
    kept: selection.Candidates,
    suggested: IntArray | None,
    stats: BatchStats,
    lease: float,
) -> BatchResponse:
    idxs = kept.idx.tolist()
    predicted = kept.mean.tolist()
    ns = suggested.tolist() if suggested is not None else [None] * len(idxs)
    info = await datasets.prompts_by_pos(session, dataset_id, idxs)
    now = utcnow()
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
