"""Advance a run's exposure replay at each fit and turn it into per-prompt shifts for selection."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db import asyncpg_connection
from service.estimator import exposure
from service.estimator.exposure import F64, Graph, Log, Replay, Shifts
from service.estimator.inputs import DatasetInputs
from service.models import Outcome, PredictorVersion
from service.policy import SelectionConfig
from service.predictor.cache import PredictorCache

log = logging.getLogger(__name__)

NEIGHBOURS = 10
# an exact neighbour row costs a scan of the whole dataset, about 2 ms at 30,000 n-gram
# prompts on 2 cores, and a run needs only its trained prompts' rows; above this a row is
# found among the prompts sharing a rare column, at a cost about flat in the pool's size
EXACT_MAX = 30_000
FILL_PER_FIT = 2_000
_GRAPH_LOCK = threading.Lock()


def pack(replay: Replay) -> bytes:
    """The replay the next fit continues from, as one npz blob."""
    buf = io.BytesIO()
    np.savez(buf, **replay.arrays())
    return buf.getvalue()


def pack_shifts(shifts: Shifts) -> bytes:
    """The shifts selection reads, apart from the replay: the request path loads only these."""
    buf = io.BytesIO()
    np.savez(buf, shift=shifts.shift, shift_weight=shifts.weight, shift_step=shifts.step)
    return buf.getvalue()


def unpack_replay(blob: bytes) -> Replay:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return Replay.from_arrays(z)


def unpack_shifts(blob: bytes | None) -> Shifts | None:
    """From a `shifts` blob, or from a `tracking` blob stored before shifts had their own."""
    if not blob:
        return None
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        if "shift" not in z:
            return None
        return Shifts(z["shift"], z["shift_weight"], int(z["shift_step"]))


def neighbour_graph(x: Any, exact_max: int = EXACT_MAX) -> Graph:
    """The neighbour graph of an embedding block, its rows worked out as fits need them.

    Exact rows up to `exact_max` prompts; past it, rows among the prompts sharing a rare
    column (`Graph.pruned_of`), whose cost per row stays about flat as the pool grows.
    """
    n = x.shape[0]
    if x.shape[1] <= 0:
        return Graph.of(np.zeros((n, 1), dtype=np.float32), 0)
    if n <= exact_max:
        return Graph.of(x, NEIGHBOURS)
    t0 = time.perf_counter()
    g = Graph.pruned_of(x, NEIGHBOURS)
    log.info("pruned neighbour index of %d prompts in %.1f s", n, time.perf_counter() - t0)
    return g


def graph(
    cache: PredictorCache, dataset_id: int, inputs: DatasetInputs, exact_max: int = EXACT_MAX
) -> Graph:
    """The dataset's neighbour graph on its embedding block, kept while its inputs are."""
    with _GRAPH_LOCK:
        cached = cache.graphs.get(dataset_id)
        if cached is not None and cached[0] is inputs:
            return cached[1]
        g = neighbour_graph(inputs.embedding, exact_max)
        cache.graphs[dataset_id] = (inputs, g)
        return g


async def advance(
    cache: PredictorCache,
    session: AsyncSession,
    run_id: int,
    cfg: SelectionConfig,
    prev: PredictorVersion | None,
    dataset_id: int,
    inputs: DatasetInputs,
    target: int,
    base: tuple[F64, F64],
) -> tuple[bytes, bytes | None, dict[str, float]]:
    """Replay the outcomes since the previous version, refit the gains; the blobs to store.

    `base` is the Beta prior per prompt that selection used (the previous version's), so
    each re-served group is scored against the estimate it was served with, less any shift.
    """
    start, replay = 0, Replay.empty(len(inputs.mask))
    if prev is not None and prev.tracking:
        start, replay = prev.trained_on, unpack_replay(prev.tracking).resized(len(inputs.mask))
    outcomes = await _log(session, run_id, start, target)
    g = await asyncio.to_thread(graph, cache, dataset_id, inputs)
    return await asyncio.to_thread(_advance, replay, outcomes, g, cfg.discount, base)


async def _log(session: AsyncSession, run_id: int, start: int, target: int) -> Log:
    """The run's groups after seq `start` up to `target`, in seq order, as arrays.

    On PostgreSQL one row of five arrays: fetching a first fit's 1,000,000 groups as rows and
    zipping them into columns took about 3 s of its profile (`scale --profile-worker`)."""
    driver = await asyncpg_connection(session)
    if driver is not None:
        cols = await driver.fetchrow(
            "SELECT array_agg(prompt_idx ORDER BY seq), array_agg(step ORDER BY seq), "
            "array_agg(n ORDER BY seq), array_agg(successes ORDER BY seq), "
            f"array_agg(reward_std ORDER BY seq) FROM {Outcome.__tablename__} "
            "WHERE run_id = $1 AND seq > $2 AND seq <= $3",
            run_id,
            start,
            target,
        )
        cols = [c or () for c in cols]
    else:
        stmt = (
            select(
                Outcome.prompt_idx, Outcome.step, Outcome.n, Outcome.successes, Outcome.reward_std
            )
            .where(Outcome.run_id == run_id, Outcome.seq > start, Outcome.seq <= target)
            .order_by(Outcome.seq)
        )
        rows = (await session.execute(stmt)).all()
        cols = list(zip(*rows, strict=True)) if rows else [(), (), (), (), ()]
    return Log(
        idx=np.array(cols[0], dtype=np.int64),
        step=np.array(cols[1], dtype=np.int64),
        n=np.array(cols[2], dtype=np.int64),
        k=np.array(cols[3], dtype=np.int64),
        sd=np.array(cols[4], dtype=np.float64),
    )


def _advance(
    replay: Replay, outcomes: Log, g: Graph, discount: float, base: tuple[F64, F64]
) -> tuple[bytes, bytes | None, dict[str, float]]:
    # the prompts that pass training on: this step's mixed groups and the step before's
    sources = [outcomes.idx[outcomes.sd > 0], replay.pending[:, 0].astype(np.int64)]
    with _GRAPH_LOCK:  # fits of two runs on one dataset share its graph
        # pruned rows cost 2-4 ms each: a fit works out at most FILL_PER_FIT, the newest
        # sources first; an older source left without its row passes no training on
        g.fill(np.concatenate(sources), limit=FILL_PER_FIT if g.pruned else None)
    nb, sim = g.nb, g.sim
    exposure.advance(replay, outcomes, nb, sim, discount, base[0], base[1])
    gains = exposure.fit_gains(replay.rows)
    report = {"tracking_rows": float(len(replay.rows))}
    if gains is None:
        return pack(replay), None, report
    for name, gain in zip(exposure.EXPOSURES, gains, strict=True):
        report[f"tracking_gain_{name}"] = float(gain)
    sh = exposure.shifts(replay, gains, nb, sim, discount)
    return pack(replay), pack_shifts(sh), report
