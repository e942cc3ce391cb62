"""Concurrent trainers through several API replicas and `depo worker`s on one PostgreSQL + Redis.

    .venv/bin/python -m benchmarks.concurrency [--replicas 2] [--workers 1] [--trainers 16]
        [--runs 4] [--steps 30] [--size 32]

Each trainer is a thread with its own HTTP client, on run `trainer % runs`, as partition
`t<trainer>`, spreading its requests over the replicas round robin; a step is POST /batches then
POST /outcomes with simulated rewards. Printed: steps/s over all trainers and per run, p50/p95
step latency, 5xx and other failures, and the audit: groups acknowledged against the run's
counters and the outcome log, which must agree exactly (exit 1 otherwise). `--workers 0` runs
the replicas without DEPO_WORKERS, each fitting in-process, for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from benchmarks._server import PG_ADMIN_URL, REDIS_URL, REPO, _admin, free_port


@dataclass
class Trainer:
    index: int
    run: str
    urls: list[str]
    steps: int
    size: int
    group: int
    latencies: list[float] = field(default_factory=list)
    accepted: int = 0
    server_errors: int = 0
    unavailable: int = 0  # 503 + Retry-After (a Redis call over its timeout), then retried
    other_errors: list[str] = field(default_factory=list)

    def __call__(self) -> None:
        clients = [httpx.Client(base_url=u, timeout=60) for u in self.urls]
        rng = np.random.default_rng(self.index)
        calls = 0
        try:
            for step in range(self.steps):
                t0 = time.perf_counter()
                r = self._post(
                    clients[calls % len(clients)],
                    f"/v1/runs/{self.run}/batches",
                    {"step": step, "size": self.size, "partition": f"t{self.index}"},
                )
                calls += 1
                if not self._ok(r):
                    continue
                batch = r.json()
                results = [
                    {"prompt_id": p["id"], "rewards": _rewards(p["id"], self.group, rng)}
                    for p in batch["prompts"]
                ]
                r = self._post(
                    clients[calls % len(clients)],
                    f"/v1/runs/{self.run}/outcomes",
                    {"step": step, "batch_id": batch["batch_id"], "results": results},
                )
                calls += 1
                if not self._ok(r):
                    continue
                self.accepted += r.json()["accepted"]
                self.latencies.append(time.perf_counter() - t0)
        finally:
            for c in clients:
                c.close()

    def _post(self, c: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
        """As depo_client does: a 503 waits its Retry-After and is sent again (both routes are
        idempotent: the same batch key, the same batch id), five times at most."""
        for _ in range(5):
            r = c.post(path, json=body)
            if r.status_code != 503:
                return r
            self.unavailable += 1
            time.sleep(float(r.headers.get("retry-after", "1")))
        return r

    def _ok(self, r: httpx.Response) -> bool:
        if r.status_code >= 500:
            self.server_errors += 1
        elif r.status_code != 200:
            self.other_errors.append(f"{r.status_code} {r.text[:120]}")
        return r.status_code == 200


def _rewards(prompt_id: str, group: int, rng: np.random.Generator) -> list[float]:
    """Each prompt has a fixed pass rate, from its id: some always pass, some never."""
    p = int(hashlib.sha256(prompt_id.encode()).hexdigest()[:4], 16) / 0xFFFF
    p = 0.0 if p < 0.2 else 1.0 if p > 0.8 else p
    return [float(x) for x in rng.random(group) < p]


def _wait_ready(url: str, proc: subprocess.Popen[bytes], seconds: float = 900) -> None:
    deadline = time.monotonic() + seconds
    while True:
        assert proc.poll() is None, f"{url} exited"
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} did not become ready"
        time.sleep(0.3)


def _fits(metrics: str) -> int:
    m = re.search(r"^depo_fit_duration_seconds_count (\S+)$", metrics, re.M)
    return int(float(m.group(1))) if m else -1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1, help="0: fits in the API processes")
    ap.add_argument("--trainers", type=int, default=16)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--size", type=int, default=32, help="prompts per batch")
    ap.add_argument("--group", type=int, default=8, help="rollouts per prompt")
    ap.add_argument("--pool", type=int, default=4000, help="prompts in the dataset")
    ap.add_argument("--refit-every", type=int, default=500)
    args = ap.parse_args(argv)

    db = f"depo_conc_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{db}"'))
    logs = tempfile.mkdtemp(prefix="depo-conc-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPO_")}
    env |= {
        "DEPO_DATA_DIR": logs,
        "DEPO_DATABASE_URL": PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + db,
        "DEPO_REDIS_URL": REDIS_URL,
        "DEPO_REDIS_PREFIX": f"depobench-{db}",
        "DEPO_WORKERS": "true" if args.workers else "false",
        "DEPO_REFIT_MIN_SECONDS": "5",
        "HF_HUB_OFFLINE": "1",
    }
    procs: list[subprocess.Popen[bytes]] = []

    def start(cmd: list[str], name: str, **extra: str) -> subprocess.Popen[bytes]:
        out = open(os.path.join(logs, f"{name}.log"), "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", *cmd],
            cwd=REPO,
            env={**env, **extra},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        return proc

    try:
        urls, starting = [], []
        subprocess.run([sys.executable, "-m", "service", "migrate"], cwd=REPO, env=env, check=True)
        for i in range(args.replicas):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            serve = ["serve", "--port", str(port), "--log-level", "warning"]
            starting.append((url, start(serve, f"api{i}", DEPO_RUN_MIGRATIONS_ON_START="false")))
            urls.append(url)
        for i in range(args.workers):
            start(["worker"], f"worker{i}", DEPO_RUN_MIGRATIONS_ON_START="false")
        for url, proc in starting:
            _wait_ready(url, proc)

        setup = httpx.Client(base_url=urls[0], timeout=120)
        assert setup.post("/v1/datasets", json={"name": "pool"}).status_code == 201
        prompts = [
            {"id": f"p{i}", "text": f"Problem {i}: compute {i} * {i * 7 % 13} + {i % 5}."}
            for i in range(args.pool)
        ]
        for start in range(0, args.pool, 10_000):  # the most one request may carry
            r = setup.post(
                "/v1/datasets/pool/prompts", json={"prompts": prompts[start : start + 10_000]}
            )
            assert r.status_code == 200, r.text
        t0 = time.monotonic()
        while setup.get("/v1/datasets/pool").json()["embedded"] < args.pool:
            assert time.monotonic() - t0 < 600, "embedding did not finish"
            time.sleep(0.5)
        embed_s = time.monotonic() - t0
        runs = [f"run{i}" for i in range(args.runs)]
        for run in runs:
            body = {
                "name": run,
                "dataset": "pool",
                "group_size": args.group,
                "selection": {"refit_every": args.refit_every, "fit_min_outcomes": 256},
            }
            assert setup.post("/v1/runs", json=body).status_code == 201

        trainers = [
            Trainer(i, runs[i % args.runs], urls, args.steps, args.size, args.group)
            for i in range(args.trainers)
        ]
        threads = [threading.Thread(target=t) for t in trainers]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0

        lat = sorted(x for t in trainers for x in t.latencies)
        steps = len(lat)
        failed = sum(t.server_errors for t in trainers)
        other = [e for t in trainers for e in t.other_errors]
        sent = {run: sum(t.accepted for t in trainers if t.run == run) for run in runs}

        async def logged() -> dict[str, int]:
            import asyncpg

            conn = await asyncpg.connect(env["DEPO_DATABASE_URL"])
            try:
                rows = await conn.fetch(
                    "SELECT r.name, count(o.*) FROM runs r LEFT JOIN outcomes o "
                    "ON o.run_id = r.id GROUP BY r.name"
                )
            finally:
                await conn.close()
            return {row[0]: int(row[1]) for row in rows}

        in_log = asyncio.run(logged())
        counters = {run: setup.get(f"/v1/runs/{run}").json()["outcomes"] for run in runs}
        # the fits the traffic asked for: wait for the queue (or the replicas) to finish them
        t1 = time.monotonic()
        versions: dict[str, Any] = {}
        while time.monotonic() - t1 < 180:
            versions = {run: setup.get(f"/v1/runs/{run}/predictor").json() for run in runs}
            if all(v["outcomes_since"] < args.refit_every for v in versions.values()):
                break
            time.sleep(1)
        api_fits = [_fits(httpx.get(f"{u}/metrics", timeout=10).text) for u in urls]
        ready = setup.get("/readyz").json()
        setup.close()

        print(
            f"{args.replicas} API replicas, {args.workers} workers, {args.trainers} trainers on "
            f"{args.runs} runs, {args.steps} steps of {args.size} prompts x {args.group} each "
            f"(pool {args.pool}, embedded in {embed_s:.1f} s)"
        )
        print("| measurement | value |")
        print("|---|---|")
        print(f"| steps (batch + outcomes) | {steps} in {wall:.1f} s |")
        print(f"| steps/s, all trainers | {steps / wall:.1f} |")
        print(
            f"| steps/s per run ({args.trainers // args.runs} trainers each) | "
            f"{steps / wall / args.runs:.1f} |"
        )
        print(f"| groups/s | {sum(sent.values()) / wall:.0f} |")
        if lat:
            p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
            print(
                f"| step latency p50 / p95 | {statistics.median(lat) * 1000:.0f} / "
                f"{p95 * 1000:.0f} ms |"
            )
        print(
            f"| 503 answered, then retried after Retry-After | "
            f"{sum(t.unavailable for t in trainers)} |"
        )
        print(f"| 5xx left after retries (failed steps) | {failed} |")
        print(f"| other failures | {len(other)} {other[:3]} |")
        print(
            f"| groups acknowledged / run counters / outcome log | {sum(sent.values())} / "
            f"{sum(counters.values())} / {sum(in_log.get(r, 0) for r in runs)} |"
        )
        print(
            f"| predictor versions per run | "
            f"{', '.join(str(v['version']) for v in versions.values())} |"
        )
        print(f"| fits in the API processes (their /metrics) | {api_fits} |")
        print(f"| /readyz background | {ready.get('background')} |")
        exact = all(sent[r] == counters[r] == in_log.get(r, 0) for r in runs)
        expected = args.trainers * args.steps * args.size
        ok = exact and failed == 0 and not other and sum(sent.values()) == expected
        print("counts exact" if ok else f"MISMATCH: sent {sent}, counters {counters}, log {in_log}")
        print(f"logs: {logs}")
        return 0 if ok else 1
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))


if __name__ == "__main__":
    sys.exit(main())
