"""The whole training loop through the API: dataset, 10,000 prompts, run, 50 steps."""

from __future__ import annotations

import random

import httpx
import pytest

from tests.fixtures.api import make_dataset, make_run


@pytest.mark.parametrize("strategy", ["posterior", "uniform"])
async def test_fifty_steps_of_batch_outcomes_summary(
    client: httpx.AsyncClient, uid: str, strategy: str
) -> None:
    ds, run, g, size = f"ds-{uid}", f"run-{uid}", 8, 64
    prompts = await make_dataset(client, ds, 10_000)
    assert (await client.get(f"/v1/datasets/{ds}")).json()["prompt_count"] == 10_000
    await make_run(client, run, ds, group_size=g, strategy=strategy)
    rng = random.Random(0)
    true_p = {p["id"]: rng.choice([0.0, 0.0, 0.2, 0.5, 0.8, 1.0]) for p in prompts}
    served: dict[int, set[str]] = {}
    all_served: set[str] = set()
    rollouts = zero_var = successes = 0
    for step in range(50):
        r = await client.post(f"/v1/runs/{run}/batches", json={"step": step, "size": size})
        assert r.status_code == 200, r.text
        batch = r.json()
        ids = [p["id"] for p in batch["prompts"]]
        assert len(ids) == size == len(set(ids))
        epoch = served.setdefault(batch["stats"]["epoch"], set())
        assert not epoch & set(ids), "a prompt repeated within an epoch"
        epoch |= set(ids)
        all_served |= set(ids)
        assert batch["stats"]["kept"] == size and batch["stats"]["scanned"] >= size
        results = []
        for pid in ids:
            rewards = [1.0 if rng.random() < true_p[pid] else 0.0 for _ in range(g)]
            rollouts += g
            successes += int(sum(rewards))
            zero_var += len(set(rewards)) == 1
            results.append({"prompt_id": pid, "rewards": rewards})
        ack = await client.post(
            f"/v1/runs/{run}/outcomes",
            json={"step": step, "batch_id": batch["batch_id"], "results": results},
        )
        assert ack.json() == {"accepted": size, "duplicates": 0}
    summary = (await client.get(f"/v1/runs/{run}/summary")).json()
    assert summary["groups"] == 50 * size
    assert summary["rollouts"] == rollouts
    assert summary["prompts_seen"] == len(all_served)
    assert sum(b["prompts"] for b in summary["pass_rate_histogram"]) == len(all_served)
    assert len(summary["zero_variance_by_step"]) == 50
    assert summary["zero_variance_share"] == pytest.approx(zero_var / (50 * size))
    info = (await client.get(f"/v1/runs/{run}")).json()
    assert info["steps_seen"] == 50 and info["last_step"] == 49
    assert info["successes"] == successes and info["batches_served"] == 50


async def test_posterior_prefers_prompts_near_half(client: httpx.AsyncClient, uid: str) -> None:
    """After one observed group per prompt, posterior serves mixed prompts over solved ones."""
    ds, run = f"ds-{uid}", f"run-{uid}"
    prompts = await make_dataset(client, ds, 400)
    await make_run(
        client,
        run,
        ds,
        group_size=8,
        strategy="posterior",
        selection={"explore": 0.0, "oversample": 4.0},
    )
    rng = random.Random(1)
    easy = {p["id"] for p in prompts if rng.random() < 0.5}
    results = [
        {"prompt_id": p["id"], "rewards": [1.0] * 8 if p["id"] in easy else [1.0, 0.0] * 4}
        for p in prompts
    ]
    r = await client.post(f"/v1/runs/{run}/outcomes", json={"step": 0, "results": results})
    assert r.json()["accepted"] == 400
    batch = (await client.post(f"/v1/runs/{run}/batches", json={"step": 1, "size": 40})).json()
    picked_easy = sum(p["id"] in easy for p in batch["prompts"])
    assert picked_easy == 0, f"{picked_easy} solved prompts served although 160 scanned"
    assert all(abs(p["predicted_pass_rate"] - 0.5) < 0.05 for p in batch["prompts"])
    assert batch["stats"]["scanned"] == 160 and batch["stats"]["survival_rate"] == 0.25
