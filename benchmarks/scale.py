"""The service at a large pool: upload, embedding, and request latency idle and while a fit runs.

Run: `python -m benchmarks.scale --pool 1000000 --fit-groups 1000000` (PostgreSQL + Redis and
one `depo worker` by default; `--workers 0` runs background work in the server, `--backend
embedded` on SQLite). One server process and its workers on a fresh database:

- upload of `--pool` prompts in 10,000-prompt requests, and the time of each 100,000-prompt
  slice (first against last: a per-chunk cost that grows with the dataset shows here);
- embedding (`ngrams`) by the worker, started when the upload ends (`--together`: beside it),
  timed from its first heartbeat, with the time each 100,000th prompt was reached (polled once
  a second), then the VACUUM of the prompts that ends the pass, waited for;
- POST /outcomes of 1,000 groups of 8 and POST /batches of `--size`, p50/p95, and the step
  (batch then its outcomes): idle (a run whose fits never come due) and while a fit runs (a
  run whose first fit comes due at `--fit-groups` reported groups, tracking on, stepped from
  then until its first version is stored or `--fit-steps` steps, each followed by a step on
  the idle run and a report of 1,000 groups to a third run: what the fit costs a request, apart
  from what the fitted run's larger log costs its own), and the idle run's steps again once the
  fit is stored (the idle run has grown by then: its figures before and after bracket it);
- the peak resident memory (VmHWM) of the server and of each worker.

`--profile out.txt` samples the server with py-spy during the idle batches and prints the
functions with the most samples (own and below), to see what a request pays per pool;
`--profile-worker out.txt` samples the worker for 90 s from the fit's trigger (py-spy's
`--nonblocking`: the sampled process is never paused, but sampling takes a little CPU).
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from benchmarks._server import serve

CHUNK = 10_000
SLICE = 100_000  # --slice


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def _ms(xs: list[float]) -> str:
    return f"{1000 * _pct(xs, 0.5):.0f} / {1000 * _pct(xs, 0.95):.0f}"


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _text(i: int, rng: random.Random) -> str:
    """Varied enough that n-grams differ, alike enough that neighbours exist."""
    a, b, c = rng.randint(2, 999), rng.randint(2, 99), rng.randint(1, 9)
    forms = (
        f"Problem {i}: find all real x such that {a} x^{c} + {b} x = {a + b}.",
        f"Let n = {a}. How many positive divisors of n^{c} + {b} are odd? (item {i})",
        f"A triangle has sides {a}, {a + b} and {b + c + a}. Find its area, case {i}.",
        f"Compute the remainder when {a}^{b} is divided by {c + 6}; question {i}.",
    )
    return forms[i % len(forms)]


def upload(
    c: httpx.Client, pool: int, slice_: int = SLICE, release: threading.Event | None = None
) -> tuple[float, list[float], list[float]]:
    """Upload time, per-slice upload times, per-slice embedding times (first to last).

    With `release` (the workers' start, held until the upload ends), upload and embedding
    are timed apart, each with the machine to itself; without, the embedding runs beside it.
    """
    rng = random.Random(0)
    c.post("/v1/datasets", json={"name": "pool", "embedder": "ngrams"}).raise_for_status()
    per_chunk: list[float] = []
    embedded_at: dict[int, float] = {}
    clock = [time.perf_counter()]  # the embedding's start

    def poll() -> int:
        done = int(c.get("/v1/datasets/pool").json()["embedded"])
        now = time.perf_counter() - clock[0]
        for mark in range(slice_, done + 1, slice_):
            embedded_at.setdefault(mark, now)
        return done

    bodies = [  # built before the clock starts: a trainer's client has its prompts at hand
        [{"id": f"q{i}", "text": _text(i, rng)} for i in range(start, min(start + CHUNK, pool))]
        for start in range(0, pool, CHUNK)
    ]
    t0 = last_poll = clock[0] = time.perf_counter()
    for start, body in zip(range(0, pool, CHUNK), bodies, strict=True):
        t = time.perf_counter()
        c.post("/v1/datasets/pool/prompts", json={"prompts": body}).raise_for_status()
        per_chunk.append(time.perf_counter() - t)
        if time.perf_counter() - last_poll > 1:
            last_poll = time.perf_counter()
            print(f"  uploaded {start + len(body):>9,}, embedded {poll():>9,}", file=sys.stderr)
    up = time.perf_counter() - t0
    if release is not None:
        release.set()
        while c.get("/readyz").json()["background"].get("workers", 0) < 1:
            time.sleep(0.2)  # the clock starts when a worker beats, not at its process start
        clock[0] = time.perf_counter()
    while (done := poll()) < pool:
        print(f"  embedded {done:>9,}/{pool:,}", file=sys.stderr)
        time.sleep(1)
    embedded_at[pool] = time.perf_counter() - clock[0]
    per = slice_ // CHUNK
    up_slices = [sum(per_chunk[i : i + per]) for i in range(0, len(per_chunk), per)]
    marks = sorted(embedded_at)
    emb_slices = [
        b - a
        for a, b in zip(
            [0.0] + [embedded_at[m] for m in marks], [embedded_at[m] for m in marks], strict=False
        )
    ]
    return up, up_slices, emb_slices


def step(
    c: httpx.Client, run: str, size: int, step: int, rng: random.Random
) -> tuple[float, float]:
    """One training step: the batch's seconds and its outcomes' seconds."""
    t = time.perf_counter()
    r = c.post(f"/v1/runs/{run}/batches", json={"step": step, "size": size})
    b_s = time.perf_counter() - t
    r.raise_for_status()
    b = r.json()
    results = [
        {"prompt_id": p["id"], "rewards": [float(rng.random() < 0.4) for _ in range(8)]}
        for p in b["prompts"]
    ]
    t = time.perf_counter()
    c.post(
        f"/v1/runs/{run}/outcomes",
        json={"step": step, "batch_id": b["batch_id"], "results": results},
    ).raise_for_status()
    return b_s, time.perf_counter() - t


def wait_for_vacuum(url: str, seconds: float = 600) -> float:
    """Seconds until the worker's VACUUM of the prompts after the embedding pass is done."""
    import asyncio

    import asyncpg

    async def count() -> int:
        conn = await asyncpg.connect(url)
        try:
            got = await conn.fetchval(
                "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'prompts'"
            )
            return int(got or 0)
        finally:
            await conn.close()

    t0 = time.perf_counter()
    while asyncio.run(count()) < 1 and time.perf_counter() - t0 < seconds:
        time.sleep(1)
    return time.perf_counter() - t0


def steps(
    c: httpx.Client, run: str, size: int, first: int, n: int
) -> tuple[list[float], list[float], list[float]]:
    """n training steps: batches, their outcomes, steps."""
    rng = random.Random(first)
    bl: list[float] = []
    ol: list[float] = []
    for k in range(first, first + n):
        b_s, o_s = step(c, run, size, k, rng)
        bl.append(b_s)
        ol.append(o_s)
    return bl, ol, [a + b for a, b in zip(bl, ol, strict=True)]


def steps_while_fitting(
    c: httpx.Client, runs: tuple[str, str, str], size: int, pool: int, first: int, n: int
) -> tuple[dict[str, list[float]], dict[str, list[float]], list[float], float | None]:
    """Until `runs[0]` has a version: a step on it and on `runs[1]`, then a report of 1,000
    groups to `runs[2]` (so the stepped run grows only by its steps). Batches and steps per
    run, the reports, seconds until the version if it came.

    The idle run's requests during the fit against its own requests before it are what the
    fit costs a request, apart from what the fitted run's larger log costs its own."""
    rng = random.Random(first)
    bl: dict[str, list[float]] = {r: [] for r in runs[:2]}
    sl: dict[str, list[float]] = {r: [] for r in runs[:2]}
    reports: list[float] = []
    t0 = time.perf_counter()
    for k in range(first, first + n):
        if c.get(f"/v1/runs/{runs[0]}/predictor").json()["version"] is not None:
            return bl, sl, reports, time.perf_counter() - t0
        for run in runs[:2]:
            b_s, o_s = step(c, run, size, k, rng)
            bl[run].append(b_s)
            sl[run].append(b_s + o_s)
        reports += outcomes(c, runs[2], pool, 1, k)
    return bl, sl, reports, None


def outcomes(
    c: httpx.Client, run: str, pool: int, calls: int, first: int, partition: str | None = None
) -> list[float]:
    """Reports of 1,000 groups on random prompts, without a batch; their seconds."""
    rng = random.Random(first)
    extra = {"partition": partition} if partition is not None else {}
    lat = []
    for step in range(first, first + calls):
        results = [
            {"prompt_id": f"q{i}", "rewards": [float(rng.random() < 0.4) for _ in range(8)]}
            for i in rng.sample(range(pool), 1000)
        ]
        t = time.perf_counter()
        c.post(
            f"/v1/runs/{run}/outcomes", json={"step": step, "results": results, **extra}
        ).raise_for_status()
        lat.append(time.perf_counter() - t)
    return lat


def profile(pid: int, seconds: int, out: str) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy not found: no profile", file=sys.stderr)
        return None
    cmd = [spy, "record", "-p", str(pid), "-d", str(seconds), "-f", "raw", "-o", out, "-r", "50"]
    cmd.append("--nonblocking")  # never pauses the process: its timings stay its own
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarise(path: str, what: str, top: int = 30) -> None:
    """Samples per function of the service's own code, inclusive, over the busy samples."""
    incl: Counter[str] = Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if any(w in frames[-1] for w in ("Condition.wait", "Queue.get", "select (selectors")):
            continue  # an idle thread
        n = int(count)
        total += n
        for frame in set(frames):
            if any(m in frame for m in ("service/", "sqlalchemy", "numpy", "scipy", "sklearn")):
                incl[frame] += n
    print(f"\n### py-spy, {what} ({total} busy samples, inclusive)\n")
    for frame, n in incl.most_common(top):
        print(f"- {100 * n / max(total, 1):5.1f}%  {frame}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pool", type=int, default=100_000)
    ap.add_argument("--backend", choices=["postgres", "embedded"], default="postgres")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument(
        "--fit-steps", type=int, default=400, help="at most this many steps while the fit runs"
    )
    ap.add_argument("--slice", type=int, default=SLICE, help="prompts per timed slice")
    ap.add_argument("--fit-wait", type=float, default=900, help="seconds to wait for the fit")
    ap.add_argument("--profile", default=None, help="py-spy raw output file (idle batches)")
    ap.add_argument(
        "--profile-worker", default=None, help="py-spy raw output file (the worker's fit)"
    )
    ap.add_argument(
        "--workers", type=int, default=None, help="`depo worker`s (default 1 on postgres)"
    )
    ap.add_argument(
        "--together",
        action="store_true",
        help="workers embed during the upload (default: they start when it ends)",
    )
    ap.add_argument(
        "--fit-groups",
        type=int,
        default=1000,
        help="groups reported to the fit run before its first fit comes due",
    )
    args = ap.parse_args()
    workers = args.workers if args.workers is not None else int(args.backend == "postgres")
    pids: list[int] = []
    databases: list[str] = []
    never = {"fit_min_outcomes": 2**31 - 1, "refit_every": 2**31 - 1}
    first_fit = {"fit_min_outcomes": args.fit_groups}
    release = threading.Event() if workers and not args.together else None
    with (
        serve(
            args.backend, pids=pids, workers=workers, hold_workers=release, databases=databases
        ) as url,
        httpx.Client(base_url=url, timeout=600) as c,
    ):
        pid = pids[0]
        up, up_slices, emb_slices = upload(c, args.pool, args.slice, release)
        emb_total = sum(emb_slices)
        print(f"  upload {up:.1f} s, embedded after {emb_total:.1f} s", file=sys.stderr)
        # the pass ends with a VACUUM of the prompts, as a real load does before training
        vacuumed = wait_for_vacuum(databases[0]) if databases else 0.0
        for name, sel in (("idle", never), ("fit", first_fit), ("beside", never)):
            body = {"name": name, "dataset": "pool", "group_size": 8, "selection": sel}
            c.post("/v1/runs", json=body).raise_for_status()
        out_idle = outcomes(c, "idle", args.pool, args.repeats, 0)
        spy = profile(pid, 60, args.profile) if args.profile else None
        if spy is not None:
            time.sleep(1)
        b_idle, _, s_idle = steps(c, "idle", args.size, args.repeats, args.repeats)
        if spy is not None:
            spy.wait()
        calls = max(1, args.fit_groups // 1000)
        print(f"  idle done; {calls:,} reports of 1,000 groups to the fit run", file=sys.stderr)
        t_rep = time.perf_counter()
        for k in range(0, calls - 1, 50):
            outcomes(c, "fit", args.pool, min(50, calls - 1 - k), k)
            print(f"  reported {1000 * min(k + 50, calls - 1):>9,} groups", file=sys.stderr)
        rep_s = time.perf_counter() - t_rep
        t_fit = time.perf_counter()
        out_fit = outcomes(c, "fit", args.pool, 1, calls)  # the last 1,000: the first fit is due
        wspy = (
            profile(pids[1], 90, args.profile_worker) if args.profile_worker and workers else None
        )
        b_during, s_during, out_during, fitted = steps_while_fitting(
            c, ("fit", "idle", "beside"), args.size, args.pool, calls + 1, args.fit_steps
        )
        b_fit, s_fit = b_during["fit"], s_during["fit"]
        b_beside, s_beside = b_during["idle"], s_during["idle"]
        if wspy is not None:
            wspy.wait()
        while fitted is None and c.get("/v1/runs/fit/predictor").json()["version"] is None:
            if time.perf_counter() - t_fit > args.fit_wait:
                break
            time.sleep(1)
        fit_s = time.perf_counter() - t_fit
        info = c.get("/v1/runs/fit/predictor").json()
        cal = info["calibration"] if info["version"] is not None else {}
        b_new: list[float] = []
        if cal:  # the first batch after a version reads its per-prompt arrays once per process
            b_new, _, _ = steps(c, "fit", args.size, calls + 2 + args.fit_steps, 5)
        # the idle run again, nothing in the background: the idle figures before the fit come
        # right after the embedding pass, and were slower than these in some runs; both print
        b_after, _, s_after = steps(c, "idle", args.size, calls + 8 + args.fit_steps, args.repeats)
        procs = [("server", pid)] + [(f"worker {i + 1}", w) for i, w in enumerate(pids[1:])]
        rss = [(name, p, _peak_rss_mb(p)) for name, p in procs]
        kids = [
            (name, int(k))
            for name, p in procs
            for k in Path(f"/proc/{p}/task/{p}/children").read_text().split()
        ]
        kid_rss = [(name, _peak_rss_mb(k)) for name, k in kids]
    where = f"{workers} worker{'s' * (workers != 1)}" if workers else "no workers"
    print(f"\n### scale: {args.pool:,} prompts ({args.backend}, 1 server, {where}, `ngrams`)\n")
    print("| measure | value |")
    print("|---|---|")
    print(
        f"| upload, {args.pool:,} prompts in 10,000-prompt requests: wall / in requests | "
        f"{up:.1f} / {sum(up_slices):.1f} s |"
    )
    when = "after the upload" if release is not None else "beside the upload"
    print(f"| embedded (`ngrams`, {when}), all | {emb_total:.1f} s |")
    print(
        f"| upload per {args.slice:,}, first / last slice | {up_slices[0]:.1f} / {up_slices[-1]:.1f} s |"
    )
    print(
        f"| embedding per {args.slice:,}, first / last slice | "
        f"{emb_slices[0]:.1f} / {emb_slices[-1]:.1f} s |"
    )
    if databases:
        print(f"| the prompts' VACUUM after the pass, waited for | {vacuumed:.1f} s |")
    print(f"| POST /outcomes, 1,000 groups of 8, p50 / p95 | {_ms(out_idle)} ms |")
    print(f"| POST /batches of {args.size}, idle, p50 / p95 | {_ms(b_idle)} ms |")
    print(f"| step (batch + its outcomes), idle, p50 / p95 | {_ms(s_idle)} ms |")
    print(f"| {calls - 1:,} reports of 1,000 groups before the fit | {rep_s:.1f} s |")
    print(
        f"| POST /batches of {args.size}, while the first fit runs ({len(b_fit)} steps), "
        f"p50 / p95 | {_ms(b_fit)} ms |"
    )
    print(f"| step, while the first fit runs, p50 / p95 | {_ms(s_fit)} ms |")
    print(
        f"| the idle run's POST /batches of {args.size} during the fit, p50 / p95 "
        f"(x idle p50 before) | "
        f"{_ms(b_beside)} ms ({_pct(b_beside, 0.5) / _pct(b_idle, 0.5):.2f} x) |"
    )
    print(
        f"| the idle run's step during the fit, p50 / p95 (x idle p50 before) | "
        f"{_ms(s_beside)} ms ({_pct(s_beside, 0.5) / _pct(s_idle, 0.5):.2f} x) |"
    )
    print(
        f"| the idle run's POST /batches of {args.size} after the fit, p50 / p95 (during the fit "
        f"x this p50) | {_ms(b_after)} ms ({_pct(b_beside, 0.5) / _pct(b_after, 0.5):.2f} x) |"
    )
    print(
        f"| the idle run's step after the fit, p50 / p95 (during the fit x this p50) | "
        f"{_ms(s_after)} ms ({_pct(s_beside, 0.5) / _pct(s_after, 0.5):.2f} x) |"
    )
    print(
        f"| POST /outcomes of 1,000 groups to a third idle run during the fit, p50 / p95 (x idle "
        f"p50 before) | {_ms(out_during)} ms ({_pct(out_during, 0.5) / _pct(out_idle, 0.5):.2f} x) |"
    )
    print(f"| POST /outcomes that started the fit | {1000 * out_fit[0]:.0f} ms |")
    if b_new:
        print(
            f"| POST /batches of {args.size} after the version landed: the first (it loads the "
            f"version) / the next four, p50 | {1000 * b_new[0]:.0f} / "
            f"{1000 * _pct(b_new[1:], 0.5):.0f} ms |"
        )
    done = "stored" if cal else "not stored yet"
    print(
        f"| first fit on {args.fit_groups:,} groups (tracking on), from its trigger: {done} | "
        f"{fit_s:.1f} s (fit_seconds {cal.get('fit_seconds')}, tracking_rows "
        f"{cal.get('tracking_rows')}) |"
    )
    for name, _, mb in rss:
        print(f"| {name} peak RSS | {mb:,.0f} MiB |")
    for name, mb in kid_rss:
        print(f"| a child of the {name} (the neighbour-graph builder) peak RSS | {mb:,.0f} MiB |")
    print("\nper-slice seconds, upload: " + ", ".join(f"{x:.1f}" for x in up_slices))
    print("per-slice seconds, embedding: " + ", ".join(f"{x:.1f}" for x in emb_slices))
    if args.profile and Path(args.profile).exists():
        summarise(args.profile, "server during POST /batches")
    if args.profile_worker and Path(args.profile_worker).exists():
        summarise(args.profile_worker, "the worker during the fit")


if __name__ == "__main__":
    main()
