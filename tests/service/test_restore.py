"""After `pg_restore --clean` of an older dump, every prompt's stats agree with the log again."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from service.app import create_app
from service.config import Settings
from service.models import Outcome, Prompt, Run
from service.state import AppState
from tests.fixtures.api import make_dataset, make_run
from tests.fixtures.backends import BACKENDS, PG_ADMIN_URL, REDIS_URL, admin, with_db

pytestmark = pytest.mark.skipif(
    "postgres" not in BACKENDS or shutil.which("pg_dump") is None,
    reason="needs PostgreSQL and pg_dump/pg_restore",
)


@pytest.fixture
async def restorable(tmp_path: Path) -> AsyncIterator[tuple[str, Settings]]:
    """A throwaway database of its own, never the session's or `test`."""
    db = f"depo_restore_{uuid.uuid4().hex[:10]}"
    await admin(f'CREATE DATABASE "{db}"')
    settings = Settings(
        data_dir=tmp_path,
        database_url=with_db(PG_ADMIN_URL, db),
        redis_url=REDIS_URL,
        redis_prefix=f"depotest-restore-{uuid.uuid4().hex[:8]}",
        api_keys=[],
    )
    try:
        yield with_db(PG_ADMIN_URL, db), settings
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


async def _report(c: httpx.AsyncClient, step: int, k: int) -> None:
    body = {"step": step, "results": [{"prompt_id": "p0", "rewards": [1.0] * k + [0.0] * (8 - k)}]}
    r = await c.post("/v1/runs/r/outcomes", json=body)
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text


async def _assert_stats_match_log(c: httpx.AsyncClient, state: AppState) -> None:
    async with state.read_sessionmaker() as session:
        rows = await session.execute(
            select(Prompt.client_id, func.count(), func.sum(Outcome.successes))
            .join(Outcome, Outcome.prompt_id == Prompt.id)
            .join(Run, Run.id == Outcome.run_id)
            .where(Run.name == "r")
            .group_by(Prompt.client_id)
        )
        logged = {pid: (n, int(k)) for pid, n, k in rows}
    for i in range(4):
        stats = (await c.get(f"/v1/runs/r/prompts/p{i}")).json()
        got = (stats["observations"], stats["successes"])
        assert got == logged.get(f"p{i}", (0, 0)), (f"p{i}", got, logged)


async def test_stats_agree_with_the_log_after_a_restore(
    restorable: tuple[str, Settings], tmp_path: Path
) -> None:
    url, settings = restorable
    dump = tmp_path / "depo.dump"
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        state: AppState = app.state.depo
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://depo.test") as c:
            await make_dataset(c, "d", 4)
            await make_run(c, "r", "d")
            await _report(c, 1, 4)
            await _assert_stats_match_log(c, state)
            subprocess.run(["pg_dump", "-Fc", "-f", str(dump), url], check=True)
            await _report(c, 2, 8)
            await _assert_stats_match_log(c, state)  # Redis now holds step 2
            await state.engine.dispose()  # as an operator stops the service to restore
            subprocess.run(
                ["pg_restore", "--clean", "--if-exists", "-d", url, str(dump)],
                check=True,
                capture_output=True,
            )
            # the log is behind the stats now: read before any new report
            await _assert_stats_match_log(c, state)
            await _report(c, 3, 0)
            await _report(c, 4, 2)
            await _assert_stats_match_log(c, state)
            stats = (await c.get("/v1/runs/r/prompts/p0")).json()
            assert (stats["observations"], stats["successes"]) == (3, 6)
            # the stats on the same seq as a lost row, from another ingest: rebuilt as well
            subprocess.run(
                ["pg_restore", "--clean", "--if-exists", "-d", url, str(dump)],
                check=True,
                capture_output=True,
            )
            await state.engine.dispose()
            await _report(c, 5, 1)
            await _report(c, 6, 1)
            await _report(c, 7, 1)
            await _assert_stats_match_log(c, state)
            stats = (await c.get("/v1/runs/r/prompts/p0")).json()
            assert (stats["observations"], stats["successes"]) == (4, 7)
