"""Append reported groups to the log exactly once, advancing the run's position under its lock."""

from __future__ import annotations

import math
import uuid
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.datasets import service as datasets
from service.db import bulk_insert, by_unique_key, one_of, utcnow
from service.exceptions import InvalidInput
from service.models import Batch, BatchItem, Outcome, Run
from service.outcomes.schemas import GroupResult, OutcomeAck, OutcomeReport
from service.runs import service as runs

LOOKUP_CHUNK = 5_000
DEFAULT_PARTITION = "0"


def summarize(rewards: list[float], threshold: float) -> tuple[int, float, float, bool]:
    """Successes, mean, population std and zero variance of one group's rewards."""
    n = len(rewards)
    mean = sum(rewards) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / n)
    successes = sum(1 for r in rewards if r >= threshold)
    return successes, mean, std, all(r == rewards[0] for r in rewards)


async def ingest(session: AsyncSession, run: Run, body: OutcomeReport) -> OutcomeAck:
    """Validate everything first, so a rejected request writes nothing."""
    for i, res in enumerate(body.results):
        if res.response_lengths is not None and len(res.response_lengths) != len(res.rewards):
            raise InvalidInput(
                "response_lengths must have one entry per reward",
                field=f"results.{i}.response_lengths",
            )
    ids = await datasets.resolve_ids(session, run.dataset_id, [r.prompt_id for r in body.results])
    missing = [r.prompt_id for r in body.results if r.prompt_id not in ids]
    if missing:
        raise InvalidInput(
            f"{len(missing)} prompt_id(s) not in the run's dataset, e.g. {missing[:5]}",
            field="results.prompt_id",
            missing=missing[:100],
        )
    step, partition = await _group_slot(session, run, body)
    keyed: dict[str, GroupResult] = {}
    for res in body.results:
        keyed.setdefault(dedup_key(step, partition, ids[res.prompt_id][0]), res)

    run = await runs.lock(session, run.id)
    logged = await _existing_keys(session, run.id, list(keyed))
    fresh = [(k, r) for k, r in keyed.items() if k not in logged]
    now = utcnow()
    token = uuid.uuid4().hex[:16]
    rows: list[dict[str, Any]] = []
    for key, res in fresh:
        pk, idx = ids[res.prompt_id]
        k, mean, std, zero_var = summarize(res.rewards, run.success_threshold)
        rows.append(
            {
                "run_id": run.id,
                "seq": run.outcome_seq + len(rows) + 1,
                "prompt_id": pk,
                "prompt_idx": idx,
                "step": body.step,
                "batch_id": body.batch_id,
                "dedup_key": key,
                "log_token": token,
                "rewards": res.rewards,
                "n": len(res.rewards),
                "successes": k,
                "reward_mean": mean,
                "reward_std": std,
                "zero_variance": zero_var,
                "mean_logprob": res.mean_logprob,
                "response_lengths": res.response_lengths,
                "received_at": now,
            }
        )
    if rows:
        await bulk_insert(session, Outcome.__table__, rows)  # type: ignore[arg-type]
        run.outcome_seq += len(rows)
        run.groups += len(rows)
        run.rollouts += sum(r["n"] for r in rows)
        run.successes += sum(r["successes"] for r in rows)
        run.zero_variance_groups += sum(1 for r in rows if r["zero_variance"])
        run.max_step = max(run.max_step, body.step)
        await _release_leases(session, run.id, body.batch_id, [r["prompt_idx"] for r in rows])
    await session.flush()
    return OutcomeAck(accepted=len(rows), duplicates=len(body.results) - len(rows))


async def _group_slot(session: AsyncSession, run: Run, body: OutcomeReport) -> tuple[int, str]:
    """The (step, partition) the groups were generated for: the batch's, or the report's own."""
    if body.batch_id is None:
        return body.step, body.partition or DEFAULT_PARTITION
    batch = (
        await session.execute(
            select(Batch.run_id, Batch.step, Batch.partition).where(Batch.id == body.batch_id)
        )
    ).one_or_none()
    if batch is None or batch.run_id != run.id:
        raise InvalidInput(f"batch {body.batch_id!r} was not served to this run", field="batch_id")
    if body.partition is not None and body.partition != batch.partition:
        raise InvalidInput(
            f"batch {body.batch_id!r} was served to partition {batch.partition!r}, "
            f"not {body.partition!r}",
            field="partition",
        )
    return batch.step, batch.partition


def dedup_key(step: int, partition: str, prompt_pk: int) -> str:
    """A group counts once per (step, partition, prompt), with a batch_id or without one."""
    return f"g:{step}:{prompt_pk}:{partition}"


async def _existing_keys(session: AsyncSession, run_id: int, keys: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(keys), LOOKUP_CHUNK):
        rows = await session.execute(
            by_unique_key(
                session,
                Outcome.run_id == run_id,
                Outcome.dedup_key,
                keys[start : start + LOOKUP_CHUNK],
            )
        )
        found.update(rows.scalars())
    return found


async def _release_leases(
    session: AsyncSession, run_id: int, batch_id: str | None, idxs: list[int]
) -> None:
    """A reported prompt is free again: its batch's lease, or any open lease without a batch."""
    if batch_id is not None:
        batch_ids = [batch_id]
    else:
        open_batches = await session.execute(
            select(Batch.id).where(Batch.run_id == run_id, Batch.expires_at > utcnow())
        )
        batch_ids = list(open_batches.scalars())
    if not batch_ids:
        return
    for start in range(0, len(idxs), LOOKUP_CHUNK):
        await session.execute(
            update(BatchItem)
            .where(
                one_of(session, BatchItem.batch_id, batch_ids),
                one_of(session, BatchItem.prompt_idx, idxs[start : start + LOOKUP_CHUNK]),
                BatchItem.reported.is_(False),
            )
            .values(reported=True)
            .execution_options(synchronize_session=False)
        )
