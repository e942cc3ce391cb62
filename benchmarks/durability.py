"""Kill -9 Redis and the service under load, then check no acknowledged group was lost or counted twice.

Run: `.venv/bin/python -m benchmarks.durability [--groups N] [--trainers K]` (issue 21's probe
was `--groups 40000`). It starts its own redis-server on a free port (no persistence, so every
restart is empty) and a real `depo serve` on a fresh PostgreSQL database (DEPO_BENCH_PG_URL,
default postgres@127.0.0.1:5432, trust auth). K trainer threads, each with the real
`DepoClient` and its retries, ask for a batch per step, report its groups with the batch_id and
now and then send the same report again, until N groups are acknowledged. Meanwhile Redis is
killed and restarted three times, the service three times, then both at once. At the end every
acknowledged (step, partition, prompt, rewards) is looked up in the outcome log, the run's
counters and each prompt's hot stats (`GET /v1/runs/{run}/prompts/{id}`) are compared with the
log, and a table is printed; the exit status is 1 when anything was lost, counted twice or
disagrees.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from depo_client import UNREACHABLE, DepoClient, RetryPolicy

from benchmarks._server import PG_ADMIN_URL, REPO, free_port

GROUP_SIZE = 4
FAULTS = ("redis", "service", "redis", "service", "redis", "service", "both")
Key = tuple[int, str, str]  # (step, partition, prompt id): what counts once


async def _admin(pg_admin_url: str, sql: str) -> None:
    conn = await asyncpg.connect(pg_admin_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _wait_port(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {seconds} s")


class Cluster:
    """A throwaway Redis and one `depo serve` on a fresh database, each killable and restartable."""

    def __init__(self, pg_admin_url: str = PG_ADMIN_URL) -> None:
        self.pg_admin_url = pg_admin_url
        redis = shutil.which("redis-server")
        if redis is None:
            raise RuntimeError("no redis-server on PATH")
        self.redis_bin = redis
        self.redis_port = free_port()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = f"depo_durability_{uuid.uuid4().hex[:8]}"
        self.db_url = pg_admin_url.rsplit("/", 1)[0] + "/" + self.db
        self.data_dir = tempfile.mkdtemp(prefix="depo-durability-")
        self.log_path = Path(self.data_dir) / "service.log"
        self.redis: subprocess.Popen[bytes] | None = None
        self.service: subprocess.Popen[bytes] | None = None

    def start_redis(self) -> None:
        no_disk = ["--save", "", "--appendonly", "no"]  # a restart comes back empty
        self.redis = subprocess.Popen(
            [self.redis_bin, "--port", str(self.redis_port), "--bind", "127.0.0.1", *no_disk],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_port(self.redis_port, 30)

    def start_service(self) -> None:
        env = {**os.environ, "DEPO_DATA_DIR": self.data_dir, "HF_HUB_OFFLINE": "1"}
        env.pop("DEPO_API_KEYS", None)
        env["DEPO_DATABASE_URL"] = self.db_url
        env["DEPO_REDIS_URL"] = f"redis://127.0.0.1:{self.redis_port}/0"
        args = ["serve", "--port", str(self.port), "--log-level", "warning"]
        with open(self.log_path, "ab") as log:
            self.service = subprocess.Popen(
                [sys.executable, "-m", "service", *args],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            if self.service.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"service did not start; see {self.log_path}")
            time.sleep(0.1)

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes] | None) -> None:
        """SIGKILL the process group this object started, then reap it."""
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def kill(self, what: str) -> None:
        if what in ("redis", "both"):
            self._kill(self.redis)
        if what in ("service", "both"):
            self._kill(self.service)

    def restart(self, what: str) -> None:
        if what in ("redis", "both"):
            self.start_redis()
        if what in ("service", "both"):
            self.start_service()

    @contextlib.contextmanager
    def running(self) -> Iterator[Cluster]:
        asyncio.run(_admin(self.pg_admin_url, f'CREATE DATABASE "{self.db}"'))
        try:
            self.start_redis()
            self.start_service()
            yield self
        finally:
            for proc in (self.service, self.redis):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        self._kill(proc)
            asyncio.run(
                _admin(self.pg_admin_url, f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
            )
            shutil.rmtree(self.data_dir, ignore_errors=True)


@dataclass
class Ledger:
    """What the trainers were told: every acknowledged group, and how the acks looked."""

    target: int
    acked: dict[Key, list[float]] = field(default_factory=dict)
    reports: int = 0
    resends: int = 0
    resend_accepted: int = 0  # groups a deliberate re-send got accepted again: double counts
    answer_lost: int = 0  # groups a first report saw as duplicates: committed, answer lost
    call_failures: int = 0  # calls that outlived the client's retries (and were tried again)
    mid_run_checks: int = 0  # hot stats checked while the trainers were held, before a wipe
    mid_run_mismatches: int = 0
    mid_run_examples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)
    go: threading.Event = field(default_factory=threading.Event)  # cleared: trainers hold
    holding: int = 0
    faults_pending: int = 0  # the run goes on past the target until every fault was injected

    def record(self, groups: dict[Key, list[float]], accepted: int, duplicates: int) -> None:
        with self.lock:
            self.reports += 1
            self.answer_lost += duplicates
            for key, rewards in groups.items():
                self.acked.setdefault(key, rewards)
            if len(self.acked) >= self.target and not self.faults_pending:
                self.done.set()

    def fault_done(self) -> None:
        with self.lock:
            self.faults_pending -= 1
            if len(self.acked) >= self.target and not self.faults_pending:
                self.done.set()

    def hold_here(self) -> None:
        """Between steps, wait while the fault injector holds the trainers."""
        if self.go.is_set():
            return
        with self.lock:
            self.holding += 1
        self.go.wait()
        with self.lock:
            self.holding -= 1

    @contextlib.contextmanager
    def held(self, trainers: int) -> Iterator[None]:
        """No call in flight inside: every trainer waits between two steps."""
        self.go.clear()
        try:
            while not self.done.is_set():
                with self.lock:
                    if self.holding >= trainers:
                        break
                time.sleep(0.02)
            yield
        finally:
            self.go.set()

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.acked)


def _until_done(ledger: Ledger, call: Any, *args: Any, **kwargs: Any) -> Any:
    """Call until it answers: a trainer whose client gave up tries again, as a spool would."""
    started = time.monotonic()
    while True:
        try:
            return call(*args, **kwargs)
        except UNREACHABLE:
            with ledger.lock:
                ledger.call_failures += 1
            if time.monotonic() - started > 300:
                raise
            time.sleep(0.5)


def trainer(url: str, run: str, partition: int, size: int, ledger: Ledger, seed: int) -> None:
    """One data-parallel trainer: a batch per step for its partition, its groups reported."""
    rng = random.Random(seed)
    retry = RetryPolicy(max_attempts=30, deadline=120.0, backoff=0.1, max_backoff=1.0)
    part = str(partition)
    with DepoClient(url, api_key="", retry=retry, timeout=30.0) as client:
        step = 0
        while not ledger.done.is_set():
            ledger.hold_here()
            batch = _until_done(ledger, client.next_batch, run, step, size, part)
            results = [
                {
                    "prompt_id": pid,
                    "rewards": [rng.choice((0.0, 0.0, 0.25, 1.0)) for _ in range(GROUP_SIZE)],
                }
                for pid in batch.ids
            ]
            ack = _until_done(ledger, client.report, run, step, results, batch.batch_id)
            groups = {(batch.step, batch.partition, r["prompt_id"]): r["rewards"] for r in results}
            ledger.record(groups, ack.accepted, ack.duplicates)
            if rng.random() < 0.1:  # a retry of a report whose answer the trainer missed
                again = _until_done(ledger, client.report, run, step, results, batch.batch_id)
                with ledger.lock:
                    ledger.resends += 1
                    ledger.resend_accepted += again.accepted
            step += 1


def inject(
    cluster: Cluster,
    ledger: Ledger,
    faults: tuple[str, ...],
    seed: int,
    check: tuple[str, list[str], int] | None = None,
) -> list[str]:
    """Each fault at its share of the target, at a random moment: kill -9, a pause, a restart.

    With `check` (run, prompts, trainers), before a fault that empties Redis the trainers are
    held and the hot stats compared with the log: what was folded since the last wipe, service
    kills included, is checked before it is thrown away.
    """
    rng = random.Random(seed)
    done: list[str] = []
    t0 = time.monotonic()
    for i, what in enumerate(faults, start=1):
        at = ledger.target * i // (len(faults) + 1)
        while ledger.count < at and not ledger.done.is_set():
            time.sleep(0.05)
        if ledger.done.is_set():
            break
        if check is not None and what in ("redis", "both"):
            run, prompts, trainers = check
            with ledger.held(trainers):
                if ledger.done.is_set():
                    break
                bad, _, examples = stats_check(cluster, run, prompts)
                ledger.mid_run_checks += 1
                ledger.mid_run_mismatches += bad
                ledger.mid_run_examples += [f"before {what} kill #{i}: {e}" for e in examples]
            time.sleep(rng.uniform(0.3, 1.0))  # the load back on before the kill
        time.sleep(rng.uniform(0.0, 0.3))
        cluster.kill(what)
        time.sleep(rng.uniform(0.2, 1.0))
        cluster.restart(what)
        done.append(what)
        ledger.fault_done()
        print(
            f"  {time.monotonic() - t0:6.1f} s: {what} killed -9 and restarted "
            f"at {ledger.count:,} groups",
            file=sys.stderr,
        )
    return done


@dataclass
class Audit:
    in_log: int
    lost: int
    double_counted: int
    unacked_in_log: int
    reward_mismatches: int
    stats_mismatches: int
    examples: list[str]


async def _log_rows(db_url: str, run: str) -> tuple[list[asyncpg.Record], asyncpg.Record]:
    conn = await asyncpg.connect(db_url)
    try:
        r = await conn.fetchrow(
            "SELECT id, groups, rollouts, successes, outcome_seq FROM runs WHERE name = $1", run
        )
        rows = await conn.fetch(
            "SELECT o.seq, o.step, o.dedup_key, o.rewards, o.n, o.successes, p.client_id"
            " FROM outcomes o JOIN prompts p ON p.id = o.prompt_id WHERE o.run_id = $1",
            r["id"],
        )
        return rows, r
    finally:
        await conn.close()


def _tally(groups: list[tuple[str, list[float]]], threshold: float) -> dict[str, list[int]]:
    """Per prompt: [groups, rollouts, successes]."""
    out: dict[str, list[int]] = {}
    for pid, rewards in groups:
        t = out.setdefault(pid, [0, 0, 0])
        t[0] += 1
        t[1] += len(rewards)
        t[2] += sum(1 for x in rewards if x >= threshold)
    return out


def stats_check(
    cluster: Cluster,
    run: str,
    prompts: list[str],
    rows: list[asyncpg.Record] | None = None,
    counters: asyncpg.Record | None = None,
) -> tuple[int, int, list[str]]:
    """Mismatches of each prompt's hot stats and the run's counters with the log; excess groups."""
    if rows is None or counters is None:
        rows, counters = asyncio.run(_log_rows(cluster.db_url, run))
    examples: list[str] = []
    with DepoClient(cluster.url, api_key="") as client:
        threshold = client.get_run(run).success_threshold
        want = {p: [0, 0, 0] for p in prompts}  # a prompt never reported must read as unseen
        want.update(_tally([(r["client_id"], _rewards(r)) for r in rows], threshold))
        totals = [sum(t[i] for t in want.values()) for i in range(3)]
        have = [counters["groups"], counters["rollouts"], counters["successes"]]
        mismatches = excess = 0
        if have != totals:
            mismatches += 1
            excess += max(0, have[0] - totals[0])
            examples.append(f"run counters {have} vs log {totals} (groups, rollouts, successes)")
        with ThreadPoolExecutor(4) as pool:
            stats = dict(
                zip(want, pool.map(lambda p: client.prompt_stats(run, p), want), strict=True)
            )
    for pid, (g, n, k) in want.items():
        s = stats[pid]
        if (s.observations, s.rollouts, s.successes, len(s.history)) != (g, n, k, g):
            mismatches += 1
            excess += max(0, s.observations - g)
            if len(examples) < 10:
                examples.append(
                    f"prompt {pid}: hot stats {s.observations}/{s.rollouts}/{s.successes}, "
                    f"history {len(s.history)}, log {g}/{n}/{k} (groups/rollouts/successes)"
                )
    return mismatches, excess, examples


def _rewards(row: asyncpg.Record) -> list[float]:
    raw = row["rewards"]
    return list(json.loads(raw) if isinstance(raw, str) else raw)


def audit(cluster: Cluster, run: str, ledger: Ledger, prompts: list[str]) -> Audit:
    """The acknowledgements against the log, and the run's counters and hot stats against it."""
    rows, counters = asyncio.run(_log_rows(cluster.db_url, run))
    examples: list[str] = []
    per_key = Counter[Key]()
    logged: dict[Key, list[float]] = {}
    for row in rows:
        _, step, _, partition = row["dedup_key"].split(":", 3)
        key = (int(step), partition, row["client_id"])
        per_key[key] += 1
        logged[key] = _rewards(row)
    lost = [k for k in ledger.acked if k not in logged]
    unacked = [k for k in logged if k not in ledger.acked]
    reward_diff = [k for k, v in ledger.acked.items() if k in logged and logged[k] != v]
    double = sum(c - 1 for c in per_key.values())
    seqs = sorted(row["seq"] for row in rows)
    if seqs != list(range(1, len(rows) + 1)) or counters["outcome_seq"] != len(rows):
        examples.append(f"log seq not 1..{len(rows)} (outcome_seq {counters['outcome_seq']})")
        double += max(0, counters["outcome_seq"] - len(rows))
    mismatches, excess, found = stats_check(cluster, run, prompts, rows, counters)
    examples += found
    double += excess
    mismatches += ledger.mid_run_mismatches
    examples += ledger.mid_run_examples
    for name, keys in (("lost", lost), ("not acknowledged", unacked), ("rewards", reward_diff)):
        examples += [f"{name}: {k}" for k in keys[:5]]
    return Audit(
        in_log=len(rows),
        lost=len(lost),
        double_counted=double + ledger.resend_accepted,
        unacked_in_log=len(unacked),
        reward_mismatches=len(reward_diff),
        stats_mismatches=mismatches,
        examples=examples,
    )


@dataclass
class Result:
    ledger: Ledger
    audit: Audit
    faults: list[str]
    seconds: float

    @property
    def ok(self) -> bool:
        a = self.audit
        return (
            not (a.lost or a.double_counted or a.unacked_in_log or a.reward_mismatches)
            and not a.stats_mismatches
        )

    def table(self) -> str:
        a, led = self.audit, self.ledger
        kinds = Counter(self.faults)
        faults = ", ".join(f"{what} ×{n}" for what, n in kinds.items()) or "none"
        rows = [
            ("groups acknowledged", f"{len(led.acked):,}"),
            ("groups in the outcome log", f"{a.in_log:,}"),
            ("lost (acknowledged, not in the log)", f"{a.lost:,}"),
            ("double-counted (log, run counters, re-sends)", f"{a.double_counted:,}"),
            ("in the log, never acknowledged", f"{a.unacked_in_log:,}"),
            ("rewards differing from the acknowledged", f"{a.reward_mismatches:,}"),
            ("stats mismatches (prompts' hot stats, run counters)", f"{a.stats_mismatches:,}"),
            ("faults injected (kill -9, restart)", f"{len(self.faults)}: {faults}"),
            ("reports / deliberate re-sends", f"{led.reports:,} / {led.resends:,}"),
            ("groups committed whose answer was lost", f"{led.answer_lost:,}"),
            ("hot stats checks before a Redis wipe (trainers held)", f"{led.mid_run_checks}"),
            ("calls that outlived the client's retries", f"{led.call_failures:,}"),
            ("wall time", f"{self.seconds:.1f} s"),
        ]
        width = max(len(r[0]) for r in rows)
        lines = [f"| {'':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
        lines += [f"| {k:<{width}} | {v} |" for k, v in rows]
        return "\n".join(lines)


def probe(
    groups: int,
    trainers: int,
    *,
    size: int = 32,
    pool: int = 1000,
    faults: tuple[str, ...] = FAULTS,
    seed: int = 0,
    pg_admin_url: str = PG_ADMIN_URL,
    before_audit: Callable[[Cluster, str, Ledger], None] | None = None,
) -> Result:
    """Run the whole probe on a fresh cluster; nothing is left behind."""
    if pool < 2 * trainers * size:
        raise ValueError("pool must hold at least two batches per trainer")
    t0 = time.perf_counter()
    run = "durability"
    ledger = Ledger(target=groups, faults_pending=len(faults))
    with Cluster(pg_admin_url).running() as cluster, DepoClient(cluster.url, api_key="") as admin:
        admin.create_dataset("durability", embedder="hashing")
        prompts = [f"p{i}" for i in range(pool)]
        texts = [
            {"id": p, "text": f"Problem {p}: solve x + {i} = 0."} for i, p in enumerate(prompts)
        ]
        admin.upload_prompts("durability", texts, progress=False)
        admin.create_run(run, "durability", GROUP_SIZE)
        errors: list[BaseException] = []

        def guarded(i: int) -> None:
            try:
                trainer(cluster.url, run, i, size, ledger, seed * 1000 + i)
            except BaseException as exc:  # a dead trainer must end the probe, not hang it
                errors.append(exc)
                ledger.done.set()

        ledger.go.set()
        threads = [
            threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(trainers)
        ]
        for t in threads:
            t.start()
        injected = inject(cluster, ledger, faults, seed, (run, prompts, trainers))
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError(f"a trainer failed: {errors[0]!r}") from errors[0]
        if before_audit is not None:  # the tests break the ledger or the stats here
            before_audit(cluster, run, ledger)
        result = Result(ledger, audit(cluster, run, ledger, prompts), injected, 0.0)
    result.seconds = time.perf_counter() - t0
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=8000, help="groups to acknowledge")
    ap.add_argument("--trainers", type=int, default=4, help="concurrent trainer threads")
    ap.add_argument("--size", type=int, default=32, help="prompts per batch")
    ap.add_argument("--pool", type=int, default=1000, help="prompts in the dataset")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    result = probe(args.groups, args.trainers, size=args.size, pool=args.pool, seed=args.seed)
    print(result.table())
    for line in result.audit.examples:
        print(f"  {line}")
    print("OK" if result.ok else "FAILED: see the rows above")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
