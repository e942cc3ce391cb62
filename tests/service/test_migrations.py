"""Data migrations keep what existing rows meant; checked on a fresh database per backend."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from service.app import create_app
from service.config import Settings
from service.migrate import upgrade
from service.policy import SelectionConfig
from tests.fixtures.backends import BACKENDS, PG_ADMIN_URL, admin, with_db

BEFORE_FLOOR = "444c13189cb9"


@pytest.fixture(params=BACKENDS)
async def fresh(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Settings]:
    data_dir = tmp_path_factory.mktemp("migrate")
    common = {"data_dir": data_dir, "api_keys": [], "run_migrations_on_start": False}
    if request.param == "embedded":
        yield Settings(database_url=None, redis_url=None, **common)
        return
    db = f"depo_migrate_{uuid.uuid4().hex[:10]}"
    await admin(f'CREATE DATABASE "{db}"')
    try:
        yield Settings(database_url=with_db(PG_ADMIN_URL, db), redis_url=None, **common)
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


@asynccontextmanager
async def _client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://depo.test") as c:
            yield c


async def _rewrite_selection(
    settings: Settings, run: str, edit: Callable[[dict[str, Any]], object]
) -> None:
    """Change a stored run's selection in place, as older code could have stored it."""
    # a closed app's embedding pass may still be finishing its last write on SQLite: wait for it
    args = {"timeout": 60} if settings.is_sqlite else {}
    engine = create_async_engine(settings.async_database_url, connect_args=args)
    async with engine.begin() as conn:
        row = (
            await conn.execute(text("SELECT id, selection FROM runs WHERE name = :n"), {"n": run})
        ).one()
        sel = row.selection if isinstance(row.selection, dict) else json.loads(row.selection)
        edit(sel)
        await conn.execute(
            text("UPDATE runs SET selection = :s WHERE id = :i"),
            {"s": json.dumps(sel), "i": row.id},
        )
    await engine.dispose()


async def _downgrade(settings: Settings, revision: str) -> None:
    """Rows are made by today's code at head, then taken back to the schema under test."""
    from alembic import command

    from service.migrate import alembic_config

    if settings.is_sqlite:  # a closed app's embedding pass may still be finishing a write
        await asyncio.to_thread(_wait_for_the_write_lock, settings)
    await asyncio.to_thread(command.downgrade, alembic_config(settings), revision)


def _wait_for_the_write_lock(settings: Settings) -> None:
    conn = sqlite3.connect(settings.data_dir / "depo.db", timeout=60)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.rollback()
    finally:
        conn.close()


async def test_runs_from_before_the_selection_floor_keep_2(fresh: Settings) -> None:
    await upgrade(fresh)
    async with _client(fresh) as c:
        await c.post("/v1/datasets", json={"name": "d"})
        for name in ("old", "explicit"):
            body = {"name": name, "dataset": "d", "group_size": 8}
            if name == "explicit":
                body["selection"] = {"min_prior_strength": 6.0}
            assert (await c.post("/v1/runs", json=body)).status_code == 201
    await _downgrade(fresh, BEFORE_FLOOR)
    # what a run stored before the field existed: its selection without the key
    await _rewrite_selection(fresh, "old", lambda sel: sel.pop("min_prior_strength"))
    await upgrade(fresh)
    async with _client(fresh) as c:
        old = (await c.get("/v1/runs/old")).json()["selection"]
        explicit = (await c.get("/v1/runs/explicit")).json()["selection"]
        body = {"name": "new", "dataset": "d", "group_size": 8}
        new = (await c.post("/v1/runs", json=body)).json()["selection"]
    assert old["min_prior_strength"] == 2.0
    assert explicit["min_prior_strength"] == 6.0
    assert new["min_prior_strength"] == SelectionConfig().min_prior_strength


async def test_contradictory_selections_are_repaired(fresh: Settings) -> None:
    await upgrade(fresh)
    async with _client(fresh) as c:
        await c.post("/v1/datasets", json={"name": "d"})
        prompts = [{"id": f"p{i}", "text": f"problem {i}"} for i in range(20)]
        await c.post("/v1/datasets/d/prompts", json={"prompts": prompts})
        body = {"name": "odd", "dataset": "d", "group_size": 8, "strategy": "window"}
        assert (await c.post("/v1/runs", json=body)).status_code == 201
    await _downgrade(fresh, "5b1f0c2d9e41")
    # what older code let a run store, and the new settings refuse (group_size is 8: a
    # budget's n_min above it, n_max below n_min)
    odd = {"window_lo": 0.9, "window_hi": 0.1, "budget": True, "n_min": 12, "n_max": 3}
    await _rewrite_selection(fresh, "odd", lambda sel: sel.update(odd, prior_beta=1e-300))
    await upgrade(fresh)
    async with _client(fresh) as c:
        r = await c.get("/v1/runs/odd")
        assert r.status_code == 200, r.text
        sel = r.json()["selection"]
        batch = await c.post("/v1/runs/odd/batches", json={"step": 0, "size": 5})
        assert batch.status_code == 200, batch.text
    assert (sel["window_lo"], sel["window_hi"]) == (0.1, 0.9)
    assert (sel["n_min"], sel["n_max"]) == (8, 8)
    assert sel["prior_beta"] == 1e-3 and sel["prior_alpha"] == 1.0


async def test_runs_from_before_tracking_keep_their_estimates(fresh: Settings) -> None:
    await upgrade(fresh)
    async with _client(fresh) as c:
        await c.post("/v1/datasets", json={"name": "d"})
        body = {"name": "old", "dataset": "d", "group_size": 8}
        assert (await c.post("/v1/runs", json=body)).status_code == 201
    await _downgrade(fresh, "7c3d2e8a1f60")
    await _rewrite_selection(fresh, "old", lambda sel: sel.pop("tracking", None))
    await upgrade(fresh)
    async with _client(fresh) as c:
        old = (await c.get("/v1/runs/old")).json()["selection"]
        body = {"name": "new", "dataset": "d", "group_size": 8}
        new = (await c.post("/v1/runs", json=body)).json()["selection"]
    assert old["tracking"] is False
    assert new["tracking"] is True


async def test_dedupe_keys_are_rewritten_so_old_groups_stay_counted_once(fresh: Settings) -> None:
    await upgrade(fresh)
    group = {"prompt_id": "p1", "rewards": [1.0, 0.0]}
    async with _client(fresh) as c:
        await c.post("/v1/datasets", json={"name": "d"})
        prompts = [{"id": f"p{i}", "text": f"t{i}"} for i in range(4)]
        await c.post("/v1/datasets/d/prompts", json={"prompts": prompts})
        body = {"name": "r", "dataset": "d", "group_size": 2, "strategy": "uniform"}
        assert (await c.post("/v1/runs", json=body)).status_code == 201
        batch = (await c.post("/v1/runs/r/batches", json={"step": 2, "size": 4})).json()
        sent = {"step": 2, "batch_id": batch["batch_id"], "results": [group]}
        assert (await c.post("/v1/runs/r/outcomes", json=sent)).json()["accepted"] == 1
        sent = {"step": 3, "results": [group | {"prompt_id": "p2"}]}
        assert (await c.post("/v1/runs/r/outcomes", json=sent)).json()["accepted"] == 1
    await _downgrade(fresh, "9d4e6b1a2c07")
    args = {"timeout": 60} if fresh.is_sqlite else {}
    engine = create_async_engine(fresh.async_database_url, connect_args=args)
    async with engine.begin() as conn:
        keys = (await conn.execute(text("SELECT dedup_key FROM outcomes ORDER BY seq"))).scalars()
        legacy = list(keys)
        assert [k[:2] for k in legacy] == ["b:", "s:"]
        # the old keys let the batch's group in twice: once more without its batch_id
        await conn.execute(
            text(
                "INSERT INTO outcomes (run_id, seq, prompt_id, prompt_idx, step, dedup_key, "
                "rewards, n, successes, reward_mean, reward_std, zero_variance, received_at) "
                "SELECT run_id, 3, prompt_id, prompt_idx, step, 's:2:' || prompt_id, rewards, n, "
                "successes, reward_mean, reward_std, zero_variance, received_at FROM outcomes "
                "WHERE seq = 1"
            )
        )
        await conn.execute(text("UPDATE runs SET outcome_seq = 3, groups = 3"))
    await engine.dispose()  # its prepared statements know the old columns
    await upgrade(fresh)
    engine = create_async_engine(fresh.async_database_url, connect_args=args)
    async with engine.begin() as conn:
        keys = (await conn.execute(text("SELECT dedup_key FROM outcomes ORDER BY seq"))).scalars()
        rewritten = list(keys)
    await engine.dispose()
    pk = legacy[0].rsplit(":", 1)[1]
    assert rewritten[0] == f"g:2:{pk}:0" and rewritten[1].startswith("g:3:")
    assert rewritten[2] == f"s:2:{pk}", "the old double keeps its key: no unique violation"
    async with _client(fresh) as c:
        for sent in (
            {"step": 2, "results": [group]},
            {"step": 2, "batch_id": batch["batch_id"], "results": [group]},
            {"step": 3, "partition": "0", "results": [group | {"prompt_id": "p2"}]},
        ):
            assert (await c.post("/v1/runs/r/outcomes", json=sent)).json()["accepted"] == 0


async def test_existing_datasets_and_runs_join_the_default_namespace(fresh: Settings) -> None:
    from service import keys
    from service.db import create_engine, create_sessionmaker, session_scope

    await upgrade(fresh)
    async with _client(fresh) as c:
        await c.post("/v1/datasets", json={"name": "d"})
        body = {"name": "r", "dataset": "d", "group_size": 8}
        assert (await c.post("/v1/runs", json=body)).status_code == 201
    await _downgrade(fresh, "b51e7d3a9c20")
    await upgrade(fresh)
    engine = create_engine(fresh)
    async with engine.begin() as conn:
        spaces = (
            (
                await conn.execute(
                    text("SELECT namespace FROM datasets UNION ALL SELECT namespace FROM runs")
                )
            )
            .scalars()
            .all()
        )
    async with session_scope(create_sessionmaker(engine)) as session:
        _, mine = await keys.add(session, "default")
        _, theirs = await keys.add(session, "team-a")
    await engine.dispose()
    assert spaces == ["default", "default"]
    async with _client(fresh) as c:
        own = {"Authorization": f"Bearer {mine}"}
        other = {"Authorization": f"Bearer {theirs}"}
        assert (await c.get("/v1/runs/r", headers=own)).json()["dataset"] == "d"
        assert (await c.get("/v1/runs/r", headers=other)).status_code == 404
        # names are unique per namespace now, not across them
        r = await c.post("/v1/datasets", json={"name": "d"}, headers=other)
        assert r.status_code == 201, r.text
        assert (await c.post("/v1/datasets", json={"name": "d"}, headers=own)).status_code == 200


async def test_the_replay_is_stored_uncompressed_and_no_key_locks_prompts(fresh: Settings) -> None:
    """A 90 MB replay spent 2.8 s in pglz per fit; each prompt key a row lock per logged group."""
    await upgrade(fresh)
    engine = create_async_engine(fresh.async_database_url)
    try:
        async with engine.connect() as conn:
            if fresh.is_sqlite:
                keys = [
                    (await conn.execute(text(f"PRAGMA foreign_key_list({t})"))).all()
                    for t in ("outcomes", "batch_items")
                ]
                assert [sorted(r[2] for r in rows) for rows in keys] == [["runs"], ["batches"]]
                return
            storage = await conn.scalar(
                text(
                    "SELECT attstorage FROM pg_attribute WHERE attrelid = "
                    "'predictor_versions'::regclass AND attname = 'tracking'"
                )
            )
            assert storage in ("e", b"e")  # a "char": bytes through asyncpg
            referenced = await conn.execute(
                text(
                    "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint "
                    "WHERE contype = 'f' AND conrelid::regclass::text IN ('outcomes', 'batch_items')"
                )
            )
            assert sorted(referenced.tuples()) == [("batch_items", "batches"), ("outcomes", "runs")]
    finally:
        await engine.dispose()
