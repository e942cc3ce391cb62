"""Neighbours for tracking past the exact limit: recall against exact rows, and time.

Run: `python -m benchmarks.neighbours [--n 30000] [--k 10]`, or `--n 1000000 --sample 400` for a
pool too large for every exact row (then the service's rows only, on sampled rows). Takes real
prompts from ../shared/data (DeepScaleR, MATH, GSM8K, LiveCodeBench; past their 24,853 rows,
DeepScaleR problems with their numbers changed, as templated variants in a real pool would be),
embeds them with `ngrams`, works out the exact k nearest by cosine, and for each method the time
and recall@k: the share of a row's k found neighbours whose exact cosine reaches its k-th exact
neighbour's (ties count as found). Methods: the service's rows past 30,000 prompts (candidates
sharing a rare column, re-ranked by exact cosine), pynndescent's NN-descent on the sparse rows
(the service's whole graph past 30,000 until 2026-12-02), and faiss's inverted-file index on a
dense sketch of the rows (a sparse random projection), its candidates re-ranked by exact cosine.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from benchmarks._pynndescent import nearest, unit_rows
from service.estimator.embedders import NgramsEmbedder
from service.estimator.exposure import Graph

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FILES = {
    "deepscaler_passrate_dev.jsonl": "problem",
    "math_levels.jsonl": "problem",
    "gsm8k_gpt3.jsonl": "question",
    "livecodebench_o1.jsonl": "question",
}


def texts(n: int, data: Path = DATA) -> list[str]:
    """n real prompt texts; variants of DeepScaleR's with other numbers past the real ones."""
    out: list[str] = []
    for name, field in FILES.items():
        with open(data / name) as f:
            out += [json.loads(line)[field] for line in f]
    base = out[:]
    rng = np.random.default_rng(0)
    while len(out) < n:
        t = base[len(out) % 14_682]
        out.append(re.sub(r"\d+", lambda m: str(int(rng.integers(2, 999))), t))
    return out[:n]


def pair_cosines(unit: Any, rows: I64, cands: I64, chunk: int = 500) -> F32:
    """Exact cosine of each row with each of its candidates, a chunk of rows at a time."""
    out = np.zeros(cands.shape, np.float32)
    c = cands.shape[1]
    for lo in range(0, len(rows), chunk):
        r, cc = rows[lo : lo + chunk], cands[lo : lo + chunk]
        dots = unit[np.repeat(r, c)].multiply(unit[cc.ravel()]).sum(axis=1)
        out[lo : lo + chunk] = np.asarray(dots).reshape(len(r), c)
    return out


def recall(found: I64, unit: Any, exact_sim: F32) -> float:
    """Share of found neighbours at least as close as the k-th exact one (tie-aware)."""
    rows = np.arange(len(found), dtype=np.int64)
    got = pair_cosines(unit, rows, found)
    ok = (got >= exact_sim.min(axis=1, keepdims=True) - 1e-5) & (found != rows[:, None])
    return float(ok.mean())


def faiss_graph(unit: Any, k: int, dim: int, cands: int, nprobe: int) -> I64:
    """faiss IVF-Flat on a sparse random projection, candidates re-ranked exactly."""
    import faiss

    n, width = unit.shape
    rng = np.random.default_rng(0)
    hashes = 4
    proj = sp.csr_matrix(
        (
            rng.choice([-0.5, 0.5], size=width * hashes).astype(np.float32),
            (np.repeat(np.arange(width), hashes), rng.integers(0, dim, width * hashes)),
        ),
        shape=(width, dim),
    )
    s = np.asarray((unit @ proj).toarray(), np.float32)
    s /= np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-12)
    nlist = int(4 * np.sqrt(n))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(s)
    index.add(s)
    index.nprobe = nprobe
    _, c = index.search(s, cands + 1)
    c = np.where(c < 0, 0, c).astype(np.int64)
    rows = np.arange(n, dtype=np.int64)
    scores = np.where(c == rows[:, None], -np.inf, pair_cosines(unit, rows, c))
    top = np.argsort(-scores, axis=1)[:, :k]
    return np.take_along_axis(c, top, axis=1)


def sampled(n: int, k: int, size: int) -> None:
    """A pool too large for every exact row: the service's rows against exact, sampled rows."""
    unit = unit_rows(NgramsEmbedder().embed(texts(n)))
    rows = np.sort(np.random.default_rng(0).choice(n, size, replace=False))
    t0 = time.perf_counter()
    exact = Graph.of(unit, k)
    exact.fill(rows)
    exact_ms = 1000 * (time.perf_counter() - t0) / size
    t0 = time.perf_counter()
    g = Graph.pruned_of(unit, k)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    g.fill(rows)
    pruned_ms = 1000 * (time.perf_counter() - t0) / size
    got = pair_cosines(unit, rows, g.nb[rows])
    kth = exact.sim[rows].min(axis=1, keepdims=True)
    hit = float(((got >= kth - 1e-5) & (g.nb[rows] != rows[:, None])).mean())
    print(f"\n### neighbours of {size} sampled rows in a pool of {n:,} (`ngrams`, k {k})\n")
    print("| method | per row, ms | recall@k against exact |")
    print("|---|---|---|")
    print(f"| exact (scipy sparse products) | {exact_ms:.1f} | 1.000 |")
    print(
        f"| rare-column candidates re-ranked exactly (the service's; index built in "
        f"{build:.1f} s) | {pruned_ms:.1f} | {hit:.3f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=30_000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument(
        "--sample", type=int, default=0, help="exact rows for this many sampled prompts only"
    )
    args = ap.parse_args()
    if args.sample:
        sampled(args.n, args.k, args.sample)
        return
    unit = unit_rows(NgramsEmbedder().embed(texts(args.n)))
    nearest(unit[:2_000], args.k)  # numba's compilation (or its cache) left out of the timing
    t0 = time.perf_counter()
    g = Graph.of(unit, args.k)
    g.fill(np.arange(args.n))
    exact_s = time.perf_counter() - t0
    sim = g.sim.astype(np.float32)
    table = [("exact (scipy sparse products, the graph up to 30,000)", f"{exact_s:.0f}", "1.000")]
    print(table[-1], flush=True)
    t0 = time.perf_counter()  # the service's rows past 30,000 prompts, all of them here
    pruned = Graph.pruned_of(unit, args.k)
    pruned.fill(np.arange(args.n))
    b = time.perf_counter() - t0
    r = recall(pruned.nb, unit, sim)
    table.append(
        ("rare-column candidates re-ranked exactly (the service's)", f"{b:.0f}", f"{r:.3f}")
    )
    print(table[-1], flush=True)
    for extra in (1, 6):
        import benchmarks._pynndescent as nbmod

        nbmod.EXTRA = extra
        t0 = time.perf_counter()
        nb, _ = nearest(unit, args.k)
        b = time.perf_counter() - t0
        r = recall(nb, unit, sim)
        table.append((f"pynndescent, {args.k + extra} kept per row", f"{b:.0f}", f"{r:.3f}"))
        print(table[-1], flush=True)
    for dim, cands, nprobe in ((128, 64, 24), (512, 200, 32)):
        t0 = time.perf_counter()
        nb = faiss_graph(unit, args.k, dim, cands, nprobe)
        b = time.perf_counter() - t0
        table.append(
            (
                f"faiss IVF-Flat on a {dim}-wide sketch, nprobe {nprobe}, "
                f"{cands} candidates re-ranked",
                f"{b:.0f}",
                f"{recall(nb, unit, sim):.3f}",
            )
        )
        print(table[-1], flush=True)
    print(f"\n### neighbours for tracking: {args.n:,} prompts (`ngrams`), k = {args.k}\n")
    print("| method | every row's neighbours, s | recall@k against exact |")
    print("|---|---|---|")
    for row in table:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
