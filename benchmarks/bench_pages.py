"""Admin page latency on a run with many outcome groups: p50 / p95 per page.

    .venv/bin/python -m benchmarks.bench_pages                      # 1,000,000 groups, SQLite
    .venv/bin/python -m benchmarks.bench_pages --backend postgres   # PostgreSQL + Redis
    .venv/bin/python -m benchmarks.bench_pages --groups 200000 --prompts 20000 --repeats 20

The dataset and runs are made through the API. The outcome log is then written straight into
the `outcomes` table in bulk (one multi-row INSERT per 20,000 rows on SQLite, COPY on
PostgreSQL) and the run row's counters set to match, exactly what ingest would have left:
1,000,000 groups through `POST /outcomes` would take most of an hour on this machine. The
server's hot stats catch up from that log on the first request, like after a Redis flush.
The first view of each page is reported apart ("cold": the per-step aggregates are built once
per process); p50 / p95 are over the views after it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from benchmarks._server import PG_ADMIN_URL, REDIS_URL, _admin, serve

G = 8
PER_STEP = 256


def _outcome_rows(groups: int, prompts: int, pk_of: dict[int, int], seed: int = 0) -> list[tuple]:
    """Steps of PER_STEP groups over the pool in order; prompt i passes about i/prompts of rollouts."""
    rng = np.random.default_rng(seed)
    seq = np.arange(1, groups + 1)
    idx = (seq - 1) % prompts
    step = (seq - 1) // PER_STEP
    p = np.clip(idx / prompts + 0.15 * np.minimum(step / step.max(), 1.0), 0, 1)
    k = rng.binomial(G, p)
    now = datetime.now(UTC).isoformat(sep=" ")
    out = []
    for s, i, st, kk in zip(seq.tolist(), idx.tolist(), step.tolist(), k.tolist(), strict=True):
        rewards = [1.0] * kk + [0.0] * (G - kk)
        mean = kk / G
        std = (mean * (1 - mean)) ** 0.5
        out.append(
            (
                s,
                pk_of[i],
                i,
                st,
                f"bench-{s}",
                json.dumps(rewards),
                G,
                kk,
                mean,
                std,
                kk in (0, G),
                now,
            )
        )
    return out


COLUMNS = (
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


def _seed_sqlite(db: Path, run: str, groups: int, prompts: int) -> None:
    con = sqlite3.connect(db, timeout=60)
    run_id, ds_id = con.execute("SELECT id, dataset_id FROM runs WHERE name=?", (run,)).fetchone()
    pk_of = dict(con.execute("SELECT idx, id FROM prompts WHERE dataset_id=?", (ds_id,)))
    rows = _outcome_rows(groups, prompts, pk_of)
    cols = ", ".join(("run_id", *COLUMNS))
    marks = ", ".join("?" * (len(COLUMNS) + 1))
    with con:
        for start in range(0, len(rows), 20_000):
            con.executemany(
                f"INSERT INTO outcomes ({cols}) VALUES ({marks})",
                [(run_id, *r[:-1], r[-1]) for r in rows[start : start + 20_000]],
            )
        _set_counters(con.execute, run_id, rows, "?")
    con.close()


def _set_counters(execute, run_id: int, rows: list[tuple], mark: str) -> None:
    zero = sum(1 for r in rows if r[10])
    successes = sum(r[7] for r in rows)
    q = (
        f"UPDATE runs SET outcome_seq={mark}, groups={mark}, rollouts={mark}, successes={mark}, "
        f"zero_variance_groups={mark}, max_step={mark} WHERE id={mark}"
    )
    return execute(q, (len(rows), len(rows), G * len(rows), successes, zero, rows[-1][3], run_id))


async def _seed_pg(url: str, run: str, groups: int, prompts: int) -> None:
    import asyncpg

    con = await asyncpg.connect(url)
    try:
        run_id, ds_id = await con.fetchrow("SELECT id, dataset_id FROM runs WHERE name=$1", run)
        pk_of = dict(await con.fetch("SELECT idx, id FROM prompts WHERE dataset_id=$1", ds_id))
        rows = _outcome_rows(groups, prompts, pk_of)
        now = datetime.now(UTC)
        records = [(run_id, *r[:-1], now) for r in rows]
        await con.copy_records_to_table("outcomes", records=records, columns=("run_id", *COLUMNS))
        zero = sum(1 for r in rows if r[10])
        await con.execute(
            "UPDATE runs SET outcome_seq=$1, groups=$1, rollouts=$2, successes=$3, "
            "zero_variance_groups=$4, max_step=$5 WHERE id=$6",
            len(rows),
            G * len(rows),
            sum(r[7] for r in rows),
            zero,
            rows[-1][3],
            run_id,
        )
        await con.execute("ANALYZE outcomes")
    finally:
        await con.close()


def _api_setup(url: str, ds: str, prompts: int) -> tuple[str, str]:
    with httpx.Client(base_url=url, timeout=300) as c:
        assert c.post("/v1/datasets", json={"name": ds}).status_code in (200, 201)
        for start in range(0, prompts, 10_000):
            chunk = [
                {
                    "id": f"p{i}",
                    "text": f"Problem {i}: what is {i} times {i % 97}?",
                    "metadata": {"source": ("gsm8k", "math", "aime", "olympiad")[i % 4]},
                }
                for i in range(start, min(prompts, start + 10_000))
            ]
            r = c.post(f"/v1/datasets/{ds}/prompts", json={"prompts": chunk})
            assert r.status_code == 200, r.text
        runs = []
        for name in ("big", "small"):
            body = {"name": f"{name}-{ds}", "dataset": ds, "group_size": G}
            assert c.post("/v1/runs", json=body).status_code == 201
            runs.append(f"{name}-{ds}")
        results = [{"prompt_id": f"p{i}", "rewards": [1.0, 0.0] * 4} for i in range(64)]
        for step in range(20):  # a small second run through the API, for the compare page
            r = c.post(f"/v1/runs/{runs[1]}/outcomes", json={"step": step, "results": results})
            assert r.status_code == 200, r.text
    return runs[0], runs[1]


def _time_pages(url: str, big: str, small: str, ds: str, repeats: int) -> None:
    pages = {
        "index": "/admin/",
        "run": f"/admin/runs/{big}",
        "run, profile by source": f"/admin/runs/{big}?by=source",
        "profile API by source": f"/v1/runs/{big}/profile?by=source",
        "prompts (P(mixed))": f"/admin/runs/{big}/prompts",
        "prompts (observations)": f"/admin/runs/{big}/prompts?sort=observations",
        "prompts (search)": f"/admin/runs/{big}/prompts?q=problem%2012",
        "prompt": f"/admin/runs/{big}/prompts/p123",
        "dataset": f"/admin/datasets/{ds}",
        "compare": f"/admin/compare?run={big}&run={small}",
    }
    print(f"{'page':<24}{'cold ms':>10}{'p50 ms':>10}{'p95 ms':>10}")
    with httpx.Client(base_url=url, timeout=600) as c:
        # the hot stats fold in the log written behind the service's back on their first read;
        # timed apart so the pages' cold views below are their own aggregates only
        t0 = time.perf_counter()
        r = c.get(f"/v1/runs/{big}/prompts/p123")
        assert r.status_code == 200, r.text[:300]
        print(f"{'hot-stats catch-up':<24}{1000 * (time.perf_counter() - t0):>10.0f}")
        for name, path in pages.items():
            t0 = time.perf_counter()
            r = c.get(path)
            cold = 1000 * (time.perf_counter() - t0)
            assert r.status_code == 200, (path, r.status_code, r.text[:300])
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                assert c.get(path).status_code == 200
                times.append(1000 * (time.perf_counter() - t0))
            times.sort()
            p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
            print(f"{name:<24}{cold:>10.0f}{statistics.median(times):>10.0f}{p95:>10.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=["embedded", "postgres"], default="embedded")
    ap.add_argument("--groups", type=int, default=1_000_000)
    ap.add_argument("--prompts", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="depo-pages-"))
    env = {"DEPO_DATA_DIR": str(data_dir), "DEPO_EMBEDDER": "ngrams"}
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
    try:
        with serve("embedded", env=env) as url:
            ds = f"pages-{uuid.uuid4().hex[:6]}"
            t0 = time.perf_counter()
            big, small = _api_setup(url, ds, args.prompts)
            t1 = time.perf_counter()
            if db_url is None:
                _seed_sqlite(data_dir / "depo.db", big, args.groups, args.prompts)
            else:
                asyncio.run(_seed_pg(db_url, big, args.groups, args.prompts))
            t2 = time.perf_counter()
            print(
                f"{args.backend}: {args.prompts:,} prompts through the API in {t1 - t0:.0f} s; "
                f"{args.groups:,} groups ({args.groups // PER_STEP:,} steps) inserted in bulk "
                f"in {t2 - t1:.0f} s"
            )
            _time_pages(url, big, small, ds, args.repeats)
    finally:
        if db_url is not None:
            asyncio.run(
                _admin(f'DROP DATABASE IF EXISTS "{db_url.rsplit("/", 1)[1]}" WITH (FORCE)')
            )


if __name__ == "__main__":
    main()
