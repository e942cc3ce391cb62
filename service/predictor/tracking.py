"""Advance a run's exposure replay at each fit and turn it into per-prompt shifts for selection."""

from __future__ import annotations

import asyncio
import io
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.estimator import N_FEATURES, exposure, neighbours
from service.estimator.exposure import F64, Graph, Log, Replay, Shifts
from service.estimator.inputs import DatasetInputs
from service.models import Outcome, PredictorVersion
from service.policy import SelectionConfig
from service.predictor.cache import PredictorCache

log = logging.getLogger(__name__)

NEIGHBOURS = 10
# an exact neighbour row costs a scan of the whole dataset, about 2 ms at 30,000 n-gram
# prompts on 2 cores, and a run needs only its trained prompts' rows; above this the whole
# graph is built approximately at once (pynndescent), a cost that grows as n log n
EXACT_MAX = 30_000
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
    """The neighbour graph of an embedding block: exact rows on demand, or all approximate.

    A pure function of the block, so it can move to a worker process.
    """
    n = x.shape[0]
    if x.shape[1] <= 0:
        return Graph.of(np.zeros((n, 1), dtype=np.float32), 0)
    if n <= exact_max:
        return Graph.of(x, NEIGHBOURS)
    t0 = time.perf_counter()
    nb, sim = neighbours.nearest(x, NEIGHBOURS)
    log.info("approximate neighbour graph of %d prompts in %.1f s", n, time.perf_counter() - t0)
    return Graph.of_neighbours(nb, sim)


_BUILDER: ProcessPoolExecutor | None = None


BUILDER_NICE = 19
"""The graph builder runs for minutes on a core of its own: the lowest CPU priority, so
requests and fits on the same host go first."""


def _exit_with(parent: int) -> None:
    """In the builder: leave when the server does, not after a build of minutes ends."""
    os.nice(max(BUILDER_NICE - os.nice(0), 0))

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def _builder() -> ProcessPoolExecutor:
    """One spawned process for approximate graphs: numba compiles and runs holding the GIL."""
    global _BUILDER
    if _BUILDER is None:
        _BUILDER = ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_exit_with,
            initargs=(os.getpid(),),
        )
    return _BUILDER


def graph(
    cache: PredictorCache, dataset_id: int, inputs: DatasetInputs, exact_max: int = EXACT_MAX
) -> Graph:
    """The dataset's neighbour graph on its embedding block, kept while its inputs are.

    Above `exact_max` the approximate graph takes minutes to build, in a process of its own;
    until it is ready a fit goes on without neighbours (own and global training only, as
    tracking did above the limit before) instead of waiting, and a later fit picks it up.
    """
    with _GRAPH_LOCK:
        cached = cache.graphs.get(dataset_id)
        if cached is not None and cached[0] is inputs:
            return cached[1]
        size, dim = inputs.x.shape[0], max(inputs.x.shape[1] - N_FEATURES, 0)
        if size <= exact_max or dim == 0:
            g = neighbour_graph(inputs.embedding, exact_max)
            cache.graphs[dataset_id] = (inputs, g)
            return g
        pending = cache.graph_builds.get(dataset_id)
        if pending is not None and pending[1].done():
            del cache.graph_builds[dataset_id]
            if pending[0] is inputs and pending[1].exception() is None:
                g = pending[1].result()
                cache.graphs[dataset_id] = (inputs, g)
                return g
            if pending[1].exception() is not None:
                log.error(
                    "neighbour graph of dataset %s failed: %r", dataset_id, pending[1].exception()
                )
            pending = None
        if pending is None:  # one build at a time; one for older inputs finishes first
            future = _builder().submit(neighbour_graph, inputs.embedding, exact_max)
            cache.graph_builds[dataset_id] = (inputs, future)
        return Graph.of(np.zeros((size, 1), dtype=np.float32), 0)


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
    stmt = (
        select(Outcome.prompt_idx, Outcome.step, Outcome.n, Outcome.successes, Outcome.reward_std)
        .where(Outcome.run_id == run_id, Outcome.seq > start, Outcome.seq <= target)
        .order_by(Outcome.seq)
    )
    rows = (await session.execute(stmt)).all()
    cols = list(zip(*rows, strict=True)) if rows else [(), (), (), (), ()]
    outcomes = Log(
        idx=np.array(cols[0], dtype=np.int64),
        step=np.array(cols[1], dtype=np.int64),
        n=np.array(cols[2], dtype=np.int64),
        k=np.array(cols[3], dtype=np.int64),
        sd=np.array(cols[4], dtype=np.float64),
    )
    g = await asyncio.to_thread(graph, cache, dataset_id, inputs)
    return await asyncio.to_thread(_advance, replay, outcomes, g, cfg.discount, base)


def _advance(
    replay: Replay, outcomes: Log, g: Graph, discount: float, base: tuple[F64, F64]
) -> tuple[bytes, bytes | None, dict[str, float]]:
    # the prompts that pass training on: this step's mixed groups and the step before's
    sources = [outcomes.idx[outcomes.sd > 0], replay.pending[:, 0].astype(np.int64)]
    with _GRAPH_LOCK:  # fits of two runs on one dataset share its graph
        g.fill(np.concatenate(sources))
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
