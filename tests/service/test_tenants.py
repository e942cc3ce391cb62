"""Scoped keys: a namespace key finds only its namespace's datasets and runs, on every route."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from service import keys
from service.app import create_app
from service.cli import main
from service.config import Settings
from service.db import session_scope
from service.models import ApiKey, Dataset, Run
from service.state import AppState
from tests.fixtures.api import make_dataset, make_run
from tests.fixtures.backends import BACKENDS, PG_ADMIN_URL, REDIS_URL, admin, with_db


@pytest.fixture(params=BACKENDS)
async def fresh(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Settings]:
    """Its own database: a key in the shared one would turn auth on for every other test."""
    data_dir = tmp_path_factory.mktemp("tenants")
    common: dict[str, Any] = {"data_dir": data_dir, "api_keys": [], "key_cache_seconds": 0}
    if request.param == "embedded":
        yield Settings(database_url=None, redis_url=None, **common)
        return
    tag = uuid.uuid4().hex[:10]
    db = f"depo_tenants_{tag}"
    await admin(f'CREATE DATABASE "{db}"')
    try:
        yield Settings(
            database_url=with_db(PG_ADMIN_URL, db),
            redis_url=REDIS_URL,
            redis_prefix=f"depotenants-{tag}",
            **common,
        )
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


class Tenant:
    """An app over `fresh`, and a client per key."""

    def __init__(self, state: AppState, transport: httpx.ASGITransport) -> None:
        self.state = state
        self.transport = transport

    async def key(self, namespace: str, *, admin: bool = False, name: str | None = None) -> str:
        async with session_scope(self.state.sessionmaker) as session:
            _, token = await keys.add(session, namespace, admin=admin, name=name)
        return token

    def client(self, token: str | None, **headers: str) -> httpx.AsyncClient:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.AsyncClient(
            transport=self.transport, base_url="http://depo.test", headers=headers, timeout=60
        )


@pytest.fixture
async def tenant(fresh: Settings) -> AsyncIterator[Tenant]:
    app = create_app(fresh)
    async with app.router.lifespan_context(app):
        yield Tenant(app.state.depo, httpx.ASGITransport(app=app))


async def _seed(c: httpx.AsyncClient, ds: str, run: str, n: int) -> str:
    """A dataset, a run over it, one batch served and reported; the batch's id."""
    await make_dataset(c, ds, n)
    await make_run(c, run, ds, group_size=2, strategy="uniform")
    batch = (await c.post(f"/v1/runs/{run}/batches", json={"step": 0, "size": 2})).json()
    results = [{"prompt_id": p["id"], "rewards": [1.0, 0.0]} for p in batch["prompts"]]
    sent = {"step": 0, "batch_id": batch["batch_id"], "results": results}
    assert (await c.post(f"/v1/runs/{run}/outcomes", json=sent)).json()["accepted"] == 2
    return str(batch["batch_id"])


def _basic(token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"me:{token}".encode()).decode()}


async def test_another_namespace_is_404_on_every_route(tenant: Tenant) -> None:
    key_a, key_b = await tenant.key("team-a"), await tenant.key("team-b")
    async with tenant.client(key_a) as a, tenant.client(key_b) as b:
        await _seed(a, "d", "r", 6)
        await make_run(a, "r2", "d", group_size=2, strategy="uniform")
        before = (await a.get("/v1/runs/r")).json()
        calls = [
            ("GET", "/v1/datasets/d", None),
            ("POST", "/v1/datasets/d/prompts", {"prompts": [{"id": "x", "text": "x"}]}),
            ("GET", "/v1/datasets/d/prompts/p0", None),
            ("POST", "/v1/runs", {"name": "mine", "dataset": "d", "group_size": 2}),
            ("GET", "/v1/runs/r", None),
            ("POST", "/v1/runs/r/batches", {"step": 1, "size": 2}),
            (
                "POST",
                "/v1/runs/r/outcomes",
                {"step": 1, "results": [{"prompt_id": "p0", "rewards": [1, 0]}]},
            ),
            ("POST", "/v1/runs/r/predict", {"prompt_ids": ["p0"]}),
            ("GET", "/v1/runs/r/predictor", None),
            ("GET", "/v1/runs/r/summary", None),
            ("GET", "/v1/runs/r/prompts/p0", None),
            ("GET", "/v1/runs/r/export", None),
            ("POST", "/v1/runs/r/route", {"tiers": [{"name": "all"}], "prompt_ids": ["p0"]}),
        ]
        for method, path, body in calls:
            r = await b.request(method, path, json=body)
            assert r.status_code == 404, (method, path, r.text)
            assert r.json()["type"] == "not_found"
        for path in (
            "/admin/runs/r",
            "/admin/runs/r/prompts",
            "/admin/runs/r/prompts/p0",
            "/admin/datasets/d",
            "/admin/compare?run=r&run=r2",
        ):
            r = await b.get(path, headers=_basic(key_b))
            assert r.status_code == 404, (path, r.text)
            assert (await a.get(path, headers=_basic(key_a))).status_code == 200, path
        assert (await a.get("/v1/runs/r")).json() == before, "B's requests wrote nothing"
        assert (await a.get("/v1/datasets/d")).json()["prompt_count"] == 6
        # the same names are free in B's namespace, and each key sees its own
        await _seed(b, "d", "r", 4)
        assert (await b.get("/v1/datasets/d")).json()["prompt_count"] == 4
        assert (await a.get("/v1/datasets/d")).json()["prompt_count"] == 6
        index_a = (await a.get("/admin/", headers=_basic(key_a))).text
        index_b = (await b.get("/admin/", headers=_basic(key_b))).text
        assert 'data-run="r2"' in index_a and 'data-run="r2"' not in index_b
        assert "team-b" not in index_a and "team-a" not in index_b
        assert (await b.get("/metrics")).status_code == 403, "its labels name A's runs"
        # a namespace key may not name another namespace
        r = await b.get("/v1/runs/r", headers={"X-Depo-Namespace": "team-a"})
        assert r.status_code == 403 and r.json()["field"] == "namespace"
        r = await b.get("/v1/runs/r", headers={"X-Depo-Namespace": "team-b"})
        assert r.status_code == 200


async def test_an_admin_key_sees_every_namespace(tenant: Tenant) -> None:
    key_a, key_b = await tenant.key("team-a"), await tenant.key("team-b")
    root = await tenant.key("ops", admin=True)
    async with tenant.client(key_a) as a, tenant.client(key_b) as b, tenant.client(root) as o:
        await _seed(a, "d", "only-a", 6)
        await make_run(a, "same", "d", group_size=2)
        await make_dataset(b, "d", 3)
        await make_run(b, "same", "d", group_size=4)
        assert (await o.get("/v1/runs/only-a")).json()["dataset"] == "d"  # the one namespace
        r = await o.get("/v1/runs/same")
        assert r.status_code == 409 and r.json()["field"] == "namespace", r.text
        for ns, g in (("team-a", 2), ("team-b", 4)):
            r = await o.get("/v1/runs/same", headers={"X-Depo-Namespace": ns})
            assert r.json()["group_size"] == g
        assert (await o.get("/metrics")).status_code == 200
        r = await o.post("/v1/runs/only-a/batches", json={"step": 5, "size": 2})
        assert r.status_code == 200
        r = await o.get("/v1/runs/only-a", headers={"X-Depo-Namespace": "team-b"})
        assert r.status_code == 404, "a named namespace confines even an admin"
        index = (await o.get("/admin/", headers=_basic(root))).text
        assert 'data-run="only-a"' in index and "team-a/same" in index and "team-b/same" in index
        page = await o.get("/admin/runs/same?ns=team-b", headers=_basic(root))
        assert page.status_code == 200
        # created by an admin: in its own namespace unless it names one
        assert (await o.post("/v1/datasets", json={"name": "d"})).status_code == 201
        assert (await o.get("/v1/datasets/d")).json()["prompt_count"] == 0  # its home first
        r = await o.post("/v1/datasets", json={"name": "e"}, headers={"X-Depo-Namespace": "team-b"})
        assert r.status_code == 201
        assert (await b.get("/v1/datasets/e")).status_code == 200


async def test_a_revoked_key_stops_without_a_restart(tenant: Tenant) -> None:
    assert (await tenant.client(None).get("/v1/datasets/x")).status_code == 404  # auth off
    token = await tenant.key("team-a", name="ci")
    async with tenant.client(token) as a, tenant.client(None) as anon:
        assert (await anon.get("/v1/datasets/x")).status_code == 401, "the first key turns auth on"
        assert (await a.post("/v1/datasets", json={"name": "x"})).status_code == 201
        async with session_scope(tenant.state.sessionmaker) as session:
            await keys.revoke(session, "ci")
        r = await a.get("/v1/datasets/x")
        assert r.status_code == 401 and r.json()["type"] == "unauthorized"
        assert (await a.get("/admin/", headers=_basic(token))).status_code == 401


async def test_keys_are_stored_as_their_hash(tenant: Tenant) -> None:
    token = await tenant.key("team-a", admin=True, name="hashed")
    async with tenant.state.sessionmaker() as session:
        row = (await session.execute(select(ApiKey).where(ApiKey.name == "hashed"))).scalar_one()
        dump = (await session.execute(text("SELECT * FROM api_keys"))).all()
    assert row.key_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(dump) and token[5:20] not in repr(dump)
    assert row.admin and row.namespace == "team-a" and row.revoked_at is None


async def test_depo_api_keys_stay_admin_keys_of_the_default_namespace(fresh: Settings) -> None:
    app = create_app(fresh.model_copy(update={"api_keys": ["legacy"]}))
    async with app.router.lifespan_context(app):
        t = Tenant(app.state.depo, httpx.ASGITransport(app=app))
        key_a = await t.key("team-a")
        async with t.client("legacy") as old, t.client(key_a) as a, t.client("nope") as bad:
            await _seed(old, "d", "r", 4)
            assert (await bad.get("/v1/runs/r")).status_code == 401
            assert (await a.get("/v1/runs/r")).status_code == 404
            await make_dataset(a, "a-only", 2)
            assert (await old.get("/v1/datasets/a-only")).status_code == 200, "admin sees all"
        async with t.state.read_sessionmaker() as session:
            rows = (await session.execute(select(Dataset.name, Dataset.namespace))).all()
            runs = list((await session.execute(select(Run.namespace))).scalars())
    spaces = {name: ns for name, ns in rows}
    assert spaces == {"d": "default", "a-only": "team-a"} and runs == ["default"]


def test_depo_keys_command(
    fresh: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DEPO_DATA_DIR", str(fresh.data_dir))
    if fresh.database_url:
        monkeypatch.setenv("DEPO_DATABASE_URL", fresh.database_url)
    else:
        monkeypatch.delenv("DEPO_DATABASE_URL", raising=False)
    assert main(["keys", "add", "--namespace", "team-a", "--name", "ci"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("depo_") and len(token) > 40
    assert main(["keys", "add", "--namespace", "team-a", "--name", "ci"]) == 1
    assert "exists" in capsys.readouterr().err
    assert main(["keys", "add", "--namespace", "no spaces"]) == 1
    assert main(["keys", "revoke", "ci"]) == 0
    assert main(["keys", "revoke", "nobody"]) == 1
    capsys.readouterr()
    assert main(["keys", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[1].startswith("ci\tteam-a\tfalse\t") and not listed[1].endswith("\t-")
    assert token not in "\n".join(listed)
