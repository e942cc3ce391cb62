"""Start a real `depo serve` process on a fresh database for benchmarks and the demo."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("DEPO_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("DEPO_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def serve(
    backend: str = "embedded",
    log_level: str = "warning",
    env: dict[str, str] | None = None,
    repo: Path = REPO,
    pids: list[int] | None = None,
    workers: int = 0,
    hold_workers: threading.Event | None = None,
    databases: list[str] | None = None,
) -> Iterator[str]:
    """Yield the base URL of a fresh service: `embedded` (SQLite) or `postgres` (+ Redis).

    `repo`: the source tree the server runs from (another commit's, to compare against).
    `pids`, when given, receives the server's process id, then each worker's (their memory).
    `databases`, when given, receives the PostgreSQL URL of the fresh database.
    `workers`: `depo worker` processes beside the server (postgres only); background work
    then runs in them and never in the server; with `hold_workers`, they start when it is set.
    """
    if workers and backend != "postgres":
        raise ValueError("workers need the postgres backend (their queue is in Redis)")
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="depo-")
    extra = env or {}
    env = {**os.environ, "DEPO_DATA_DIR": data_dir, "HF_HUB_OFFLINE": "1"}
    env.pop("DEPO_DATABASE_URL", None)
    env.pop("DEPO_REDIS_URL", None)
    env.update(extra)
    db = None
    if backend == "postgres":
        db = f"depo_bench_{uuid.uuid4().hex[:8]}"
        asyncio.run(_admin(f'CREATE DATABASE "{db}"'))
        env["DEPO_DATABASE_URL"] = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + db
        if databases is not None:
            databases.append(env["DEPO_DATABASE_URL"])
        env["DEPO_REDIS_URL"] = REDIS_URL
        env["DEPO_REDIS_PREFIX"] = f"depobench-{db}"
    if workers:
        env["DEPO_WORKERS"] = "true"
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--port", str(port), "--log-level", log_level],
        cwd=repo,
        env=env,
    )
    if pids is not None:
        pids.append(proc.pid)
    url = f"http://127.0.0.1:{port}"
    kids: list[subprocess.Popen[bytes]] = []
    try:
        deadline = time.monotonic() + 300  # a loaded 2-core machine can take minutes
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("service did not start")
            time.sleep(0.2)

        def start_workers() -> None:  # after the server ran the migrations
            if hold_workers is not None:
                hold_workers.wait()
            for _ in range(workers):
                kids.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "service", "worker"],
                        cwd=repo,
                        env={**env, "DEPO_RUN_MIGRATIONS_ON_START": "false"},
                    )
                )
                if pids is not None:
                    pids.append(kids[-1].pid)

        if workers:
            threading.Thread(target=start_workers, daemon=True).start()
        yield url
    finally:
        for p in [proc, *kids]:
            p.terminate()
        for p in [proc, *kids]:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:  # a worker finishing a long job: results are in
                p.kill()
                p.wait()
        if db is not None:
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))


@contextlib.contextmanager
def checkout(rev: str) -> Iterator[Path]:
    """A throwaway copy of the source tree at `rev` (git archive), for a server to run from."""
    out = Path(tempfile.mkdtemp(prefix=f"depo-{rev[:12]}-"))
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "x", "-C", str(out)], input=archive, check=True)
    try:
        yield out
    finally:
        shutil.rmtree(out, ignore_errors=True)
