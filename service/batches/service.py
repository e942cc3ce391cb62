"""Serve a batch per (run, step, partition): draw in epoch order, let a strategy keep some."""

from __future__ import annotations

import uuid
from datetime import timedelta

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from service import selection
from service.batches.models import Batch, BatchItem
from service.batches.schemas import BatchRequest, BatchResponse, BatchStats, ServedPrompt
from service.datasets import service as datasets
from service.datasets.models import Dataset, Prompt
from service.db import utcnow
from service.exceptions import Conflict, InvalidInput
from service.runs import service as runs
from service.runs.models import Run
from service.runs.schemas import SelectionConfig
from service.state import AppState
from service.stats.math import beta_posterior
from service.stats.service import catch_up

IntArray = selection.strategies.IntArray


async def get_or_create(
    session: AsyncSession, state: AppState, run: Run, body: BatchRequest
) -> BatchResponse:
    """Ranks and retries asking for the same key get the stored batch back."""
    found = await _find(session, run.id, body.step, body.partition)
    if found is not None:
        return await _render(session, found, body.size)
    dataset = await session.get_one(Dataset, run.dataset_id)
    if body.size > dataset.prompt_count:
        raise InvalidInput(
            f"size {body.size} is above the pool of {dataset.prompt_count} prompts", field="size"
        )
    run = await runs.lock(session, run.id)
    found = await _find(session, run.id, body.step, body.partition)
    if found is not None:
        return await _render(session, found, body.size)
    return await _create(session, state, run, dataset, body)


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


class _EpochCursor:
    """Walks the run's seeded permutation of the pool; a new epoch starts when it runs out."""

    def __init__(self, run: Run, pool: int, cfg: SelectionConfig, skip: set[int]) -> None:
        self.run = run
        self.pool = pool
        self.seed = cfg.seed
        self.skip = skip
        self._perm = self._permutation() if run.epoch_size else np.empty(0, dtype=np.int64)

    def _permutation(self) -> IntArray:
        rng = np.random.default_rng([self.seed, self.run.id, self.run.epoch])
        return rng.permutation(self.run.epoch_size).astype(np.int64)

    def draw(self, wanted: int) -> IntArray:
        out: list[IntArray] = []
        got = 0
        rollovers = 0
        while got < wanted and rollovers < 2:
            if self.run.epoch_cursor >= self.run.epoch_size:
                self.run.epoch += 1
                self.run.epoch_cursor = 0
                self.run.epoch_size = self.pool
                self._perm = self._permutation()
                rollovers += 1
            chunk = self._perm[self.run.epoch_cursor : self.run.epoch_cursor + 4 * (wanted - got)]
            free = chunk[~np.isin(chunk, list(self.skip))] if self.skip else chunk
            if len(free) > wanted - got:
                last = int(np.flatnonzero(np.isin(chunk, free[wanted - got - 1]))[0])
                chunk, free = chunk[: last + 1], free[: wanted - got]
            self.run.epoch_cursor += len(chunk)
            self.skip.update(int(i) for i in free)
            out.append(free)
            got += len(free)
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)


async def _create(
    session: AsyncSession, state: AppState, run: Run, dataset: Dataset, body: BatchRequest
) -> BatchResponse:
    cfg = SelectionConfig.model_validate(run.selection)
    strategy = selection.get(body.strategy or run.strategy)
    leased = await leased_idxs(session, run.id)
    free = dataset.prompt_count - len(leased)
    if body.size > free:
        raise Conflict(
            f"only {free} prompts are free: {len(leased)} are out in unreported batches",
            field="size",
        )
    if strategy.needs_stats:
        await catch_up(session, state.hot, run.id, run.outcome_seq, cfg.discount)
    cursor = _EpochCursor(run, dataset.prompt_count, cfg, set(leased))
    rng = np.random.default_rng([cfg.seed, run.id, run.batch_seq + 1])
    scan = min(strategy.scan_size(body.size, cfg), free)
    cand_idx = cursor.draw(scan)
    step = max(body.step, run.max_step)
    stats = await state.hot.get_many(run.id, cand_idx.tolist()) if strategy.needs_stats else []
    alpha, beta = beta_posterior(
        stats or [None] * len(cand_idx), step, cfg.discount, cfg.prior_alpha, cfg.prior_beta
    )
    cands = selection.Candidates(idx=cand_idx, alpha=alpha, beta=beta)
    keep = strategy.choose(cands, body.size, cfg, rng)
    if len(keep) < body.size:
        raise Conflict(f"could only select {len(keep)} of {body.size} prompts", field="size")
    kept_idx = cand_idx[keep]
    predicted = cands.mean[keep]
    return await _store(session, state, run, dataset, body, kept_idx, predicted, len(cand_idx), cfg)


async def _store(
    session: AsyncSession,
    state: AppState,
    run: Run,
    dataset: Dataset,
    body: BatchRequest,
    kept_idx: IntArray,
    predicted: np.ndarray,
    scanned: int,
    cfg: SelectionConfig,
) -> BatchResponse:
    info = await datasets.prompts_by_pos(session, dataset.id, kept_idx.tolist())
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
        strategy=body.strategy or run.strategy,
        epoch=run.epoch,
        stats=BatchStats(
            scanned=scanned,
            kept=len(kept_idx),
            survival_rate=len(kept_idx) / scanned if scanned else 0.0,
            epoch=run.epoch,
            strategy=body.strategy or run.strategy,
        ).model_dump(),
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
            "prompt_id": info[int(i)].pk,
            "prompt_idx": int(i),
            "predicted": float(p),
            "suggested_n": None,
            "reported": False,
        }
        for pos, (i, p) in enumerate(zip(kept_idx, predicted, strict=True))
    ]
    await session.execute(insert(BatchItem), items)
    await session.flush()
    prompts = [
        ServedPrompt(
            id=info[int(i)].client_id, text=info[int(i)].text, predicted_pass_rate=float(p)
        )
        for i, p in zip(kept_idx, predicted, strict=True)
    ]
    return BatchResponse(
        batch_id=batch.id,
        step=batch.step,
        partition=batch.partition,
        expires_at=batch.expires_at.isoformat(),
        prompts=prompts,
        stats=BatchStats.model_validate(batch.stats),
    )
