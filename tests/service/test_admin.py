"""Admin pages: runs listed, a run's difficulty, savings and predictor, behind the same key."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from service.app import create_app
from service.config import Settings
from service.state import AppState
from tests.fixtures.api import make_dataset, make_run


async def _drive(client: httpx.AsyncClient, run: str, steps: int) -> tuple[int, int, int]:
    """Serve and report `steps` batches of 10: half the groups mixed, half all-pass."""
    groups = zero = 0
    seen: set[str] = set()
    for step in range(steps):
        b = (await client.post(f"/v1/runs/{run}/batches", json={"step": step, "size": 10})).json()
        results = []
        for i, p in enumerate(b["prompts"]):
            rewards = [1.0] * 8 if i % 2 else [1.0, 0.0] * 4
            results.append({"prompt_id": p["id"], "rewards": rewards})
            groups += 1
            zero += i % 2
            seen.add(p["id"])
        body = {"step": step, "batch_id": b["batch_id"], "results": results}
        assert (await client.post(f"/v1/runs/{run}/outcomes", json=body)).status_code == 200
    return groups, zero, len(seen)


async def test_index_lists_runs_and_datasets(client: httpx.AsyncClient, uid: str) -> None:
    await make_dataset(client, f"ds-{uid}", 30)
    await make_run(client, f"run-{uid}", f"ds-{uid}")
    await _drive(client, f"run-{uid}", 2)
    r = await client.get("/admin/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    row = re.search(rf'<a href="runs/run-{uid}">run-{uid}</a>.*?</tr>', r.text)
    assert row is not None
    assert f"<td>ds-{uid}</td>" in row.group(0) and "<td>50.0%</td>" in row.group(0)
    assert f"<td>ds-{uid}</td><td>ngrams</td><td>30</td>" in r.text


async def test_run_page_shows_difficulty_savings_and_predictor(
    client: httpx.AsyncClient, state: AppState, uid: str
) -> None:
    await make_dataset(client, f"ds-{uid}", 40)
    await make_run(client, f"run-{uid}", f"ds-{uid}", selection={"fit_min_outcomes": 20})
    groups, zero, seen = await _drive(client, f"run-{uid}", 3)
    await state.jobs.idle()  # the background fit the 30 groups asked for
    r = await client.get(f"/admin/runs/run-{uid}")
    assert r.status_code == 200, r.text
    page = r.text
    assert f"<h1>Run run-{uid}</h1>" in page
    assert f"<td>{groups}</td><td>{groups * 8}</td><td>{100 * zero / groups:.1f}%</td>" in page
    # 15 informative groups took 240 rollouts: 16.0 per informative group
    assert "<td>rollouts per informative group</td><td>16.0</td>" in page
    assert page.count("<svg") == 3  # observed and estimated difficulty, zero-variance by step
    assert f"observed pass rate, {seen} prompts seen" in page
    assert "estimated pass rate, 40 prompts of the pool" in page
    assert "<td>trained on (groups)</td>" not in page  # a header cell, not a row
    assert "<th>trained on (groups)</th>" in page and "<td>fitted_prompts</td>" in page


async def test_unknown_run_is_404(client: httpx.AsyncClient, uid: str) -> None:
    r = await client.get(f"/admin/runs/missing-{uid}")
    assert r.status_code == 404 and r.json()["type"] == "not_found"


@pytest.fixture
async def keyed(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"api_keys": ["k1"]}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://depo.test") as c:
            yield c


async def test_admin_takes_the_key_as_basic_password_or_bearer(
    keyed: httpx.AsyncClient,
) -> None:
    r = await keyed.get("/admin/")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
    wrong = base64.b64encode(b"admin:nope").decode()
    assert (
        await keyed.get("/admin/", headers={"Authorization": f"Basic {wrong}"})
    ).status_code == 401
    assert (await keyed.get("/admin/", headers={"Authorization": "Basic !!"})).status_code == 401
    good = base64.b64encode(b"anyone:k1").decode()
    assert (
        await keyed.get("/admin/", headers={"Authorization": f"Basic {good}"})
    ).status_code == 200
    assert (await keyed.get("/admin/", headers={"Authorization": "Bearer k1"})).status_code == 200
    # the API itself still asks for a bearer token
    r = await keyed.get("/v1/runs/x", headers={"Authorization": f"Basic {good}"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
