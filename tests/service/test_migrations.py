"""Data migrations keep what existing rows meant; checked on a fresh database per backend."""

from __future__ import annotations

import json
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


async def test_runs_from_before_the_selection_floor_keep_2(fresh: Settings) -> None:
    await upgrade(fresh, BEFORE_FLOOR)
    async with _client(fresh) as c:
        await c.post("/v1/datasets", json={"name": "d"})
        for name in ("old", "explicit"):
            body = {"name": name, "dataset": "d", "group_size": 8}
            if name == "explicit":
                body["selection"] = {"min_prior_strength": 6.0}
            assert (await c.post("/v1/runs", json=body)).status_code == 201
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
    await upgrade(fresh, "5b1f0c2d9e41")
    async with _client(fresh) as c:
        await c.post("/v1/datasets", json={"name": "d"})
        prompts = [{"id": f"p{i}", "text": f"problem {i}"} for i in range(20)]
        await c.post("/v1/datasets/d/prompts", json={"prompts": prompts})
        body = {"name": "odd", "dataset": "d", "group_size": 8, "strategy": "window"}
        assert (await c.post("/v1/runs", json=body)).status_code == 201
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
    await upgrade(fresh, "7c3d2e8a1f60")
    async with _client(fresh) as c:
        await c.post("/v1/datasets", json={"name": "d"})
        body = {"name": "old", "dataset": "d", "group_size": 8}
        assert (await c.post("/v1/runs", json=body)).status_code == 201
    await _rewrite_selection(fresh, "old", lambda sel: sel.pop("tracking"))
    await upgrade(fresh)
    async with _client(fresh) as c:
        old = (await c.get("/v1/runs/old")).json()["selection"]
        body = {"name": "new", "dataset": "d", "group_size": 8}
        new = (await c.post("/v1/runs", json=body)).json()["selection"]
    assert old["tracking"] is False
    assert new["tracking"] is True
