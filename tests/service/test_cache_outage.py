"""A Redis of the service's own that stops and comes back empty: 503s, then exact counts."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.config import Settings
from tests.fixtures.api import make_dataset, make_run
from tests.fixtures.backends import BACKENDS, PG_ADMIN_URL, admin, with_db

pytestmark = [
    pytest.mark.slow,  # its own Redis server process, stopped and restarted
    pytest.mark.skipif(
        "postgres" not in BACKENDS or shutil.which("redis-server") is None,
        reason="needs PostgreSQL and a redis-server binary",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProcess:
    """A throwaway redis-server without persistence: a restart comes back empty."""

    def __init__(self, port: int, *extra: str) -> None:
        self.port = port
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    proc = RedisProcess(_free_port())
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def locked_redis() -> Iterator[RedisProcess]:
    proc = RedisProcess(_free_port(), "--requirepass", "sekret")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def read_only_redis() -> Iterator[RedisProcess]:
    """A replica: what a client still pointed at the old primary sees after a failover."""
    primary = RedisProcess(_free_port())
    primary.start()
    replica = RedisProcess(_free_port(), "--replicaof", "127.0.0.1", str(primary.port))
    replica.start()
    yield replica
    replica.stop()
    primary.stop()


@pytest.fixture
async def outage_client(
    redis_process: RedisProcess, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    async with _service(redis_process, tmp_path) as c:
        yield c


@asynccontextmanager
async def _service(redis_process: RedisProcess, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    db = f"depo_outage_{uuid.uuid4().hex[:10]}"
    await admin(f'CREATE DATABASE "{db}"')
    settings = Settings(
        data_dir=tmp_path,
        database_url=with_db(PG_ADMIN_URL, db),
        redis_url=f"redis://127.0.0.1:{redis_process.port}/0",
        api_keys=[],
    )
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)  # raises whatever the app re-raises
            async with httpx.AsyncClient(
                transport=transport, base_url="http://depo.test", timeout=60
            ) as c:
                yield c
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


async def _step(c: httpx.AsyncClient, run: str, step: int, tally: dict[str, int]) -> None:
    b = await c.post(f"/v1/runs/{run}/batches", json={"step": step, "size": 8})
    assert b.status_code == 200, b.text
    results = []
    for i, p in enumerate(b.json()["prompts"]):
        k = (i + step) % 9
        results.append({"prompt_id": p["id"], "rewards": [1.0] * k + [0.0] * (8 - k)})
        tally[p["id"]] = tally.get(p["id"], 0) + k
    body = {"step": step, "batch_id": b.json()["batch_id"], "results": results}
    assert (await c.post(f"/v1/runs/{run}/outcomes", json=body)).status_code == 200


async def test_redis_outage_is_503_and_restart_keeps_counts_exact(
    outage_client: httpx.AsyncClient, redis_process: RedisProcess
) -> None:
    c = outage_client
    await make_dataset(c, "d", 40)
    await make_run(c, "r", "d")
    tally: dict[str, int] = {}
    for step in range(3):
        await _step(c, "r", step, tally)

    redis_process.stop()
    served = await c.post("/v1/runs/r/batches", json={"step": 3, "size": 8})
    assert served.status_code == 503, served.text
    assert served.json()["type"] == "unavailable" and served.headers["retry-after"] == "1"
    stats = await c.get("/v1/runs/r/prompts/p0")
    assert stats.status_code == 503
    # reports go to the log, not the cache: acknowledged during the outage, counted after
    late = [{"prompt_id": "p1", "rewards": [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]}]
    ack = await c.post("/v1/runs/r/outcomes", json={"step": 3, "results": late})
    assert ack.status_code == 200 and ack.json()["accepted"] == 1
    tally["p1"] = tally.get("p1", 0) + 2
    assert (await c.get("/v1/runs/r")).json()["outcomes"] == 3 * 8 + 1

    redis_process.start()  # empty: the stats are rebuilt from the log
    await asyncio.sleep(0)
    for step in range(4, 6):
        await _step(c, "r", step, tally)
    # a restart between two requests leaves the pooled connections stale: still no error
    redis_process.stop()
    redis_process.start()
    assert (await c.get("/v1/runs/r/prompts/p0")).status_code == 200
    await _step(c, "r", 6, tally)
    run = (await c.get("/v1/runs/r")).json()
    assert run["outcomes"] == 6 * 8 + 1
    for pid, successes in tally.items():
        got = (await c.get(f"/v1/runs/r/prompts/{pid}")).json()
        assert got["successes"] == successes, pid


async def test_a_wrong_redis_password_is_a_500_not_a_retry(
    locked_redis: RedisProcess, tmp_path: Path
) -> None:
    """Retrying cannot fix the service's configuration: no 503, no Retry-After."""
    async with _service(locked_redis, tmp_path) as c:
        await make_dataset(c, "d", 10)
        await make_run(c, "r", "d")
        r = await c.get("/v1/runs/r/prompts/p0")
        assert r.status_code == 500 and r.json()["type"] == "internal_error"
        assert "retry-after" not in r.headers


async def test_a_read_only_redis_is_a_503(read_only_redis: RedisProcess, tmp_path: Path) -> None:
    async with _service(read_only_redis, tmp_path) as c:
        await make_dataset(c, "d", 10)
        await make_run(c, "r", "d", strategy="uniform")
        late = [{"prompt_id": "p1", "rewards": [1.0, 0.0] * 4}]
        ack = await c.post("/v1/runs/r/outcomes", json={"step": 0, "results": late})
        assert ack.status_code == 200  # the log takes it; folding it into Redis cannot
        r = await c.get("/v1/runs/r/prompts/p1")
        assert r.status_code == 503 and r.headers["retry-after"] == "1"


STALL_BOUND = 2.0  # docs/deployment.md: DEPO_REDIS_TIMEOUT_SECONDS (1.5 s) and the request's own


async def test_a_stalled_redis_is_a_prompt_503_on_every_route(
    redis_process: RedisProcess, tmp_path: Path
) -> None:
    """SIGSTOP: connections open and then nothing. No route waits past the bound."""
    async with _service(redis_process, tmp_path) as c:
        await make_dataset(c, "d", 40)
        await make_run(c, "r", "d")
        await _step(c, "r", 0, {})
        calls: list[tuple[str, str, dict[str, object] | None, set[int]]] = [
            ("POST", "/v1/runs/r/batches", {"step": 1, "size": 8}, {503}),
            ("GET", "/v1/runs/r/prompts/p0", None, {503}),
            ("GET", "/v1/runs/r/summary", None, {503}),
            ("POST", "/v1/runs/r/predict", {"prompt_ids": ["p0", "p1"]}, {503}),
            ("GET", "/admin/runs/r", None, {503}),
            ("GET", "/readyz", None, {503}),
            # what needs no stats still answers
            ("POST", "/v1/runs/r/predict", {"texts": ["what is 2 + 2?"]}, {200}),
            ("POST", "/v1/runs/r/outcomes", {"step": 1, "results": [_group("p5", 3)]}, {200}),
            ("GET", "/v1/runs/r", None, {200}),
            ("GET", "/v1/runs/r/predictor", None, {200}),
            ("GET", "/v1/datasets/d", None, {200}),
            ("GET", "/v1/datasets/d/prompts/p0", None, {200}),
            ("POST", "/v1/datasets/d/prompts", {"prompts": [{"id": "new", "text": "t"}]}, {200}),
            ("GET", "/healthz", None, {200}),
            ("GET", "/metrics", None, {200}),
        ]
        assert redis_process.proc is not None
        os.kill(redis_process.proc.pid, signal.SIGSTOP)
        try:
            for method, path, body, statuses in calls:
                start = time.monotonic()
                r = await c.request(method, path, json=body)
                took = time.monotonic() - start
                assert r.status_code in statuses, (method, path, r.status_code, r.text)
                assert took < STALL_BOUND, (method, path, took)
                if r.status_code == 503 and path != "/readyz":
                    assert r.headers["retry-after"] == "1" and r.json()["type"] == "unavailable"
        finally:
            os.kill(redis_process.proc.pid, signal.SIGCONT)
        served = await c.post("/v1/runs/r/batches", json={"step": 1, "size": 8})
        assert served.status_code == 200, served.text
        assert (await c.get("/readyz")).status_code == 200
        stats = (await c.get("/v1/runs/r/prompts/p5")).json()
        assert stats["observations"] >= 1  # the report taken during the stall is counted


def _group(pid: str, k: int) -> dict[str, object]:
    return {"prompt_id": pid, "rewards": [1.0] * k + [0.0] * (8 - k)}
