"""The hot-state projection: order-independent updates and compare-and-set on both stores."""

from __future__ import annotations

import itertools
import random
import uuid
from typing import Any, cast

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from service.estimator.beta import (
    MISSING,
    PromptStats,
    StatsColumns,
    add_group,
    beta_posterior,
    p_mixed,
)
from service.hotstats.catch_up import catch_up, refresh
from service.hotstats.store import START, HotStore, MemoryHotStore, RedisHotStore
from service.hotstats.store import Position as P
from service.models import Run
from service.state import AppState
from tests.fixtures.api import make_dataset, make_run
from tests.fixtures.backends import REDIS_URL


def test_update_rule_is_order_independent() -> None:
    groups = [(3, 8, 5), (0, 8, 1), (7, 8, 8), (2, 4, 0)]
    finals = set()
    for perm in itertools.permutations(groups):
        s: PromptStats | None = None
        for step, n, k in perm:
            s = add_group(s, step, n, k, 0.9)
        assert s is not None
        finals.add(
            (
                s.groups,
                s.rollouts,
                s.successes,
                s.last_step,
                round(s.disc_successes, 9),
                round(s.disc_failures, 9),
            )
        )
    assert len(finals) == 1
    (_, rollouts, successes, last, a, b) = finals.pop()
    assert (rollouts, successes, last) == (28, 14, 7)
    assert a == pytest.approx(5 * 0.9**4 + 1 * 0.9**7 + 8 + 0)
    assert b == pytest.approx(3 * 0.9**4 + 7 * 0.9**7 + 0 + 4 * 0.9**5)


def test_encode_round_trip() -> None:
    s = PromptStats(3, 24, 7, 12, 5.123456789, 0.1)
    assert PromptStats.decode(s.encode()) == s
    joined = s.encode() + MISSING + PromptStats(1, 8, 8, 2, 8.0, 0.0).encode()
    cols = StatsColumns.parse_joined(joined, 3)
    assert cols.seen.tolist() == [True, False, True]
    assert cols.groups.tolist() == [3, 0, 1]
    assert cols.last_step.tolist() == [12, 0, 2]
    assert cols.disc_successes.tolist() == [5.123456789, 0.0, 8.0]
    with pytest.raises(ValueError, match="bytes for 2"):
        StatsColumns.parse_joined(joined, 2)


def test_p_informative_matches_monte_carlo() -> None:
    cols = StatsColumns.of([PromptStats(1, 8, 2, 0, 2.0, 6.0), None])
    alpha, beta = beta_posterior(cols, 0, 1.0, 1.0, 1.0)
    exact = p_mixed(alpha, beta, 8)
    rng = random.Random(0)
    for i in range(2):
        draws = [rng.betavariate(alpha[i], beta[i]) for _ in range(40_000)]
        mc = sum(1 - p**8 - (1 - p) ** 8 for p in draws) / len(draws)
        assert exact[i] == pytest.approx(mc, abs=0.01)
    assert exact[1] == pytest.approx(1 - 2 / 9)  # uniform prior: E[p^8] = 1/9


def test_p_mixed_product_form_matches_log_gamma_form() -> None:
    """Integer n takes n products; a per-prompt n array takes the log-gamma route: same values."""
    rng = np.random.default_rng(0)
    a = rng.uniform(0.02, 300.0, 5_000)
    b = rng.uniform(0.02, 300.0, 5_000)
    for n in (1, 4, 8, 16, 64):
        fast = p_mixed(a, b, n)
        slow = p_mixed(a, b, np.full(len(a), n))
        np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-10)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> HotStore:
    if request.param == "memory":
        return MemoryHotStore()
    from redis.asyncio import Redis

    return RedisHotStore(Redis.from_url(REDIS_URL), f"depotest-store-{uuid.uuid4().hex[:8]}")


async def test_apply_is_compare_and_set(store: HotStore) -> None:
    try:
        assert await store.position(1) == START
        assert await store.apply(1, START, P(2, "a"), [(5, 0, 8, 3), (6, 0, 8, 8)], 1.0)
        assert not await store.apply(1, START, P(3, "b"), [(5, 1, 8, 3)], 1.0), "stale writer"
        assert not await store.apply(1, P(2, "x"), P(3, "b"), [(5, 1, 8, 3)], 1.0), "other log"
        assert await store.position(1) == P(2, "a")
        assert await store.apply(1, P(2, "a"), P(3, "b"), [(5, 1, 8, 1)], 1.0)
        [s5, s6, s7] = await store.get_many(1, [5, 6, 7])
        assert s5 == PromptStats(2, 16, 4, 1, 4.0, 12.0)
        assert s6 is not None and s6.successes == 8 and s7 is None
        cols = await store.get_columns(1, [7, 5, 6])
        built = StatsColumns.of([None, s5, s6])  # the arrays `get_many` would give
        for name in ("seen", "groups", "last_step", "disc_successes", "disc_failures"):
            assert getattr(cols, name).tolist() == getattr(built, name).tolist(), name
        assert cols.groups.tolist() == [0, 2, 1] and cols.disc_failures.tolist() == [0, 12, 0]
        assert set((await store.get_all(1)).keys()) == {5, 6}
        assert not await store.reset(1, P(3, "a")), "a reset is compare-and-set too"
        assert await store.reset(1, P(3, "b"))
        assert await store.position(1) == START and await store.get_all(1) == {}
        assert await store.apply(1, START, P(1, "c"), [(5, 1, 8, 1)], 1.0)
        await store.flush()
        assert await store.position(1) == START and await store.get_all(1) == {}
    finally:
        await store.flush()
        await store.close()


async def test_get_columns_reads_past_the_scripts_chunk_of_4000(store: HotStore) -> None:
    """The Redis store reads many fields in chunks inside one script: no chunk edge may slip."""
    try:
        seen = [0, 3999, 4000, 8001, 9000]
        assert await store.apply(1, START, P(1, "t"), [(i, 0, 8, 1 + i % 7) for i in seen], 1.0)
        idxs = list(range(9001))
        cols = await store.get_columns(1, idxs)
        assert len(cols.seen) == 9001
        assert np.flatnonzero(cols.seen).tolist() == seen
        assert cols.disc_successes[seen].tolist() == [1 + i % 7 for i in seen]
        assert cols.groups[seen].tolist() == [1] * len(seen)
    finally:
        await store.flush()


async def test_whole_run_reads_past_one_scan_chunk(store: HotStore) -> None:
    """A whole run is read in HSCAN chunks on Redis: every prompt once, none lost at an edge."""
    from service.hotstats.store import SCAN_CHUNK

    n = 2 * SCAN_CHUNK + 7
    try:
        groups = [(i, 0, 8, i % 9) for i in range(n)]
        assert await store.apply(1, START, P(1, "t"), groups, 1.0)
        got = await store.get_all(1)
        assert sorted(got) == list(range(n))
        assert [got[i].successes for i in (0, SCAN_CHUNK, n - 1)] == [
            0,
            SCAN_CHUNK % 9,
            (n - 1) % 9,
        ]
        table = await store.get_table(1)  # the same counts as arrays, row for row
        assert sorted(table.idx.tolist()) == list(range(n))
        for row, i in enumerate(table.idx.tolist()):
            s = got[i]
            assert table.table[row].tolist() == [
                s.groups,
                s.rollouts,
                s.successes,
                s.last_step,
                s.disc_successes,
                s.disc_failures,
            ]
        assert table.decay(3, 0.5).tolist() == [0.125] * n  # every group at step 0
    finally:
        await store.flush()


async def test_catch_up_keeps_rows_another_reader_folded_past_its_snapshot(
    client: httpx.AsyncClient, state: AppState, uid: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Mid catch-up a refresh folds a newer group: not a lost log (SQLite keeps old snapshots)."""
    await make_dataset(client, f"d-{uid}", 4)
    await make_run(client, f"r-{uid}", f"d-{uid}")

    async def report(step: int) -> None:
        body = {"step": step, "results": [{"prompt_id": "p0", "rewards": [1.0, 0.0] * 4}]}
        assert (await client.post(f"/v1/runs/r-{uid}/outcomes", json=body)).status_code == 200

    await report(0)
    await report(1)
    await state.jobs.idle()
    async with state.sessionmaker() as s:
        rid = (await s.execute(select(Run.id).where(Run.name == f"r-{uid}"))).scalar_one()
    assert await state.hot.reset(rid, await state.hot.position(rid))
    hot = state.hot

    class Racing:
        """The run's real store; right after the first fold, another reader folds a newer row."""

        def __getattr__(self, name: str) -> Any:
            return getattr(hot, name)

        raced = False

        async def apply(self, *args: Any) -> bool:
            done = await hot.apply(*args)
            if not self.raced:
                self.raced = True
                await refresh(state.read_sessionmaker, hot, rid)
            return done

    caplog.set_level("WARNING", logger="service.hotstats.catch_up")
    async with state.read_sessionmaker() as session:
        target = (await session.get_one(Run, rid)).outcome_seq  # the snapshot starts here
        await report(2)
        await catch_up(session, cast(HotStore, Racing()), rid, target, 0.995)
    assert not [r for r in caplog.records if "does not hold" in r.getMessage()]
    assert (await hot.position(rid)).seq == target + 1, "the newer group was dropped"
