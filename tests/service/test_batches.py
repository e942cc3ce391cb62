"""Batch contract: same key same batch, leases keep partitions disjoint, epochs don't repeat."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from service.state import AppState
from tests.fixtures.api import make_dataset, make_run


async def test_same_step_and_partition_returns_same_batch(
    client: httpx.AsyncClient, uid: str
) -> None:
    await make_dataset(client, f"ds-{uid}", 100)
    await make_run(client, f"run-{uid}", f"ds-{uid}")
    url = f"/v1/runs/run-{uid}/batches"
    a = (await client.post(url, json={"step": 3, "size": 16, "partition": "rank0"})).json()
    b = (await client.post(url, json={"step": 3, "size": 16, "partition": "rank0"})).json()
    assert a == b
    c = (await client.post(url, json={"step": 3, "size": 16, "partition": "rank1"})).json()
    assert c["batch_id"] != a["batch_id"]
    assert not {p["id"] for p in a["prompts"]} & {p["id"] for p in c["prompts"]}
    r = await client.post(url, json={"step": 3, "size": 8, "partition": "rank0"})
    assert r.status_code == 409 and r.json()["field"] == "size"


async def test_concurrent_requests_get_disjoint_prompts(
    client: httpx.AsyncClient, uid: str
) -> None:
    await make_dataset(client, f"ds-{uid}", 200)
    await make_run(client, f"run-{uid}", f"ds-{uid}", strategy="uniform")
    url = f"/v1/runs/run-{uid}/batches"
    replies = await asyncio.gather(
        *[client.post(url, json={"step": 0, "size": 20, "partition": f"p{i}"}) for i in range(8)]
    )
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    ids = [p["id"] for r in replies for p in r.json()["prompts"]]
    assert len(ids) == 160 == len(set(ids))
    # the same key asked concurrently yields one batch
    same = await asyncio.gather(*[client.post(url, json={"step": 1, "size": 10}) for _ in range(4)])
    assert len({r.json()["batch_id"] for r in same}) == 1


async def test_leases_block_until_reported_or_expired(client: httpx.AsyncClient, uid: str) -> None:
    await make_dataset(client, f"ds-{uid}", 30)
    await make_run(
        client,
        f"run-{uid}",
        f"ds-{uid}",
        group_size=2,
        strategy="uniform",
        selection={"lease_seconds": 0.5},
    )
    url = f"/v1/runs/run-{uid}/batches"
    first = (await client.post(url, json={"step": 0, "size": 20})).json()
    r = await client.post(url, json={"step": 1, "size": 20})
    assert r.status_code == 409, "only 10 prompts are free while 20 are leased"
    results = [{"prompt_id": p["id"], "rewards": [1, 0]} for p in first["prompts"][:10]]
    await client.post(
        f"/v1/runs/run-{uid}/outcomes",
        json={"step": 0, "batch_id": first["batch_id"], "results": results},
    )
    second = await client.post(url, json={"step": 1, "size": 20})
    assert second.status_code == 200, second.text
    still_out = {p["id"] for p in first["prompts"][10:]}
    assert not still_out & {p["id"] for p in second.json()["prompts"]}
    await asyncio.sleep(0.6)  # every lease has expired now
    third = await client.post(url, json={"step": 2, "size": 30})
    assert third.status_code == 200, third.text


async def test_epoch_serves_every_prompt_once_before_repeating(
    client: httpx.AsyncClient, uid: str
) -> None:
    await make_dataset(client, f"ds-{uid}", 50)
    await make_run(client, f"run-{uid}", f"ds-{uid}", group_size=2, strategy="uniform")
    seen: list[str] = []
    epochs = []
    for step in range(10):
        b = (
            await client.post(f"/v1/runs/run-{uid}/batches", json={"step": step, "size": 10})
        ).json()
        seen += [p["id"] for p in b["prompts"]]
        epochs.append(b["stats"]["epoch"])
        results = [{"prompt_id": p["id"], "rewards": [1, 0]} for p in b["prompts"]]
        await client.post(
            f"/v1/runs/run-{uid}/outcomes",
            json={"step": step, "batch_id": b["batch_id"], "results": results},
        )
    assert len(set(seen[:50])) == 50 and len(set(seen[50:])) == 50
    assert epochs == [1] * 5 + [2] * 5
    assert seen[:50] != seen[50:], "each epoch has its own order"


async def test_epoch_rollover_inside_a_batch(client: httpx.AsyncClient, uid: str) -> None:
    await make_dataset(client, f"ds-{uid}", 25)
    await make_run(client, f"run-{uid}", f"ds-{uid}", group_size=2, strategy="uniform")
    ids = []
    for step in range(2):
        b = (
            await client.post(f"/v1/runs/run-{uid}/batches", json={"step": step, "size": 20})
        ).json()
        ids.append([p["id"] for p in b["prompts"]])
        results = [{"prompt_id": p, "rewards": [0, 1]} for p in ids[-1]]
        await client.post(
            f"/v1/runs/run-{uid}/outcomes",
            json={"step": step, "batch_id": b["batch_id"], "results": results},
        )
    assert len(set(ids[1])) == 20
    assert set(ids[0]) | set(ids[1]) == {f"p{i}" for i in range(25)}


async def test_outcomes_are_idempotent(client: httpx.AsyncClient, uid: str) -> None:
    await make_dataset(client, f"ds-{uid}", 40)
    await make_run(client, f"run-{uid}", f"ds-{uid}", group_size=4)
    b = (await client.post(f"/v1/runs/run-{uid}/batches", json={"step": 0, "size": 10})).json()
    results = [{"prompt_id": p["id"], "rewards": [1, 1, 0, 0]} for p in b["prompts"]]
    body = {"step": 0, "batch_id": b["batch_id"], "results": results}
    acks = [(await client.post(f"/v1/runs/run-{uid}/outcomes", json=body)).json() for _ in range(3)]
    assert acks == [{"accepted": 10, "duplicates": 0}] + [{"accepted": 0, "duplicates": 10}] * 2
    # concurrent re-sends of a new report still count once
    unbatched = {"step": 5, "results": [{"prompt_id": "p0", "rewards": [1, 0, 0, 0]}] * 2}
    replies = await asyncio.gather(
        *[client.post(f"/v1/runs/run-{uid}/outcomes", json=unbatched) for _ in range(5)]
    )
    assert sum(r.json()["accepted"] for r in replies) == 1
    info = (await client.get(f"/v1/runs/run-{uid}")).json()
    assert info["outcomes"] == 11 and info["rollouts"] == 44 and info["successes"] == 21
    p0 = (await client.get(f"/v1/runs/run-{uid}/prompts/p0")).json()
    assert [h["step"] for h in p0["history"]].count(5) == 1


async def test_redis_flush_mid_run_keeps_counts_exact(
    client: httpx.AsyncClient, state: AppState, uid: str
) -> None:
    await make_dataset(client, f"ds-{uid}", 200)
    await make_run(client, f"run-{uid}", f"ds-{uid}", group_size=4)
    expected: dict[str, list[int]] = {}
    for step in range(6):
        b = (
            await client.post(f"/v1/runs/run-{uid}/batches", json={"step": step, "size": 30})
        ).json()
        results = []
        for j, p in enumerate(b["prompts"]):
            k = (j + step) % 5
            rewards = [1.0] * min(k, 4) + [0.0] * (4 - min(k, 4))
            results.append({"prompt_id": p["id"], "rewards": rewards})
            exp = expected.setdefault(p["id"], [0, 0, 0])
            exp[0] += 1
            exp[1] += 4
            exp[2] += min(k, 4)
        await client.post(
            f"/v1/runs/run-{uid}/outcomes",
            json={"step": step, "batch_id": b["batch_id"], "results": results},
        )
        if step == 2:
            await _flush_cache(state)
    await _flush_cache(state)
    summary = (await client.get(f"/v1/runs/run-{uid}/summary")).json()
    assert summary["groups"] == 180 and summary["prompts_seen"] == len(expected)
    for pid, (groups, rollouts, successes) in list(expected.items())[:40]:
        got = (await client.get(f"/v1/runs/run-{uid}/prompts/{pid}")).json()
        assert (got["observations"], got["rollouts"], got["successes"]) == (
            groups,
            rollouts,
            successes,
        )


async def _flush_cache(state: AppState) -> None:
    """A real FLUSHDB on the test Redis database; clearing the in-process cache otherwise."""
    if state.settings.redis_url:
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(state.settings.redis_url)
        await r.flushdb()
        await r.aclose()
    else:
        await state.hot.flush()
    assert await state.hot.get_all(1) == {}


@pytest.mark.parametrize("discount", [1.0, 0.9])
async def test_estimate_follows_discounted_history(
    client: httpx.AsyncClient, uid: str, discount: float
) -> None:
    await make_dataset(client, f"ds-{uid}", 5)
    await make_run(
        client, f"run-{uid}", f"ds-{uid}", group_size=4, selection={"discount": discount}
    )
    url = f"/v1/runs/run-{uid}/outcomes"
    await client.post(
        url, json={"step": 0, "results": [{"prompt_id": "p0", "rewards": [0, 0, 0, 0]}]}
    )
    await client.post(
        url, json={"step": 10, "results": [{"prompt_id": "p0", "rewards": [1, 1, 1, 1]}]}
    )
    est = (await client.get(f"/v1/runs/run-{uid}/prompts/p0")).json()["estimate"]
    assert est["alpha"] == pytest.approx(1 + 4)
    assert est["beta"] == pytest.approx(1 + 4 * discount**10)


async def test_no_repeats_within_epochs_across_straddling_batches(
    client: httpx.AsyncClient, uid: str
) -> None:
    """Scanned windows that cross an epoch boundary must not let a prompt repeat in the new epoch."""
    await make_dataset(client, f"ds-{uid}", 50)
    await make_run(
        client,
        f"run-{uid}",
        f"ds-{uid}",
        group_size=2,
        strategy="posterior",
        selection={"oversample": 2.5},
    )
    served: dict[int, list[str]] = {}
    for step in range(40):
        b = (
            await client.post(f"/v1/runs/run-{uid}/batches", json={"step": step, "size": 8})
        ).json()
        served.setdefault(b["stats"]["epoch"], []).extend(p["id"] for p in b["prompts"])
        results = [{"prompt_id": p["id"], "rewards": [1, 0]} for p in b["prompts"]]
        await client.post(
            f"/v1/runs/run-{uid}/outcomes",
            json={"step": step, "batch_id": b["batch_id"], "results": results},
        )
    assert len(served) >= 10
    for epoch, ids in served.items():
        assert len(ids) == len(set(ids)), (
            f"epoch {epoch} repeats {len(ids) - len(set(ids))} prompts"
        )
