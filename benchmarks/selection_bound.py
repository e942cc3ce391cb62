"""How low can the zero-variance share go, and what would a selector need to know to get there?

Run: `.venv/bin/python -m benchmarks.selection_bound [--seeds 2] [--pool 4000 13682]
[--oversample 8 32] [--rho 0.46 0.65 0.8] [--optimism 0 0.2 0.4] [--know all|self|global]`
(about 15 minutes with the defaults; no service needed).

The efficacy benchmark's oracle ranks candidates by the simulated policy's true *current* pass
rates. No service can know those; it sees each prompt's text and the groups reported for it.
This benchmark runs a selector that sees the same, plus, for free, parts of what a real
service cannot have:

- **the simulator's learning law** (`--know all`): for every prompt, how far its logit has
  moved since the start (its own training, its neighbours', the global shift). So only each
  prompt's starting logit is unknown, and every group it ever got counts, undiscounted, at
  its offset. `--know self` gives only each prompt's gain from its own training plus the
  global shift (what a service could learn from its own log); `--know global` only the shift;
- **a cold-start predictor of chosen quality**: the true starting logit plus Gaussian noise,
  scaled so its Spearman against the labels is `rho` (text predictors reach 0.46-0.47 on this
  data: `../shared/data/README.md`, issue 5), combined by Bayes' rule with the population's
  label histogram.

Each prompt's posterior over its starting logit lives on a grid; a candidate's score is the
exact posterior probability that a group of G at its current offset is mixed, plus an
optimism bonus for prompts never served (a myopic selector under-probes them; each rho column
shows the best of the `--optimism` bonuses). Selection is `informative`'s scan without the
exploration share: the same epoch-ordered scan of oversample x batch candidates, the best
`batch` kept, after a uniform warm-up. Given the exact starting rates, the selector
reproduces the oracle: a check of the machinery.

These are the best selectors tried with this information, not a proof that none does better.
The selector serves `--warmup` uniform steps first (32: one epoch of a 4,000 pool), as the
efficacy benchmark's runs now do with `warmup_outcomes`. Efficacy's oracle ranks from the
first step and draws its scan order apart, so the two oracle figures differ (5% here at
oversample 32, 7% there).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.stats import spearmanr

from benchmarks.simulator import (
    DATA,
    LearningModel,
    Policy,
    Problems,
    embed,
    load_problems,
    logit,
)

FloatArray = npt.NDArray[np.float64]
GRID = np.linspace(-7.0, 7.0, 57)  # starting logits; labels are clipped to [-5.8, 5.8]


@dataclass(frozen=True)
class Setting:
    pool: int
    oversample: int
    seed: int
    steps: int
    batch: int
    group: int
    warmup: int


def noise_for(rho: float, labels: FloatArray, draws: int = 3) -> float:
    """The sd of logit noise whose predictor has Spearman `rho` against these labels."""
    z = logit(labels)

    def spearman(tau: float) -> float:
        rs = [
            spearmanr(z + np.random.default_rng(r).normal(0, tau, len(z)), labels).statistic
            for r in range(draws)
        ]
        return float(np.mean(rs))

    return min(np.arange(0.25, 15.0, 0.25), key=lambda tau: abs(spearman(tau) - rho))


def log_population(rates: FloatArray | None = None) -> FloatArray:
    """Log histogram of labels' logits on the grid (the data file's by default): the prior."""
    if rates is None:
        rates = np.array([json.loads(line)["pass_rate"] for line in DATA.read_text().splitlines()])
    edges = np.concatenate([[-np.inf], (GRID[1:] + GRID[:-1]) / 2, [np.inf]])
    counts, _ = np.histogram(logit(rates), bins=edges)
    out: FloatArray = np.log(counts + 1.0)
    return out


def run(
    s: Setting,
    problems: tuple[Problems, Problems],
    emb: npt.NDArray[np.float32],
    prior: str,
    tau: float = 0.0,
    know: str = "all",
    bonus: float = 0.0,
) -> float:
    """One simulated run; its zero-variance share after warm-up.

    `prior`: "oracle" ranks by the true current rates; "exact" gives the selector the true
    starting rates; "noisy" a predictor with logit noise `tau`. `know`: the part of the
    learning law the selector is given: "all", "self" (each prompt's gain from its own
    training, plus the global shift: what a service could learn from its own log) or
    "global" (the global shift alone, which the service's drift correction estimates).
    `bonus` is added to the score of prompts never served: optimism that keeps probing them.
    """
    policy = Policy(*problems, emb, LearningModel(), s.seed)
    rng = np.random.default_rng(s.seed + 1)
    z0 = policy.logit[: s.pool].copy()
    if prior == "noisy":
        zhat = z0 + rng.normal(0, tau, s.pool)
        logpost = POPULATION[None, :] - 0.5 * ((GRID[None, :] - zhat[:, None]) / tau) ** 2
    else:
        logpost = -0.5 * ((GRID[None, :] - z0[:, None]) / 0.05) ** 2
    g, scan = s.group, s.oversample * s.batch
    own = np.zeros(s.pool)  # logit gained by each prompt's own training
    unseen = np.ones(s.pool, dtype=bool)

    def known(i: npt.NDArray[np.int64]) -> FloatArray:
        """How far these prompts' logits moved since the start, as far as the selector knows."""
        if know == "all":
            moved: FloatArray = policy.logit[i] - z0[i]
        elif know == "self":
            moved = own[i]
        else:
            moved = np.zeros(len(i))
        return moved + policy.shift

    order = rng.permutation(s.pool)
    cursor = groups = zero = 0
    for step in range(s.steps):
        width = s.batch if step < s.warmup else scan  # warm-up serves the next batch, as uniform
        if cursor + width > len(order):
            order = np.concatenate([order[cursor:], rng.permutation(s.pool)])
            cursor = 0
        cands = order[cursor : cursor + width]
        cands = cands[np.sort(np.unique(cands, return_index=True)[1])]  # an epoch wrap repeats
        cursor += width
        offset = known(cands)
        if step < s.warmup:
            keep = cands[: s.batch]
        elif prior == "oracle":
            p = policy.pass_rate(cands)
            keep = cands[np.argsort(-(1 - p**g - (1 - p) ** g), kind="stable")[: s.batch]]
        else:
            lp = logpost[cands]
            w = np.exp(lp - lp.max(axis=1, keepdims=True))
            w /= w.sum(axis=1, keepdims=True)
            pg = 1 / (1 + np.exp(-(GRID[None, :] + offset[:, None])))
            mixed = (w * (1 - pg**g - (1 - pg) ** g)).sum(axis=1) + bonus * unseen[cands]
            keep = cands[np.argsort(-mixed, kind="stable")[: s.batch]]
        served = []
        for i in keep:
            rewards = policy.rollout(int(i), g)
            k = int(sum(rewards))
            if step >= s.warmup:
                groups += 1
                zero += k in (0, g)
            pg1 = 1 / (1 + np.exp(-(GRID + known(np.array([i]))[0])))
            logpost[i] += k * np.log(pg1 + 1e-12) + (g - k) * np.log(1 - pg1 + 1e-12)
            served.append((int(i), rewards))
            own[i] += policy.model.eta_self * float(np.std(rewards))
            unseen[i] = False
        policy.train(served)
    return zero / max(groups, 1)


POPULATION = log_population()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--pool", type=int, nargs="+", default=[4000, 13682])
    ap.add_argument("--oversample", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--rho", type=float, nargs="+", default=[0.46, 0.65, 0.8])
    ap.add_argument("--heldout", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=160)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=32, help="uniform steps before selection")
    ap.add_argument(
        "--optimism",
        type=float,
        nargs="+",
        default=[0.0, 0.2, 0.4],
        help="bonuses for never-served prompts; each rho column shows the best of them",
    )
    ap.add_argument(
        "--know",
        choices=["all", "self", "global"],
        default="all",
        help="the part of the learning law the selector is given (see run())",
    )
    args = ap.parse_args()
    labels = load_problems(4000, args.heldout, 0)[0].pass_rate
    taus = {rho: noise_for(rho, labels) for rho in args.rho}
    cols = ["oracle", "exact"] + [f"rho={rho}" for rho in args.rho]  # best bonus per rho
    results: dict[tuple[int, int], dict[str, list[float]]] = {}
    t0 = time.perf_counter()
    for pool, seed in itertools.product(args.pool, range(args.seeds)):
        problems = load_problems(pool, args.heldout, seed)
        emb = embed(problems[0].texts + problems[1].texts)
        for over in args.oversample:
            s = Setting(pool, over, seed, args.steps, args.batch, args.group, args.warmup)
            cell = results.setdefault((pool, over), {"oracle": [], "exact": []})
            cell["oracle"].append(run(s, problems, emb, "oracle"))
            if args.know == "all":  # the machinery check; a point prior can't absorb the rest
                cell["exact"].append(run(s, problems, emb, "exact"))
            for rho, bonus in itertools.product(args.rho, args.optimism):
                zv = run(s, problems, emb, "noisy", taus[rho], args.know, bonus)
                cell.setdefault(f"rho={rho}+{bonus}", []).append(zv)
            print(
                f"  pool {pool} oversample {over} seed {seed}: "
                + ", ".join(f"{c} {100 * v[-1]:.1f}%" for c, v in cell.items() if v)
                + f"  ({time.perf_counter() - t0:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    print(
        f"\n### Zero-variance share after warm-up: G={args.group}, batch {args.batch}, "
        f"{args.steps} steps ({args.warmup} uniform), {args.seeds} seeds (mean ± sd)\n"
    )
    print(
        f"Selector knows the simulator's learning law ({args.know}); columns give it the true "
        "current rates "
        "(oracle), the true starting rates (exact), or a cold-start predictor of Spearman rho "
        f"(logit noise sd {', '.join(f'{taus[r]:.2f}' for r in args.rho)}).\n"
    )
    print("| pool | oversample | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for (pool, over), cell in results.items():
        row = [_fmt(cell["oracle"]), _fmt(cell["exact"]) if cell["exact"] else "-"]
        for rho in args.rho:
            runs = {b: cell[f"rho={rho}+{b}"] for b in args.optimism}
            best = min(runs, key=lambda b: statistics.mean(runs[b]))
            row.append(_fmt(runs[best]) + (f" (+{best})" if len(runs) > 1 else ""))
        print(f"| {pool} | {over} | " + " | ".join(row) + " |")
    if len(args.optimism) > 1:
        print(
            "\n(+b): the optimism bonus for never-served prompts that did best, of "
            f"{', '.join(map(str, args.optimism))}."
        )


def _fmt(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{100 * statistics.mean(xs):.1f}% ± {100 * sd:.1f}"


if __name__ == "__main__":
    main()
