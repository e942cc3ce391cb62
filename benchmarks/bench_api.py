"""API latency and throughput against a real server: upload, outcomes, batches.

Run: `make bench` or `.venv/bin/python -m benchmarks.bench_api [--backend postgres|embedded]`.
Prints a markdown table with p50/p95 per call and the targets from the foundation issue.
`--against REV --rounds N` times the training step of this tree and of commit REV, alternating
N times in one run (each round a fresh server and database), and prints both.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import httpx

from benchmarks._server import REPO, checkout, serve
from benchmarks.scale import step as timed_step


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def embed_time(c: httpx.Client, n: int, embedder: str) -> float:
    """Upload n prompts to a fresh dataset; seconds until every one is embedded."""
    name = f"embed-{embedder}"
    c.post("/v1/datasets", json={"name": name, "embedder": embedder}).raise_for_status()
    prompts = [
        {"id": f"e{i}", "text": f"Let x = {i}. Find the remainder of x^2 + {i % 97} divided by 7."}
        for i in range(n)
    ]
    t0 = time.perf_counter()
    for start in range(0, n, 10_000):
        c.post(
            f"/v1/datasets/{name}/prompts", json={"prompts": prompts[start : start + 10_000]}
        ).raise_for_status()
    while (done := c.get(f"/v1/datasets/{name}").json()["embedded"]) < n:
        print(f"  embedded {done:>7,}/{n:,}", file=sys.stderr)
        time.sleep(0.5)
    return time.perf_counter() - t0


def run(
    backend: str,
    pool: int,
    repeats: int,
    size: int,
    embed_n: int,
    embedder: str | None = None,
    selection: dict[str, object] | None = None,
    repo: Path = REPO,
) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    rng = random.Random(0)
    with serve(backend, repo=repo) as url, httpx.Client(base_url=url, timeout=120) as c:
        for embedder in ("hashing", "ngrams") if embed_n else ():
            t = embed_time(c, embed_n, embedder)
            rows.append(
                (
                    f"{embed_n:,}-prompt dataset uploaded and embedded ({embedder})",
                    f"{t:.1f} s",
                    "-",
                    "≤ 15 s for 30,000",
                )
            )
        body = {"name": "bench"} | ({"embedder": embedder} if embedder else {})
        c.post("/v1/datasets", json=body).raise_for_status()
        prompts = [
            {
                "id": f"q{i}",
                "text": f"Problem {i}: find x such that {i} x + {rng.randint(1, 99)} = 0.",
            }
            for i in range(pool)
        ]
        t0 = time.perf_counter()
        for start in range(0, pool, 10_000):
            c.post(
                "/v1/datasets/bench/prompts", json={"prompts": prompts[start : start + 10_000]}
            ).raise_for_status()
            print(f"  uploaded {min(start + 10_000, pool):>7,}/{pool:,}", file=sys.stderr)
        upload = time.perf_counter() - t0
        while (done := c.get("/v1/datasets/bench").json()["embedded"]) < pool:
            print(
                f"  embedded {done:>7,}/{pool:,} (waiting before the latency runs)", file=sys.stderr
            )
            time.sleep(2)
        rows.append((f"upload {pool:,} prompts (10k chunks)", f"{upload:.1f} s", "-", "≤ 30 s"))

        c.post(
            "/v1/runs",
            json={"name": "r", "dataset": "bench", "group_size": 8, "selection": selection or {}},
        ).raise_for_status()
        out_lat: list[float] = []
        for step in range(repeats):
            ids = rng.sample(range(pool), 1000)
            results = [
                {"prompt_id": f"q{i}", "rewards": [float(rng.random() < 0.4) for _ in range(8)]}
                for i in ids
            ]
            t = time.perf_counter()
            c.post(
                "/v1/runs/r/outcomes", json={"step": step, "results": results}
            ).raise_for_status()
            out_lat.append(time.perf_counter() - t)
        rows.append(
            (
                "POST /outcomes, 1,000 groups of 8",
                f"{1000 * _pct(out_lat, 0.5):.1f} ms",
                f"{1000 * _pct(out_lat, 0.95):.1f} ms",
                "p50 ≤ 100 ms",
            )
        )
        print(f"  outcomes: {repeats} calls done", file=sys.stderr)

        batch_lat: list[float] = []
        report_lat: list[float] = []
        for step in range(repeats, 2 * repeats):
            b_s, o_s = timed_step(c, "r", size, step, rng)
            batch_lat.append(b_s)
            report_lat.append(o_s)
        rows.append(
            (
                f"POST /batches, {size} of {pool:,} (informative)",
                f"{1000 * _pct(batch_lat, 0.5):.1f} ms",
                f"{1000 * _pct(batch_lat, 0.95):.1f} ms",
                "p50 ≤ 50 ms",
            )
        )
        rows.append(
            (
                f"POST /outcomes, the batch's {size} groups",
                f"{1000 * _pct(report_lat, 0.5):.1f} ms",
                f"{1000 * _pct(report_lat, 0.95):.1f} ms",
                "-",
            )
        )
        step_times = [a + b for a, b in zip(batch_lat, report_lat, strict=True)]
        rows.append(
            (
                "service time per step (batch + outcomes)",
                f"{1000 * statistics.median(step_times):.1f} ms",
                f"{1000 * _pct(step_times, 0.95):.1f} ms",
                "-",
            )
        )
    return rows


STEP_ROWS = ("POST /batches", "POST /outcomes, the batch", "service time per step")


def compare(args: argparse.Namespace, selection: dict[str, object]) -> None:
    """This tree against `--against`, alternating, so both meet the same machine load."""
    table: list[tuple[str, int, list[tuple[str, str, str, str]]]] = []
    with checkout(args.against) as other:
        for r in range(args.rounds):
            for name, repo in (("this tree", REPO), (args.against, other)):
                print(f"round {r + 1}/{args.rounds}: {name}", file=sys.stderr)
                rows = run(
                    args.backend,
                    args.pool,
                    args.repeats,
                    args.size,
                    0,
                    args.embedder,
                    selection,
                    repo,
                )
                table.append((name, r + 1, [x for x in rows if x[0].startswith(STEP_ROWS)]))
    print(
        f"\n### training step, this tree against {args.against} ({args.backend}, pool "
        f"{args.pool:,}, batch {args.size}, {args.repeats} steps a round)\n"
    )
    print("| tree | round | POST /batches p50 | its outcomes p50 | step p50 | step p95 |")
    print("|---|---|---|---|---|---|")
    for name, r, rows in table:
        b, o, st = rows
        print(f"| {name} | {r} | {b[1]} | {o[1]} | {st[1]} | {st[2]} |")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--backend", choices=["postgres", "embedded"], default="postgres")
    ap.add_argument("--pool", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--size", type=int, default=256, help="batch size for POST /batches")
    ap.add_argument("--embedder", default=None, help="the pool's embedder (default: service's)")
    ap.add_argument(
        "--embed", type=int, default=30_000, help="prompts for the embedding timing (0: skip)"
    )
    ap.add_argument(
        "--selection",
        default="{}",
        help="JSON for the run's selection, e.g. '{\"oversample\": 32}' (the efficacy setting)",
    )
    ap.add_argument("--against", default=None, help="a git revision to compare the step with")
    ap.add_argument("--rounds", type=int, default=2, help="with --against: rounds per tree")
    args = ap.parse_args()
    if args.against:
        compare(args, json.loads(args.selection))
        return
    rows = run(
        args.backend,
        args.pool,
        args.repeats,
        args.size,
        args.embed,
        args.embedder,
        json.loads(args.selection),
    )
    print(f"\n### depo-service API benchmark ({args.backend}, 1 server process)\n")
    print("| operation | p50 / total | p95 | target |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
