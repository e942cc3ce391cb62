"""Every API test runs twice: on PostgreSQL + Redis, and on the embedded default."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from service.app import create_app
from service.config import Settings
from service.state import AppState

BACKENDS = [b for b in os.environ.get("DEPO_TEST_BACKENDS", "postgres,embedded").split(",") if b]
PG_ADMIN_URL = os.environ.get("DEPO_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("DEPO_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _with_db(url: str, db: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + db


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session", params=BACKENDS)
def settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """A fresh database per backend per session: migrations run once on it."""
    tag = uuid.uuid4().hex[:10]
    data_dir = tmp_path_factory.mktemp(f"depo-{request.param}")
    if request.param == "embedded":
        yield Settings(data_dir=data_dir, database_url=None, redis_url=None, api_keys=[])
        return
    db = f"depo_test_{tag}"
    asyncio.run(_admin(f'CREATE DATABASE "{db}"'))
    try:
        yield Settings(
            data_dir=data_dir,
            database_url=_with_db(PG_ADMIN_URL, db),
            redis_url=REDIS_URL,
            redis_prefix=f"depotest-{tag}",
            api_keys=[],
        )
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application
    if settings.redis_url:
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(settings.redis_url)
        keys = [k async for k in r.scan_iter(match=f"{settings.redis_prefix}:*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()


@pytest.fixture
def state(app: FastAPI) -> AppState:
    st: AppState = app.state.depo
    return st


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://depo.test", timeout=60) as c:
        yield c


@pytest.fixture
def uid() -> str:
    """Unique names keep tests independent inside one session database."""
    return uuid.uuid4().hex[:12]


async def make_dataset(
    client: httpx.AsyncClient, name: str, n: int, *, chunk: int = 10_000, prefix: str = "p"
) -> list[dict[str, Any]]:
    r = await client.post("/v1/datasets", json={"name": name})
    assert r.status_code in (200, 201), r.text
    prompts = [
        {"id": f"{prefix}{i}", "text": f"Problem {i}: compute {i} + {i * 7 % 13}."}
        for i in range(n)
    ]
    for start in range(0, n, chunk):
        r = await client.post(
            f"/v1/datasets/{name}/prompts", json={"prompts": prompts[start : start + chunk]}
        )
        assert r.status_code == 200, r.text
    return prompts


async def make_run(
    client: httpx.AsyncClient, name: str, dataset: str, group_size: int = 8, **extra: Any
) -> dict[str, Any]:
    r = await client.post(
        "/v1/runs", json={"name": name, "dataset": dataset, "group_size": group_size, **extra}
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


REPO_ROOT = Path(__file__).resolve().parents[1]
