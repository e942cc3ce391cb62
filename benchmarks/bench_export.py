"""Export of a large dataset: time and the server's peak memory growth, per format.

    .venv/bin/python -m benchmarks.bench_export                       # 1,000,000 prompts, SQLite
    .venv/bin/python -m benchmarks.bench_export --backend postgres    # PostgreSQL + Redis
    .venv/bin/python -m benchmarks.bench_export --prompts 200000 --groups 50000

The dataset and run are made through the API (a `client` dataset, so nothing is embedded in the
background). The prompts are then written straight into the `prompts` table in bulk, with an
outcome log over part of them and a predictor version whose prior covers every prompt, exactly
the rows uploads, ingest and a fit would have left: a million prompts through the API would
take most of an hour here. A warm-up request first folds the log into the hot stats and loads
the prior (memory the service holds for the run whatever exports it serves); each export's peak
growth is then the server's high-water RSS (VmHWM, reset before each export through
/proc/PID/clear_refs) above its RSS when the export began.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks._server import PG_ADMIN_URL, REDIS_URL, _admin, serve

G = 8
SOURCES = ("gsm8k", "math", "aime", "olympiad")


def _prompt_rows(ds_id: int, n: int, now: Any) -> list[tuple[Any, ...]]:
    return [
        (
            ds_id,
            i,
            f"p{i}",
            f"Problem {i}: what is {i} times {i % 97}?",
            json.dumps({"source": SOURCES[i % 4], "level": i % 5}),
            f"{i:064x}",
            now,
            now,
        )
        for i in range(n)
    ]


PROMPT_COLS = (
    "dataset_id",
    "idx",
    "client_id",
    "text",
    "metadata",
    "content_hash",
    "created_at",
    "updated_at",
)
OUTCOME_COLS = (
    "run_id",
    "seq",
    "prompt_id",
    "prompt_idx",
    "step",
    "dedup_key",
    "rewards",
    "n",
    "successes",
    "reward_mean",
    "reward_std",
    "zero_variance",
    "received_at",
)


def _outcome_rows(
    run_id: int, groups: int, pool: int, pk: list[int], now: Any
) -> list[tuple[Any, ...]]:
    """Group s is prompt (s * 7919) % pool at step s // 256; prompt i passes about i / pool."""
    rng = np.random.default_rng(0)
    out = []
    for s in range(1, groups + 1):
        i = (s * 7919) % pool
        k = int(rng.binomial(G, i / pool))
        mean = k / G
        out.append(
            (
                run_id,
                s,
                pk[i],
                i,
                (s - 1) // 256,
                f"b-{s}",
                json.dumps([1.0] * k + [0.0] * (G - k)),
                G,
                k,
                mean,
                (mean * (1 - mean)) ** 0.5,
                k in (0, G),
                now,
            )
        )
    return out


def _version_row(run_id: int, pool: int, groups: int, now: Any) -> tuple[Any, ...]:
    rates = np.random.default_rng(1).beta(2, 3, size=pool).astype(np.float32).tobytes()
    return (run_id, 1, groups, b"", rates, json.dumps({"prior_strength": 3.0}), None, now)


VERSION_COLS = (
    "run_id",
    "version",
    "trained_on",
    "state",
    "priors",
    "calibration",
    "tracking",
    "fitted_at",
)


def _counters(rows: list[tuple[Any, ...]]) -> tuple[int, int, int, int, int]:
    return (
        len(rows),
        G * len(rows),
        sum(r[8] for r in rows),
        sum(1 for r in rows if r[11]),
        rows[-1][4] if rows else -1,
    )


def _seed_sqlite(db: Path, run: str, pool: int, groups: int) -> None:
    con = sqlite3.connect(db, timeout=60)
    run_id, ds_id = con.execute("SELECT id, dataset_id FROM runs WHERE name=?", (run,)).fetchone()
    now = datetime.now(UTC).isoformat(sep=" ")
    with con:
        marks = ", ".join("?" * len(PROMPT_COLS))
        con.executemany(
            f"INSERT INTO prompts ({', '.join(PROMPT_COLS)}) VALUES ({marks})",
            _prompt_rows(ds_id, pool, now),
        )
        con.execute("UPDATE datasets SET prompt_count=? WHERE id=?", (pool, ds_id))
        pk = [
            r[0]
            for r in con.execute("SELECT id FROM prompts WHERE dataset_id=? ORDER BY idx", (ds_id,))
        ]
        rows = _outcome_rows(run_id, groups, pool, pk, now)
        marks = ", ".join("?" * len(OUTCOME_COLS))
        con.executemany(f"INSERT INTO outcomes ({', '.join(OUTCOME_COLS)}) VALUES ({marks})", rows)
        n, rollouts, succ, zero, step = _counters(rows)
        con.execute(
            "UPDATE runs SET outcome_seq=?, groups=?, rollouts=?, successes=?, "
            "zero_variance_groups=?, max_step=? WHERE id=?",
            (n, n, rollouts, succ, zero, step, run_id),
        )
        marks = ", ".join("?" * len(VERSION_COLS))
        con.execute(
            f"INSERT INTO predictor_versions ({', '.join(VERSION_COLS)}) VALUES ({marks})",
            _version_row(run_id, pool, groups, now),
        )
    con.close()


async def _seed_pg(url: str, run: str, pool: int, groups: int) -> None:
    import asyncpg

    con = await asyncpg.connect(url)
    try:
        run_id, ds_id = await con.fetchrow("SELECT id, dataset_id FROM runs WHERE name=$1", run)
        now = datetime.now(UTC)
        await con.copy_records_to_table(
            "prompts", records=_prompt_rows(ds_id, pool, now), columns=PROMPT_COLS
        )
        await con.execute("UPDATE datasets SET prompt_count=$1 WHERE id=$2", pool, ds_id)
        pk = [
            r[0]
            for r in await con.fetch(
                "SELECT id FROM prompts WHERE dataset_id=$1 ORDER BY idx", ds_id
            )
        ]
        rows = _outcome_rows(run_id, groups, pool, pk, now)
        await con.copy_records_to_table("outcomes", records=rows, columns=OUTCOME_COLS)
        n, rollouts, succ, zero, step = _counters(rows)
        await con.execute(
            "UPDATE runs SET outcome_seq=$1, groups=$1, rollouts=$2, successes=$3, "
            "zero_variance_groups=$4, max_step=$5 WHERE id=$6",
            n,
            rollouts,
            succ,
            zero,
            step,
            run_id,
        )
        await con.copy_records_to_table(
            "predictor_versions",
            records=[_version_row(run_id, pool, groups, now)],
            columns=VERSION_COLS,
        )
        await con.execute("ANALYZE prompts; ANALYZE outcomes")
    finally:
        await con.close()


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def _export(
    c: httpx.Client, pid: int, run: str, params: dict[str, Any]
) -> tuple[int, int, float, float]:
    """(rows, bytes, seconds, peak RSS growth in MB) of one export, read and thrown away."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the high-water mark to now
    before = _status(pid)["VmRSS"]
    t0 = time.perf_counter()
    rows = size = 0
    with c.stream("GET", f"/v1/runs/{run}/export", params=params) as r:
        assert r.status_code == 200, r.read()
        for data in r.iter_bytes():
            size += len(data)
            rows += data.count(b"\n")
    seconds = time.perf_counter() - t0
    peak = _status(pid)["VmHWM"]
    return rows, size, seconds, (peak - before) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=["embedded", "postgres"], default="embedded")
    ap.add_argument("--prompts", type=int, default=1_000_000)
    ap.add_argument("--groups", type=int, default=100_000)
    args = ap.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="depo-export-"))
    env = {"DEPO_DATA_DIR": str(data_dir)}
    db_url = None
    if args.backend == "postgres":
        db = f"depo_bench_{uuid.uuid4().hex[:8]}"
        asyncio.run(_admin(f'CREATE DATABASE "{db}"'))
        db_url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + db
        env |= {
            "DEPO_DATABASE_URL": db_url,
            "DEPO_REDIS_URL": REDIS_URL,
            "DEPO_REDIS_PREFIX": f"depobench-{db}",
        }
    pids: list[int] = []
    try:
        with (
            serve("embedded", env=env, pids=pids) as url,
            httpx.Client(base_url=url, timeout=600) as c,
        ):
            ds, run = f"export-{uuid.uuid4().hex[:6]}", "big"
            assert c.post("/v1/datasets", json={"name": ds, "embedder": "client"}).is_success
            body = {"name": run, "dataset": ds, "group_size": G}
            assert c.post("/v1/runs", json=body).status_code == 201
            t0 = time.perf_counter()
            if db_url is None:
                _seed_sqlite(data_dir / "depo.db", run, args.prompts, args.groups)
            else:
                asyncio.run(_seed_pg(db_url, run, args.prompts, args.groups))
            seeded = time.perf_counter() - t0
            pid = pids[0]
            rss0 = _status(pid)["VmRSS"]
            t0 = time.perf_counter()
            warm = c.post(f"/v1/runs/{run}/predict", json={"prompt_ids": ["p0"]})
            assert warm.status_code == 200 and warm.json()["model_version"] == 1, warm.text
            _export(c, pid, run, {"limit": 10, "format": "parquet"})  # imports pyarrow once
            warm_s = time.perf_counter() - t0
            rss1 = _status(pid)["VmRSS"]
            print(
                f"{args.backend}: {args.prompts:,} prompts, {args.groups:,} groups and a "
                f"predictor version inserted in bulk in {seeded:.0f} s; warm-up (log folded "
                f"into the hot stats, prior loaded) {warm_s:.1f} s, RSS {rss0 / 1e6:.0f} -> "
                f"{rss1 / 1e6:.0f} MB\n"
            )
            cases: list[tuple[str, dict[str, Any]]] = [
                ("jsonl, every prompt", {}),
                ("csv, every prompt", {"format": "csv"}),
                ("parquet, every prompt", {"format": "parquet"}),
                ("jsonl, with text", {"include_text": "true"}),
                ("jsonl, seen only", {"seen": "true"}),
                (
                    "jsonl, P(mixed) >= 0.5, pass rate 0.2-0.8",
                    {"min_p_informative": 0.5, "min_pass_rate": 0.2, "max_pass_rate": 0.8},
                ),
                (
                    "jsonl, top 100,000 by P(mixed)",
                    {"order_by": "p_informative", "descending": "true", "limit": 100_000},
                ),
            ]
            print("| export | rows | MB sent | seconds | rows/s | server peak RSS growth MB |")
            print("|---|---|---|---|---|---|")
            for name, params in cases:
                rows, size, seconds, growth = _export(c, pid, run, params)
                if params.get("format") == "parquet":
                    rows_s = "-"
                else:
                    rows -= 1 if params.get("format") == "csv" else 0
                    rows_s = f"{rows:,}"
                rate = f"{(rows if rows_s != '-' else args.prompts) / seconds:,.0f}"
                print(
                    f"| {name} | {rows_s} | {size / 1e6:,.1f} | {seconds:.1f} | {rate} "
                    f"| {growth:.1f} |",
                    flush=True,
                )
    finally:
        if db_url is not None:
            asyncio.run(
                _admin(f'DROP DATABASE IF EXISTS "{db_url.rsplit("/", 1)[1]}" WITH (FORCE)')
            )


if __name__ == "__main__":
    main()
