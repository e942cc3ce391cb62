"""A run started from another run's per-prompt history (`history_from`), on both backends."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from service.estimator.history import DEFAULT_STRENGTH, learn_strength
from service.models import Run
from service.state import AppState
from tests.fixtures.api import make_dataset, make_run

G = 8


async def _report(
    client: httpx.AsyncClient, run: str, step: int, groups: dict[str, list[float]]
) -> None:
    results = [{"prompt_id": pid, "rewards": r} for pid, r in groups.items()]
    r = await client.post(f"/v1/runs/{run}/outcomes", json={"step": step, "results": results})
    assert r.status_code == 200, r.text


async def _predict(client: httpx.AsyncClient, run: str, ids: list[str]) -> list[dict[str, Any]]:
    r = await client.post(f"/v1/runs/{run}/predict", json={"prompt_ids": ids})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def _flush_hot(state: AppState) -> None:
    """A real FLUSHDB on the test Redis database; clearing the in-process store otherwise."""
    if state.settings.redis_url:
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(state.settings.redis_url)
        await r.flushdb()
        await r.aclose()
    else:
        await state.hot.flush()


async def test_history_from_copies_the_source_counts_into_the_prior(
    client: httpx.AsyncClient, state: AppState, uid: str
) -> None:
    prompts = await make_dataset(client, f"ds-{uid}", 40)
    ids = [p["id"] for p in prompts]
    src, new, cold = f"src-{uid}", f"new-{uid}", f"cold-{uid}"
    await make_run(client, src, f"ds-{uid}")
    # the source solved p0-p9 and failed p10-p19, twice each; it never rolled out p20-p39
    for step in (0, 1):
        await _report(
            client,
            src,
            step,
            {pid: [1.0] * G for pid in ids[:10]} | {pid: [0.0] * G for pid in ids[10:20]},
        )
    made = await make_run(client, new, f"ds-{uid}", history_from=src)
    await make_run(client, cold, f"ds-{uid}")
    assert made["history_from"] == src and made["init_from"] is None
    hist = made["history"]
    assert hist["source"] == src and hist["prompts"] == 20 and hist["source_seq"] == 40
    assert hist["strength"] == DEFAULT_STRENGTH and hist["learned"] is False
    assert hist["weight"] == pytest.approx(DEFAULT_STRENGTH / (DEFAULT_STRENGTH + G))
    # counts discounted to the source's newest step (step 0's weigh 0.995), at the default
    # strength: n rollouts count at weight kappa / (kappa + n)
    counts = G * 0.995 + G
    pseudo = counts * DEFAULT_STRENGTH / (DEFAULT_STRENGTH + counts)
    want = (1 + pseudo) / (2 + pseudo)
    est = await _predict(client, new, ids[:30])
    base = await _predict(client, cold, ids[:30])
    assert [x["pass_rate"] for x in est[:10]] == pytest.approx([want] * 10)
    assert [x["pass_rate"] for x in est[10:20]] == pytest.approx([1 - want] * 10)
    assert [x["pass_rate"] for x in est[20:]] == pytest.approx([x["pass_rate"] for x in base[20:]])
    assert all(x["observations"] == 0 for x in est)  # the source's groups are not this run's
    # a copy: what the source learns afterwards does not reach the run
    await _report(client, src, 2, {pid: [0.0] * G for pid in ids[:10]})
    again = await _predict(client, new, ids[:10])
    assert [x["pass_rate"] for x in again] == pytest.approx([want] * 10)
    info = (await client.get(f"/v1/runs/{new}/predictor")).json()
    assert info["history_from"] == src


async def test_history_from_is_checked_before_anything_is_written(
    client: httpx.AsyncClient, uid: str
) -> None:
    await make_dataset(client, f"ds-{uid}", 5)
    await make_dataset(client, f"other-{uid}", 5)
    await make_run(client, f"src-{uid}", f"ds-{uid}")
    await make_run(client, f"elsewhere-{uid}", f"other-{uid}")
    body = {"name": f"r-{uid}", "dataset": f"ds-{uid}", "group_size": G}
    for source in ("nope", f"elsewhere-{uid}"):
        bad = await client.post("/v1/runs", json=body | {"history_from": source})
        assert bad.status_code == 422 and bad.json()["field"] == "history_from", bad.text
        assert (await client.get(f"/v1/runs/r-{uid}")).status_code == 404
    made = await client.post("/v1/runs", json=body | {"history_from": f"src-{uid}"})
    assert made.status_code == 201, made.text
    same = await client.post("/v1/runs", json=body | {"history_from": f"src-{uid}"})
    assert same.status_code == 200 and same.json()["history"] == made.json()["history"]
    await make_run(client, f"src2-{uid}", f"ds-{uid}")
    for other in ({"history_from": f"src2-{uid}"}, {}):
        clash = await client.post("/v1/runs", json=body | other)
        assert clash.status_code == 409 and clash.json()["field"] == "history_from", clash.text


def _rates(n: int, rng: np.random.Generator) -> np.ndarray:
    """Prompts either nearly always or nearly never solved: what a source run tells apart."""
    return np.where(rng.random(n) < 0.5, 0.05, 0.95)


def _groups(ids: list[str], rates: np.ndarray, rng: np.random.Generator) -> dict[str, list[float]]:
    return {
        pid: (rng.random(G) < p).astype(float).tolist() for pid, p in zip(ids, rates, strict=True)
    }


@pytest.mark.parametrize("agree", [True, False])
async def test_the_weight_is_learned_from_the_runs_own_outcomes(
    client: httpx.AsyncClient, state: AppState, uid: str, agree: bool
) -> None:
    n = 120
    prompts = await make_dataset(client, f"ds-{uid}", n)
    await state.jobs.idle()  # embedded, so the run's first fit can run
    ids = [p["id"] for p in prompts]
    rng = np.random.default_rng(0)
    rates = _rates(n, rng)
    src, new = f"src-{uid}", f"new-{uid}"
    await make_run(client, src, f"ds-{uid}")
    for step in (0, 1):
        await _report(client, src, step, _groups(ids, rates, rng))
    # the new policy solves the same prompts as the source, or the opposite ones
    now = rates if agree else 1 - rates
    await make_run(client, new, f"ds-{uid}", history_from=src, selection={"fit_min_outcomes": n})
    await _report(client, new, 0, _groups(ids, now, rng))
    await state.jobs.idle()
    hist = (await client.get(f"/v1/runs/{new}")).json()["history"]
    assert hist["learned"] and hist["weight_prompts"] == n, hist
    if agree:
        assert hist["weight"] >= 0.8, hist
    else:
        assert hist["weight"] <= 0.1, hist
    page = (await client.get(f"/admin/runs/{new}")).text
    line = page.split('<p id="history">', 1)[1].split("</p>", 1)[0]
    assert src in line and f"weight {hist['weight']:.2f} a group" in line, line
    assert f"learned on {n} prompts" in line, line
    # the estimate uses the learned weight: where the runs disagree, this run's own group
    # wins; at the default weight the source's 16 rollouts would hold it near the middle
    est = await _predict(client, new, ids)
    mean = np.array([x["pass_rate"] for x in est])
    solved = now > 0.5
    assert mean[solved].mean() > 0.7 and mean[~solved].mean() < 0.3, (
        mean[solved].mean(),
        mean[~solved].mean(),
    )


def test_learn_strength_trusts_the_source_as_far_as_it_predicts() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(0.02, 0.98, 3000)
    src = rng.binomial(16, p).astype(float)
    own = rng.binomial(8, p).astype(float)
    # p ~ U(0, 1) and the source's counts: the exact posterior is about Beta(1 + s, 1 + f): w near 1
    k, used = learn_strength(src, 16 - src, own, 8 - own, 1.0, 1.0)
    assert used == 3000 and k >= 64
    # an unrelated source: its counts say nothing about this run's rates
    q = rng.permutation(p)
    other = rng.binomial(16, q).astype(float)
    k, _ = learn_strength(other, 16 - other, own, 8 - own, 1.0, 1.0)
    assert k <= 1
    # too few prompts with both histories: the default
    none = np.zeros(3000)
    none[:10] = 8
    k, used = learn_strength(src, 16 - src, none, np.zeros(3000), 1.0, 1.0)
    assert (k, used) == (DEFAULT_STRENGTH, 10)
    # a related model: each prompt's rate moves by N(0, 1) logit; however many rollouts the
    # source made, its history is worth a few, so kappa stays bounded as its counts grow
    z = np.log(p / (1 - p)) + rng.normal(0.0, 1.0, len(p))
    near = rng.binomial(8, 1 / (1 + np.exp(-z))).astype(float)
    few = learn_strength(src, 16 - src, near, 8 - near, 1.0, 1.0)[0]
    many = rng.binomial(256, p).astype(float)
    lots = learn_strength(many, 256 - many, near, 8 - near, 1.0, 1.0)[0]
    assert 2 <= lots <= 32 and 2 <= few <= 64, (few, lots)


async def test_history_survives_losing_the_hot_stats(
    client: httpx.AsyncClient, state: AppState, uid: str
) -> None:
    prompts = await make_dataset(client, f"ds-{uid}", 30)
    ids = [p["id"] for p in prompts]
    rng = np.random.default_rng(2)
    src, new = f"src-{uid}", f"new-{uid}"
    await make_run(client, src, f"ds-{uid}")
    await _report(client, src, 0, _groups(ids[:20], _rates(20, rng), rng))
    await make_run(client, new, f"ds-{uid}", history_from=src)
    await _report(client, new, 0, _groups(ids[10:25], _rates(15, rng), rng))
    before = await _predict(client, new, ids)
    await _flush_hot(state)
    state.predictor_cache.histories.clear()  # as a replica that never read it
    after = await _predict(client, new, ids)
    assert [x["pass_rate"] for x in after] == pytest.approx([x["pass_rate"] for x in before])
    assert [x["observations"] for x in after] == [x["observations"] for x in before]
    # the source's own stats were rebuilt from its log, and a new copy equals the first
    async with state.sessionmaker() as s:
        assert (await s.execute(select(Run.id).where(Run.name == new))).scalar_one()
    made = await make_run(client, f"again-{uid}", f"ds-{uid}", history_from=src)
    first = (await client.get(f"/v1/runs/{new}")).json()["history"]
    assert {k: made["history"][k] for k in ("prompts", "source_seq", "source_step")} == {
        k: first[k] for k in ("prompts", "source_seq", "source_step")
    }
    copied = await _predict(client, f"again-{uid}", ids[:10])
    cold_on_new = [x["pass_rate"] for x in before[:10]]  # ids 0-9: no own groups in `new`
    assert [x["pass_rate"] for x in copied] == pytest.approx(cold_on_new)
