"""/metrics: labels are route templates, so no request can add a series; it needs the key.

`DEPO_METRICS_PROBE_REQUESTS=10000` runs the issue's 10,000 random paths (default 2,000).
"""

from __future__ import annotations

import os
import random
import string
from collections.abc import AsyncIterator

import httpx
import pytest

from service.app import create_app
from service.config import Settings

KEY = "metrics-test-key"
AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.fixture
async def keyed(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The service with an API key set, on the session's store."""
    app = create_app(settings.model_copy(update={"api_keys": [KEY]}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://depo.test") as c:
            yield c


def _series(text: str) -> set[str]:
    """Each sample's name and labels, without its value."""
    return {ln.rsplit(" ", 1)[0] for ln in text.splitlines() if ln and not ln.startswith("#")}


def _token(rng: random.Random, slash: bool = False) -> str:
    """Junk plus the percent-escapes and prefixes that once leaked into labels (an escaped
    slash only where the route takes a path, so each request keeps to its route)."""
    junk = "".join(rng.choices(string.ascii_letters + string.digits, k=rng.randint(1, 12)))
    odd = ["", "leak%3F", "%5C", "%25", "v1", "datasets", "runs", "%F0%9F%92%A5", "%FF"]
    return rng.choice(odd + ["%2F"] * slash) + junk


def _request(rng: random.Random, shape: int) -> tuple[str, str, dict[str, str]]:
    """One request of a shape; every shape lands on one (method, route, status) series."""
    t = [_token(rng), _token(rng, slash=True), _token(rng, slash=True)]
    weird = rng.choice(["FOO", "PROPFIND", "BREW", "X" + t[0][:5].upper()])
    return [
        ("GET", f"/v1/datasets/{t[0]}/prompts/{t[1]}/{t[2]}", AUTH),  # 404: no such dataset
        ("GET", f"/v1/runs/{t[0]}", AUTH),  # 404
        ("GET", f"/v1/runs/{t[0]}/summary", AUTH),  # 404
        ("GET", f"/v1/runs/{t[0]}/prompts/{t[1]}", {}),  # 401: labelled by template too
        ("GET", f"/x{t[0]}/{t[1]}/{t[2]}", AUTH),  # unmatched
        ("GET", f"/v1/{t[0]}x/{t[1]}", AUTH),  # unmatched under the prefix
        (weird, f"/v1/runs/{t[0]}", AUTH),  # 405, method label "other"
        ("DELETE", f"/v1/datasets/{t[0]}", AUTH),  # 405
        ("GET", f"/v1/datasets/{t[0]}%00", AUTH),  # 422: not storable
    ][shape]


async def test_random_paths_add_no_series(keyed: httpx.AsyncClient) -> None:
    rng = random.Random(0)
    shapes = 9
    for shape in range(shapes):  # each series once, so what follows can only repeat them
        method, path, headers = _request(rng, shape)
        await keyed.request(method, path, headers=headers)
    await keyed.get("/metrics", headers=AUTH)
    before = (await keyed.get("/metrics", headers=AUTH)).text
    statuses: set[int] = set()
    for _ in range(int(os.environ.get("DEPO_METRICS_PROBE_REQUESTS", "2000"))):
        method, path, headers = _request(rng, rng.randrange(shapes))
        statuses.add((await keyed.request(method, path, headers=headers)).status_code)
    after = (await keyed.get("/metrics", headers=AUTH)).text
    assert _series(after) == _series(before), sorted(_series(after) - _series(before))[:5]
    assert statuses == {401, 404, 405, 422}
    routes = {
        line.split('route="')[1].split('"')[0] for line in _series(after) if 'route="' in line
    }
    assert routes == {
        "/v1/datasets/{dataset}/prompts/{prompt_id}",
        "/v1/runs/{run}",
        "/v1/runs/{run}/summary",
        "/v1/runs/{run}/prompts/{prompt_id}",
        "/v1/datasets/{dataset}",
        "<unmatched>",
        "/metrics",
    }
    methods = {ln.split('method="')[1].split('"')[0] for ln in _series(after) if 'method="' in ln}
    assert methods == {"GET", "DELETE", "other"}


async def test_metrics_need_the_key_when_keys_are_set(keyed: httpx.AsyncClient) -> None:
    r = await keyed.get("/metrics")
    assert r.status_code == 401 and r.json()["type"] == "unauthorized"
    wrong = await keyed.get("/metrics", headers={"authorization": "Bearer wrong"})
    assert wrong.status_code == 401
    assert (await keyed.get("/metrics", headers=AUTH)).status_code == 200


async def test_metrics_can_be_left_public(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"api_keys": [KEY], "metrics_public": True}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://depo.test") as c:
            r = await c.get("/metrics")
            assert r.status_code == 200 and "depo_request_duration_seconds" in r.text
            assert (await c.get("/v1/runs/x")).status_code == 401
