"""Every API test runs twice: on PostgreSQL + Redis, and on the embedded default (tests/README.md)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI

from service.app import create_app
from service.config import Settings
from service.state import AppState
from tests.fixtures.backends import BACKENDS, NOTES, PG_ADMIN_URL, REDIS_URL, admin, with_db


def pytest_sessionstart(session: pytest.Session) -> None:
    """One line per backend that was missing: what was started instead, or what is skipped."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for note in NOTES:
        if reporter is not None:
            reporter.write_line(f"depo tests: {note}")


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
    asyncio.run(admin(f'CREATE DATABASE "{db}"'))
    try:
        yield Settings(
            data_dir=data_dir,
            database_url=with_db(PG_ADMIN_URL, db),
            redis_url=REDIS_URL,
            redis_prefix=f"depotest-{tag}",
            api_keys=[],
        )
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))


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
