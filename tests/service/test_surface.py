"""Auth, health, readiness, metrics and OpenAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from service.app import create_app
from service.config import Settings
from tests.fixtures.api import make_dataset, make_run


@pytest.fixture
async def keyed_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"api_keys": ["k1", "k2"]}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://depo.test") as c:
            yield c


async def test_api_keys_guard_v1(keyed_client: httpx.AsyncClient, uid: str) -> None:
    body = {"name": f"ds-{uid}"}
    r = await keyed_client.post("/v1/datasets", json=body)
    assert r.status_code == 401 and r.json()["type"] == "unauthorized"
    r = await keyed_client.post(
        "/v1/datasets", json=body, headers={"Authorization": "Bearer wrong"}
    )
    assert r.status_code == 401
    r = await keyed_client.post("/v1/datasets", json=body, headers={"Authorization": "Bearer k2"})
    assert r.status_code == 201
    r = await keyed_client.get(f"/v1/datasets/ds-{uid}", headers={"Authorization": "Basic k2"})
    assert r.status_code == 401
    assert (await keyed_client.get("/healthz")).status_code == 200


def test_api_keys_env_is_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPO_API_KEYS", "alpha, beta,,")
    assert Settings().api_keys == ["alpha", "beta"]


async def test_health_ready_and_metrics(client: httpx.AsyncClient, uid: str) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "cache": "ok"}
    await make_dataset(client, f"ds-{uid}", 10)
    await make_run(client, f"run-{uid}", f"ds-{uid}", group_size=2)
    b = (await client.post(f"/v1/runs/run-{uid}/batches", json={"step": 0, "size": 4})).json()
    results = [{"prompt_id": p["id"], "rewards": [1, 1]} for p in b["prompts"]]
    await client.post(f"/v1/runs/run-{uid}/outcomes", json={"step": 0, "results": results})
    text = (await client.get("/metrics")).text
    assert "depo_request_duration_seconds_bucket" in text
    assert 'route="/v1/runs/{run}/batches"' in text
    assert "depo_groups_ingested_total" in text
    assert f'depo_zero_variance_share{{run="run-{uid}"}} 1.0' in text


async def test_openapi_lists_the_contract(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path in (
        "/v1/datasets",
        "/v1/datasets/{dataset}",
        "/v1/datasets/{dataset}/prompts",
        "/v1/datasets/{dataset}/prompts/{prompt_id}",
        "/v1/runs",
        "/v1/runs/{run}",
        "/v1/runs/{run}/batches",
        "/v1/runs/{run}/outcomes",
        "/v1/runs/{run}/prompts/{prompt_id}",
        "/v1/runs/{run}/summary",
    ):
        assert path in spec["paths"], path
    assert (await client.get("/docs")).status_code == 200


async def test_openapi_documents_errors_codes_and_security(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    error = {"$ref": "#/components/schemas/ErrorBody"}
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    create = spec["paths"]["/v1/datasets"]["post"]["responses"]
    assert {"200", "201", "409", "422"} <= set(create)
    batches = spec["paths"]["/v1/runs/{run}/batches"]["post"]
    assert set(batches["responses"]) == {
        "200",
        "400",
        "401",
        "403",
        "404",
        "409",
        "413",
        "422",
        "503",
    }
    assert batches["security"] == [{"bearer": []}]
    for code in ("401", "404", "409", "422", "503"):
        assert batches["responses"][code]["content"]["application/json"]["schema"] == error
    assert "Retry-After" in batches["responses"]["503"]["headers"]
    assert "security" not in spec["paths"]["/healthz"]["get"]
    one_of = spec["components"]["schemas"]["PredictRequest"]["oneOf"]
    assert [o["required"] for o in one_of] == [["prompt_ids"], ["texts"]]
    assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]


def test_serve_help_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    from service.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    out = capsys.readouterr().out
    assert all(f"DEPO_{name.upper()}" in out for name in Settings.model_fields)
