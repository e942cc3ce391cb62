"""Routing: a tier per query from `/predict`'s pass rate, shares and pass rates per tier."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.state import AppState

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "deepscaler_passrate_dev.jsonl"
TIERS = [
    {"name": "small", "max_difficulty": 0.5},
    {"name": "mid", "max_difficulty": 0.8},
    {"name": "large"},
]


def _problems(n: int) -> list[dict[str, Any]]:
    if not DATA.exists():
        pytest.fail(f"labelled data missing at {DATA}")
    with DATA.open() as f:
        return [json.loads(next(f)) for _ in range(n)]


async def _fitted(
    client: httpx.AsyncClient, state: AppState, uid: str
) -> tuple[str, list[dict[str, Any]]]:
    rows = _problems(400)
    ds, run = f"ds-{uid}", f"run-{uid}"
    await client.post("/v1/datasets", json={"name": ds, "embedder": "hashing"})
    prompts = [{"id": p["id"], "text": p["problem"]} for p in rows]
    assert (await client.post(f"/v1/datasets/{ds}/prompts", json={"prompts": prompts})).is_success
    await state.jobs.idle()
    sel = {"fit_min_outcomes": 50, "refit_every": 100_000}
    body = {"name": run, "dataset": ds, "group_size": 8, "selection": sel}
    assert (await client.post("/v1/runs", json=body)).status_code == 201
    rng = np.random.default_rng(0)
    results = [
        {"prompt_id": p["id"], "rewards": (rng.random(8) < p["pass_rate"]).astype(float).tolist()}
        for p in rows[:300]
    ]
    assert (
        await client.post(f"/v1/runs/{run}/outcomes", json={"step": 0, "results": results})
    ).is_success
    await state.jobs.idle()
    return run, rows


async def test_route_ids_and_texts(client: httpx.AsyncClient, state: AppState, uid: str) -> None:
    run, rows = await _fitted(client, state, uid)
    ids = [p["id"] for p in rows]
    r = await client.post(f"/v1/runs/{run}/route", json={"prompt_ids": ids, "tiers": TIERS})
    assert r.status_code == 200, r.text
    body = r.json()
    pred = (await client.post(f"/v1/runs/{run}/predict", json={"prompt_ids": ids})).json()
    assert body["model_version"] == pred["model_version"] is not None
    for item, p in zip(body["items"], pred["items"], strict=True):
        assert item["id"] == p["id"] and item["pass_rate"] == p["pass_rate"]
        d = 1 - p["pass_rate"]
        assert item["difficulty"] == pytest.approx(d)
        assert item["tier"] == ("small" if d <= 0.5 else "mid" if d <= 0.8 else "large")
    assert body["unrouted"] == 0
    assert sum(t["count"] for t in body["tiers"]) == len(ids)
    for t in body["tiers"]:
        mine = [i["pass_rate"] for i in body["items"] if i["tier"] == t["name"]]
        assert t["count"] == len(mine) and t["share"] == pytest.approx(len(mine) / len(ids))
        assert t["expected_pass_rate"] == (pytest.approx(np.mean(mine)) if mine else None)
    assert len({i["tier"] for i in body["items"]}) >= 2, "every query in one tier"
    # raw texts: the prior alone, as /predict answers texts
    texts = [p["problem"] for p in rows[300:340]]
    r = await client.post(f"/v1/runs/{run}/route", json={"texts": texts, "tiers": TIERS[:2]})
    assert r.status_code == 200, r.text
    body = r.json()
    pt = (await client.post(f"/v1/runs/{run}/predict", json={"texts": texts})).json()["items"]
    assert [i["pass_rate"] for i in body["items"]] == [p["pass_rate"] for p in pt]
    assert all(i["id"] is None for i in body["items"])
    hard = [i for i in body["items"] if i["difficulty"] > 0.8]
    assert body["unrouted"] == len(hard) and all(i["tier"] is None for i in hard)


@pytest.mark.parametrize(
    "tiers",
    [
        [],
        [{"name": "a", "max_difficulty": 0.7}, {"name": "b", "max_difficulty": 0.3}],
        [{"name": "a", "max_difficulty": 0.5}, {"name": "b", "max_difficulty": 0.5}],
        [{"name": "a", "max_difficulty": 0.2}, {"name": "a", "max_difficulty": 0.9}],
        [{"name": "a", "max_difficulty": 1.5}],
        [{"name": "a", "max_difficulty": -0.1}],
        [{"name": "a"}, {"name": "b", "max_difficulty": 0.9}],
        [{"name": "bad name/", "max_difficulty": 0.5}],
        [{"name": "a", "max_difficulty": 0.5, "cost": 3}],
    ],
)
async def test_route_bad_tiers(client: httpx.AsyncClient, uid: str, tiers: list[Any]) -> None:
    ds, run = f"ds-{uid}", f"run-{uid}"
    await client.post("/v1/datasets", json={"name": ds})
    await client.post(f"/v1/datasets/{ds}/prompts", json={"prompts": [{"id": "a", "text": "x"}]})
    await client.post("/v1/runs", json={"name": run, "dataset": ds, "group_size": 4})
    r = await client.post(f"/v1/runs/{run}/route", json={"prompt_ids": ["a"], "tiers": tiers})
    assert r.status_code == 422, r.text
    assert r.json()["field"].startswith("tiers"), r.json()


async def test_route_limits_and_unknowns(client: httpx.AsyncClient, uid: str) -> None:
    ds, run = f"ds-{uid}", f"run-{uid}"
    await client.post("/v1/datasets", json={"name": ds})
    await client.post(f"/v1/datasets/{ds}/prompts", json={"prompts": [{"id": "a", "text": "x"}]})
    await client.post("/v1/runs", json={"name": run, "dataset": ds, "group_size": 4})
    tiers = [{"name": "all"}]
    r = await client.post(f"/v1/runs/{run}/route", json={"prompt_ids": ["a", "zz"], "tiers": tiers})
    assert (
        r.status_code == 422 and r.json()["field"] == "prompt_ids" and r.json()["missing"] == ["zz"]
    )
    r = await client.post(f"/v1/runs/{run}/route", json={"texts": ["q"] * 10_001, "tiers": tiers})
    assert r.status_code == 422 and r.json()["field"] == "texts"
    r = await client.post(f"/v1/runs/{run}/route", json={"tiers": tiers})
    assert r.status_code == 422
    r = await client.post(f"/v1/runs/nope-{uid}/route", json={"texts": ["q"], "tiers": tiers})
    assert r.status_code == 404
    # before any fit: every query at the run's flat prior, one tier takes them all
    r = await client.post(f"/v1/runs/{run}/route", json={"texts": ["q", "r"], "tiers": tiers})
    assert r.status_code == 200 and r.json()["tiers"][0]["share"] == 1.0
    assert r.json()["model_version"] is None


async def _logged(state: AppState, run: str) -> list[Any]:
    from sqlalchemy import select

    from service.db import session_scope
    from service.models import Run
    from service.routing.log import recent

    async with session_scope(state.read_sessionmaker) as s:
        run_id = (await s.execute(select(Run.id).where(Run.name == run))).scalar_one()
        return await recent(s, run_id, 100)


async def test_route_log_once_per_answered_call(
    client: httpx.AsyncClient, state: AppState, uid: str
) -> None:
    ds, run = f"ds-{uid}", f"run-{uid}"
    await client.post("/v1/datasets", json={"name": ds})
    prompts = [{"id": f"p{i}", "text": f"q {i}"} for i in range(5)]
    await client.post(f"/v1/datasets/{ds}/prompts", json={"prompts": prompts})
    await client.post("/v1/runs", json={"name": run, "dataset": ds, "group_size": 4})
    tiers = [{"name": "small", "max_difficulty": 0.3}, {"name": "large", "max_difficulty": 0.9}]
    url = f"/v1/runs/{run}/route"
    ok = await client.post(url, json={"prompt_ids": ["p0", "p1", "p2"], "tiers": tiers})
    assert ok.status_code == 200, ok.text
    stepped = await client.post(url, json={"texts": ["a", "b"], "tiers": tiers, "step": 7})
    assert stepped.status_code == 200, stepped.text
    # rejected calls write nothing: an unknown id, bad tiers, a bad step
    for body in (
        {"prompt_ids": ["p0", "zz"], "tiers": tiers},
        {"prompt_ids": ["p0"], "tiers": tiers[::-1]},
        {"prompt_ids": ["p0"], "tiers": tiers, "step": -1},
    ):
        assert (await client.post(url, json=body)).status_code == 422
    logged = await _logged(state, run)
    assert [c.step for c in logged] == [None, 7]
    for call, answer in zip(logged, (ok.json(), stepped.json()), strict=True):
        assert call.items == len(answer["items"]) and call.unrouted == answer["unrouted"]
        assert list(call.tiers) == [(t["name"], t["count"]) for t in answer["tiers"]]
    assert logged[0].at <= logged[1].at
