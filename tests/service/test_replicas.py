"""Two `depo serve` processes on one PostgreSQL and Redis behave as one service."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from service.config import Settings
from tests.fixtures.live import REPO_ROOT

pytestmark = pytest.mark.slow  # a real server process or trainer: `make test-fast` skips it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def replicas(settings: Settings) -> Iterator[list[httpx.Client]]:
    if not settings.redis_url:
        pytest.skip("replicas need shared stores: the embedded default is one process")
    env = {
        **os.environ,
        "DEPO_DATABASE_URL": settings.database_url or "",
        "DEPO_REDIS_URL": settings.redis_url,
        "DEPO_REDIS_PREFIX": settings.redis_prefix,
        "DEPO_DATA_DIR": str(settings.data_dir),
    }
    procs, clients = [], []
    try:
        for _ in range(2):
            port = _free_port()
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "service",
                        "serve",
                        "--port",
                        str(port),
                        "--log-level",
                        "warning",
                    ],
                    cwd=REPO_ROOT,
                    env=env,
                )
            )
            clients.append(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30))
        deadline = time.monotonic() + 60
        for c in clients:
            while True:
                try:
                    if c.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "replica did not become ready"
                time.sleep(0.2)
        yield clients
    finally:
        for c in clients:
            c.close()
        for p in procs:
            p.terminate()
            p.wait(timeout=20)


def test_two_processes_act_as_one(replicas: list[httpx.Client], uid: str) -> None:
    a, b = replicas
    ds, run = f"ds-{uid}", f"run-{uid}"
    assert a.post("/v1/datasets", json={"name": ds}).status_code == 201
    assert b.post("/v1/datasets", json={"name": ds}).status_code == 200
    prompts = [{"id": f"p{i}", "text": f"problem {i}"} for i in range(600)]
    assert a.post(f"/v1/datasets/{ds}/prompts", json={"prompts": prompts[:300]}).status_code == 200
    assert (
        b.post(f"/v1/datasets/{ds}/prompts", json={"prompts": prompts[300:]}).json()["prompt_count"]
        == 600
    )
    assert (
        b.post(
            "/v1/runs",
            json={"name": run, "dataset": ds, "group_size": 4, "selection": {"oversample": 2}},
        ).status_code
        == 201
    )

    expected_groups = expected_successes = 0
    for step in range(8):
        first, second = (a, b) if step % 2 == 0 else (b, a)
        batch = first.post(f"/v1/runs/{run}/batches", json={"step": step, "size": 20}).json()
        again = second.post(f"/v1/runs/{run}/batches", json={"step": step, "size": 20}).json()
        assert again["batch_id"] == batch["batch_id"] and again["prompts"] == batch["prompts"]
        results = [
            {"prompt_id": p["id"], "rewards": [1.0, 0.0, float(i % 2), 1.0]}
            for i, p in enumerate(batch["prompts"])
        ]
        body = {"step": step, "batch_id": batch["batch_id"], "results": results}
        assert second.post(f"/v1/runs/{run}/outcomes", json=body).json()["accepted"] == 20
        assert first.post(f"/v1/runs/{run}/outcomes", json=body).json()["duplicates"] == 20
        expected_groups += 20
        expected_successes += sum(2 + i % 2 for i in range(20))

    # both replicas at once, different partitions: disjoint leases
    def ask(i: int) -> list[str]:
        client = replicas[i % 2]
        r = client.post(
            f"/v1/runs/{run}/batches", json={"step": 100, "size": 25, "partition": f"rank{i}"}
        )
        assert r.status_code == 200, r.text
        return [p["id"] for p in r.json()["prompts"]]

    with ThreadPoolExecutor(max_workers=8) as pool:
        served = list(pool.map(ask, range(8)))
    flat = [pid for ids in served for pid in ids]
    assert len(flat) == 200 == len(set(flat))

    for client in (a, b):
        info = client.get(f"/v1/runs/{run}").json()
        assert info["outcomes"] == expected_groups and info["successes"] == expected_successes
        summary = client.get(f"/v1/runs/{run}/summary").json()
        assert summary["groups"] == expected_groups and summary["prompts_seen"] == expected_groups
    # the same per-prompt view from both
    pid = served[0][0]
    assert a.get(f"/v1/runs/{run}/prompts/p0").json() == b.get(f"/v1/runs/{run}/prompts/p0").json()
    assert a.get(f"/v1/runs/{run}/prompts/{pid}").status_code == 200
