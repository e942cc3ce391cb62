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


async def test_a_group_counts_once_with_or_without_its_batch_id(
    client: httpx.AsyncClient, state: AppState, uid: str
) -> None:
    """The key is (step, partition, prompt): a batch's, or the report's own."""
    await make_dataset(client, f"d{uid}", 10)
    await make_run(client, f"r{uid}", f"d{uid}", group_size=4, strategy="uniform")
    served = await client.post(
        f"/v1/runs/r{uid}/batches", json={"step": 2, "size": 2, "partition": "1"}
    )
    batch = served.json()
    pid = batch["prompts"][0]["id"]
    group = [{"prompt_id": pid, "rewards": [1.0, 0.0, 0.0, 0.0]}]
    with_id = {"step": 2, "batch_id": batch["batch_id"], "results": group}
    without = {"step": 2, "partition": "1", "results": group}
    for body, accepted in ((with_id, 1), (without, 0), (with_id, 0)):
        ack = (await client.post(f"/v1/runs/r{uid}/outcomes", json=body)).json()
        assert ack == {"accepted": accepted, "duplicates": 1 - accepted}, body
    # sent first without, then with its batch: once as well
    other = batch["prompts"][1]["id"]
    group = [{"prompt_id": other, "rewards": [1.0, 1.0, 0.0, 0.0]}]
    for body, accepted in (
        ({"step": 2, "partition": "1", "results": group}, 1),
        ({"step": 2, "batch_id": batch["batch_id"], "results": group}, 0),
    ):
        ack = (await client.post(f"/v1/runs/r{uid}/outcomes", json=body)).json()
        assert ack["accepted"] == accepted, body
    assert [(o.step, o.successes) for o in await _logged(state, f"r{uid}")] == [(2, 1), (2, 2)]
    # a batch_id and another partition contradict each other
    wrong = {"step": 2, "batch_id": batch["batch_id"], "partition": "0", "results": group}
    r = await client.post(f"/v1/runs/r{uid}/outcomes", json=wrong)
    assert r.status_code == 422 and r.json()["field"] == "partition"


async def test_two_partitions_at_one_step_without_batch_ids_both_count(
    client: httpx.AsyncClient, state: AppState, uid: str
) -> None:
    await make_dataset(client, f"d{uid}", 10)
    await make_run(client, f"r{uid}", f"d{uid}", group_size=4)
    for partition, k in (("0", 1), ("1", 3), ("1", 3), (None, 1)):
        body: dict[str, Any] = {
            "step": 7,
            "results": [{"prompt_id": "p3", "rewards": [1.0] * k + [0.0] * (4 - k)}],
        }
        if partition is not None:
            body["partition"] = partition
        await client.post(f"/v1/runs/r{uid}/outcomes", json=body)
    # partition 1's retry and the report without a partition (partition "0") are re-sends
    assert [o.successes for o in await _logged(state, f"r{uid}")] == [1, 3]
    stats = (await client.get(f"/v1/runs/r{uid}/prompts/p3")).json()
    assert (stats["observations"], stats["successes"]) == (2, 4)
