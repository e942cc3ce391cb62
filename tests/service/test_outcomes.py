"""The outcome log holds what was reported, in order, once: on PostgreSQL it is written by COPY."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import select

from service.models import Outcome, Run
from service.outcomes import service as outcomes_service
from service.state import AppState
from tests.fixtures.api import make_dataset, make_run


async def _logged(state: AppState, run: str) -> list[Outcome]:
    async with state.sessionmaker() as session:
        run_id = (await session.execute(select(Run.id).where(Run.name == run))).scalar_one()
        rows = await session.execute(
            select(Outcome).where(Outcome.run_id == run_id).order_by(Outcome.seq)
        )
        return list(rows.scalars())


async def test_reported_groups_are_logged_as_sent_in_order_once(
    client: httpx.AsyncClient, state: AppState, uid: str
) -> None:
    await make_dataset(client, f"d{uid}", 10)
    await make_run(client, f"r{uid}", f"d{uid}", group_size=4)
    first = {
        "step": 3,
        "results": [
            {"prompt_id": "p1", "rewards": [1.0, 0.0, 0.5, 0.25]},
            {
                "prompt_id": "p2",
                "rewards": [1.0, 1.0, 1.0, 1.0],
                "mean_logprob": -0.75,
                "response_lengths": [10, 20, 30, 40],
            },
        ],
    }
    r = await client.post(f"/v1/runs/r{uid}/outcomes", json=first)
    assert r.json() == {"accepted": 2, "duplicates": 0}, r.text
    r = await client.post(f"/v1/runs/r{uid}/outcomes", json=first)
    assert r.json() == {"accepted": 0, "duplicates": 2}, r.text
    second = {"step": 4, "results": [{"prompt_id": "p1", "rewards": [0.0, 0.0, 0.0, 0.0]}]}
    assert (await client.post(f"/v1/runs/r{uid}/outcomes", json=second)).status_code == 200

    rows = await _logged(state, f"r{uid}")
    assert [r.seq for r in rows] == [1, 2, 3]
    assert [r.step for r in rows] == [3, 3, 4]
    a, b, c = rows
    assert a.rewards == [1.0, 0.0, 0.5, 0.25]
    assert (a.n, a.successes, a.reward_mean, a.zero_variance) == (4, 2, 0.4375, False)
    assert a.mean_logprob is None and a.response_lengths is None
    assert b.rewards == [1.0, 1.0, 1.0, 1.0] and b.zero_variance and b.reward_std == 0.0
    assert (b.mean_logprob, b.response_lengths) == (-0.75, [10, 20, 30, 40])
    assert c.prompt_id == a.prompt_id and c.prompt_idx == a.prompt_idx and c.successes == 0
    assert a.dedup_key != c.dedup_key


async def test_the_log_is_written_by_copy_on_postgres_and_rolls_back_with_the_request(
    client: httpx.AsyncClient, state: AppState, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """COPY runs on the raw connection: its rows must still share the request's transaction."""
    await make_dataset(client, f"d{uid}", 10)
    await make_run(client, f"r{uid}", f"d{uid}", group_size=2)
    copies: list[str] = []
    real_copy = asyncpg.Connection.copy_records_to_table

    async def counting_copy(self: asyncpg.Connection, table: str, **kw: Any) -> Any:
        copies.append(table)
        return await real_copy(self, table, **kw)

    async def fail_after_the_insert(*args: Any, **kw: Any) -> None:
        raise RuntimeError("fault injected after the outcome rows were written")

    monkeypatch.setattr(asyncpg.Connection, "copy_records_to_table", counting_copy)
    monkeypatch.setattr(outcomes_service, "_release_leases", fail_after_the_insert)
    body = {"step": 0, "results": [{"prompt_id": "p1", "rewards": [1.0, 0.0]}]}
    r = await client.post(f"/v1/runs/r{uid}/outcomes", json=body)
    assert r.status_code == 500 and r.json()["type"] == "internal_error", r.text
    postgres = state.engine.dialect.name == "postgresql"
    assert copies == (["outcomes"] if postgres else [])
    assert await _logged(state, f"r{uid}") == []
    run = (await client.get(f"/v1/runs/r{uid}")).json()
    assert run["outcomes"] == 0

    monkeypatch.undo()
    r = await client.post(f"/v1/runs/r{uid}/outcomes", json=body)
    assert r.json() == {"accepted": 1, "duplicates": 0}, r.text
    assert [o.seq for o in await _logged(state, f"r{uid}")] == [1]
