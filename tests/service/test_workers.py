"""`depo serve` with DEPO_WORKERS=true hands embedding and fits to `depo worker` processes."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from pydantic import ValidationError

from service.background import QUEUE, QueueBackground
from service.config import Settings
from service.hotstats.store import MemoryHotStore
from tests.fixtures.backends import BACKENDS, PG_ADMIN_URL, REDIS_URL, admin, with_db
from tests.fixtures.live import REPO_ROOT, free_port

pytestmark = [
    pytest.mark.slow,  # real server and worker processes
    pytest.mark.skipif("postgres" not in BACKENDS, reason="workers need PostgreSQL and Redis"),
]

HEARTBEAT = 3  # seconds: a killed worker's job goes back on the queue after about this


class Proc:
    """`python -m service <command>` with its output in a file the test reads."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.env, self.log = args, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "service", *self.args],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def text(self) -> str:
        return self.log.read_text()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=20)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)


class Stack:
    def __init__(self, api: Proc, url: str, env: dict[str, str], tmp: Path, prefix: str) -> None:
        self.api, self.env, self.tmp, self.prefix = api, env, tmp, prefix
        self.client = httpx.Client(base_url=url, timeout=30)
        self.workers: list[Proc] = []

    def worker(self) -> Proc:
        log = self.tmp / f"worker{len(self.workers)}.log"
        proc = Proc(["worker"], {**self.env, "DEPO_RUN_MIGRATIONS_ON_START": "false"}, log)
        self.workers.append(proc.start())
        return proc


def wait_for(what: str, check: Callable[[], Any], seconds: float = 90) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tag = uuid.uuid4().hex[:10]
    db = f"depo_workers_{tag}"
    asyncio.run(admin(f'CREATE DATABASE "{db}"'))
    tmp = tmp_path_factory.mktemp("workers")
    prefix = f"depotest-w-{tag}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEPO_")}
    env = {
        **clean,
        "DEPO_DATA_DIR": str(tmp),
        "DEPO_DATABASE_URL": with_db(PG_ADMIN_URL, db),
        "DEPO_REDIS_URL": REDIS_URL,
        "DEPO_REDIS_PREFIX": prefix,
        "DEPO_WORKERS": "true",
        "DEPO_WORKER_HEARTBEAT_SECONDS": str(HEARTBEAT),
        "DEPO_REFIT_MIN_SECONDS": "0",
    }
    port = free_port()
    api = Proc(
        ["serve", "--port", str(port), "--log-level", "warning"], env, tmp / "api.log"
    ).start()
    s = Stack(api, f"http://127.0.0.1:{port}", env, tmp, prefix)
    try:
        wait_for("the API", lambda: _ready(s.client), 60)
        yield s
    finally:
        s.client.close()
        for w in s.workers:
            w.stop()
        api.stop()
        r = redis.Redis.from_url(REDIS_URL)
        keys = list(r.scan_iter(match=f"{prefix}:*"))
        if keys:
            r.delete(*keys)
        r.close()
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))


def _ready(client: httpx.Client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except httpx.TransportError:
        return False


def _dataset(c: httpx.Client, name: str, n: int) -> None:
    assert c.post("/v1/datasets", json={"name": name}).status_code == 201
    prompts = [
        {"id": f"p{i}", "text": f"Problem {i}: compute {i} + {i * 7 % 13}."} for i in range(n)
    ]
    assert c.post(f"/v1/datasets/{name}/prompts", json={"prompts": prompts}).status_code == 200


def _train(c: httpx.Client, run: str, steps: range, size: int = 20) -> int:
    """Batches then outcomes, as a trainer sends them; the groups accepted."""
    accepted = 0
    for step in steps:
        batch = c.post(f"/v1/runs/{run}/batches", json={"step": step, "size": size}).json()
        results = [
            {"prompt_id": p["id"], "rewards": [1.0, 0.0, float(i % 2), float(i % 3 == 0)]}
            for i, p in enumerate(batch["prompts"])
        ]
        body = {"step": step, "batch_id": batch["batch_id"], "results": results}
        r = c.post(f"/v1/runs/{run}/outcomes", json=body)
        assert r.status_code == 200, r.text
        accepted += r.json()["accepted"]
    return accepted


def _run(c: httpx.Client, name: str, ds: str) -> None:
    selection = {"fit_min_outcomes": 40, "refit_every": 40}
    body = {"name": name, "dataset": ds, "group_size": 4, "selection": selection}
    assert c.post("/v1/runs", json=body).status_code == 201


def _predictor(c: httpx.Client, run: str) -> dict[str, Any]:
    body: dict[str, Any] = c.get(f"/v1/runs/{run}/predictor").json()
    return body


def _fits_in(metrics: str) -> float:
    m = re.search(r"^depo_fit_duration_seconds_count (\S+)$", metrics, re.M)
    assert m is not None, "no fit histogram in /metrics"
    return float(m.group(1))


def test_embedding_and_fits_run_in_the_worker(stack: Stack) -> None:
    c = stack.client
    worker = stack.worker()
    _dataset(c, "ds-a", 300)
    wait_for("embedding", lambda: c.get("/v1/datasets/ds-a").json()["embedded"] == 300)
    _run(c, "run-a", "ds-a")
    # the last step alone brings refit_every groups, so a fit is due after it however the
    # earlier fits fell (one that started late read more, and 20 new groups would not be due)
    sent = _train(c, "run-a", range(5)) + _train(c, "run-a", range(5, 6), size=40)
    assert sent == 140
    # the last fit covers every outcome: a request during a fit queued one more run after it
    wait_for("a fit on all outcomes", lambda: _predictor(c, "run-a")["trained_on"] == sent)
    assert c.get("/v1/runs/run-a").json()["outcomes"] == sent

    assert _fits_in(c.get("/metrics").text) == 0  # the API process fitted nothing
    assert "embedded 300 prompts of dataset" in worker.text()
    assert re.search(r"run \d+: predictor v\d+ on 140 outcomes", worker.text())
    api_log = stack.api.text()
    assert not re.search(r"embedded \d+ prompts|predictor v\d+ on", api_log)

    ready = c.get("/readyz").json()
    assert ready["background"]["mode"] == "queue" and ready["background"]["workers"] >= 1


def test_a_worker_killed_mid_fit_leaves_the_fit_to_the_next(stack: Stack) -> None:
    c = stack.client
    if not stack.workers or stack.workers[-1].proc is None:
        stack.worker()
    _dataset(c, "ds-k", 3000)
    wait_for("embedding", lambda: c.get("/v1/datasets/ds-k").json()["embedded"] == 3000)
    for w in stack.workers:
        w.stop()  # the outcomes queue their fit with no worker to take it
    _run(c, "run-k", "ds-k")
    sent = _train(c, "run-k", range(4), size=50)
    r = redis.Redis.from_url(REDIS_URL)
    try:
        assert r.llen(f"{stack.prefix}:queue:{QUEUE}") >= 1
        doomed = stack.worker()
        lock = wait_for(
            "the fit to start",
            lambda: next(iter(r.scan_iter(match=f"{stack.prefix}:*:lock:fit:*")), None),
            60,
        )
        doomed.kill()
        assert r.exists(lock), "the fit ended before the kill: nothing tested"
    finally:
        r.close()
    assert _predictor(c, "run-k")["version"] is None
    time.sleep(HEARTBEAT + 1)  # dead to the queue; its job goes back for the next worker
    heir = stack.worker()
    wait_for("the retried fit", lambda: _predictor(c, "run-k")["trained_on"] == sent, 90)
    # the line is logged after the version is stored, so it may trail what the API shows
    wait_for(
        "the heir's log of it",
        lambda: re.search(rf"predictor v1 on {sent} outcomes", heir.text()),
        30,
    )
    assert c.get("/v1/runs/run-k").json()["outcomes"] == sent
    assert _fits_in(c.get("/metrics").text) == 0


async def test_a_key_is_queued_once_however_often_asked(tmp_path: Path) -> None:
    prefix = f"depotest-q-{uuid.uuid4().hex[:8]}"
    settings = Settings(data_dir=tmp_path, redis_url=REDIS_URL, redis_prefix=prefix, workers=True)
    queue = QueueBackground(settings, MemoryHotStore())
    r = redis.Redis.from_url(REDIS_URL)
    try:
        for _ in range(5):
            queue.submit("fit", 7)
        queue.submit("fit", 8)
        await queue.idle()
        assert r.llen(f"{prefix}:queue:{QUEUE}") == 2
        assert (await queue.depth())["queued"] == 2
        r.delete(f"{prefix}:queued:fit:7")  # what a worker does as the job starts
        queue.submit("fit", 7)
        await queue.idle()
        assert r.llen(f"{prefix}:queue:{QUEUE}") == 3
    finally:
        keys = list(r.scan_iter(match=f"{prefix}:*"))
        if keys:
            r.delete(*keys)
        r.close()


def test_workers_need_redis() -> None:
    with pytest.raises(ValidationError, match="DEPO_WORKERS=true needs DEPO_REDIS_URL"):
        Settings(workers=True, redis_url=None)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPO_")}
    done = subprocess.run(
        [sys.executable, "-m", "service", "worker"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "needs DEPO_WORKERS=true" in done.stderr
