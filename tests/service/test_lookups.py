"""Lookups by a unique key cost the keys' own rows, whatever PostgreSQL's statistics say.

With autovacuum off (as on the machine these tests run on) a table is never analysed, and
`dedup_key = ANY(:keys)` was planned as a scan of the run's whole log, each row tested against
the array: 2 s per 1,000 outcomes in a run of 100,000 at the 1,000,000-prompt scale benchmark.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import Select, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from service.datasets import service as datasets
from service.datasets.service import RESOLVE_SQL
from service.db import by_unique_key
from service.models import Outcome, Prompt, Run
from service.state import AppState
from tests.fixtures.api import make_dataset, make_run

LOGGED = 20_000


def _dedup_lookup(session: AsyncSession, run_id: int, keys: list[str]) -> Select[Any]:
    """The statement `outcomes.service._existing_keys` runs, for one chunk of keys."""
    return by_unique_key(session, Outcome.run_id == run_id, Outcome.dedup_key, keys)


async def _explain(state: AppState, run_id: int, keys: list[str]) -> str:
    """The plan PostgreSQL runs the lookup with, with its real parameters (EXPLAIN ANALYZE)."""
    async with state.sessionmaker() as session:
        stmt = _dedup_lookup(session, run_id, keys)
        conn = await session.connection()
        compiled = stmt.compile(dialect=conn.dialect)
        params = [compiled.params[name] for name in compiled.positiontup]
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        rows = await driver.fetch(f"EXPLAIN (ANALYZE, FORMAT JSON) {compiled}", *params)
        raw = rows[0][0]  # the engine's json codec may have decoded it already
        plan = json.dumps(json.loads(raw) if isinstance(raw, str) else raw)
        await session.rollback()
        return plan


async def test_dedup_lookup_probes_the_unique_index_on_a_never_analysed_log(
    client: httpx.AsyncClient, state: AppState, uid: str
) -> None:
    if state.engine.dialect.name != "postgresql":
        pytest.skip("a query plan of PostgreSQL's")
    await make_dataset(client, f"d{uid}", 4)
    await make_run(client, f"r{uid}", f"d{uid}")
    async with state.sessionmaker() as session:
        run_id = (await session.execute(select(Run.id).where(Run.name == f"r{uid}"))).scalar_one()
        pk = (await session.execute(select(Prompt.id).where(Prompt.client_id == "p0"))).scalar()
        # the statistics say this run has no outcomes; then its log grows past them
        await session.execute(text("ANALYZE outcomes"))
        await session.execute(
            text(
                "INSERT INTO outcomes (run_id, seq, prompt_id, prompt_idx, step, dedup_key, "
                "rewards, n, successes, reward_mean, reward_std, zero_variance, received_at) "
                "SELECT :run, g, :pk, 0, g, 'g:' || g || :tail, '[1.0, 0.0]', 2, 1, "
                "0.5, 0.5, false, now() FROM generate_series(1, :n) AS g"
            ),
            {"run": run_id, "pk": pk, "tail": f":{pk}:0", "n": LOGGED},
        )
        await session.commit()
    keys = [f"g:{s}:{pk}:0" for s in range(LOGGED - 499, LOGGED + 501)]
    plan = await _explain(state, run_id, keys)
    assert "uq_outcomes_run_id_dedup_key" in plan, plan
    assert "Rows Removed by Filter" not in plan, plan
    scanned = json.loads(plan)[0]["Plan"]
    assert scanned["Actual Rows"] == 500, plan  # the 500 logged keys, found by 1,000 probes

    # and the lookup the outcome route runs gives the same answer on either backend
    async with state.sessionmaker() as session:
        found = set((await session.execute(_dedup_lookup(session, run_id, keys))).scalars())
    assert found == set(keys[:500])


async def test_prompt_lookups_by_client_id_and_position_agree(
    client: httpx.AsyncClient, state: AppState, uid: str
) -> None:
    """Both backends: the unique-key helper finds exactly the stored rows, none twice."""
    from service.datasets import service as datasets

    await make_dataset(client, f"d{uid}", 50)
    async with state.sessionmaker() as session:
        ds = (
            await session.execute(text("SELECT id FROM datasets WHERE name = :n"), {"n": f"d{uid}"})
        ).scalar_one()
        ids = await datasets.resolve_ids(session, ds, ["p3", "p7", "nope", "p3", "p49"])
        assert set(ids) == {"p3", "p7", "p49"}
        assert [ids[k][1] for k in ("p3", "p7", "p49")] == [3, 7, 49]
        refs = await datasets.prompts_by_pos(session, ds, [49, 0, 7, 50])
        assert sorted(refs) == [0, 7, 49]
        assert refs[7].client_id == "p7" and refs[7].pk == ids["p7"][0]


async def test_an_embedding_pass_leaves_the_prompts_vacuumed(
    client: httpx.AsyncClient, state: AppState, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass rewrites every row it embeds; lookups by client id paid for the dead versions."""
    if state.engine.dialect.name != "postgresql":
        pytest.skip("VACUUM is PostgreSQL's")
    monkeypatch.setattr("service.embedding.VACUUM_MIN_ROWS", 40)  # a bulk pass, in small
    query = text("SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'prompts'")
    async with state.sessionmaker() as session:
        before = (await session.execute(query)).scalar_one()
    await make_dataset(client, f"d{uid}", 40)  # waits for the embedding pass
    await state.background.idle()
    async with state.sessionmaker() as session:
        after = (await session.execute(query)).scalar_one()
    assert after > before


async def test_client_ids_resolve_from_the_index_alone_once_vacuumed(
    client: httpx.AsyncClient, state: AppState, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each report resolves its client ids; a heap visit per id was 10 ms of 1,000 at 1,000,000."""
    if state.engine.dialect.name != "postgresql":
        pytest.skip("index-only scans are PostgreSQL's")
    monkeypatch.setattr("service.embedding.VACUUM_MIN_ROWS", 40)
    await make_dataset(client, f"d{uid}", 40)
    await state.background.idle()
    async with state.sessionmaker() as session:
        ds = (await session.execute(text(f"SELECT id FROM datasets WHERE name = 'd{uid}'"))).one()
        ids = await datasets.resolve_ids(session, ds.id, ["p3", "p17", "nope"])
        assert sorted(ids) == ["p17", "p3"]
        conn = await session.connection()
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        await driver.execute("SET LOCAL enable_seqscan = off")  # 40 rows: a scan would win
        rows = await driver.fetch(
            f"EXPLAIN (ANALYZE, FORMAT JSON) {RESOLVE_SQL}", ds.id, ["p3", "p17", "nope"]
        )
        raw = rows[0][0]
    plan = json.dumps(json.loads(raw) if isinstance(raw, str) else raw)
    assert '"Index Only Scan"' in plan and "ix_prompts_client_lookup" in plan, plan
    assert '"Heap Fetches": 0' in plan, plan
