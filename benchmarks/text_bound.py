"""How low a scenario's zero-variance share could go, given a cold start of known quality.

Run: `.venv/bin/python -m benchmarks.text_bound [--scenarios fast,pool4k] [--rho 0.4 0.5 0.8 0.9]
[--optimism 0 0.1 0.2 0.3 0.4] [--scale 1.0] [--seed 0] [--knows law|own+global|mean]` (every binary
and noisy scenario by default, about 9 minutes; no service needed).

A selector that sees what the service sees, each prompt's text and its groups, is given for
free what no service has: the scenario's whole learning law, that is how far every prompt's
logit has moved since the start (its own training, its neighbours', its topic's, the global
shift). What it lacks is each prompt's starting logit. It starts from the population's
histogram of starting logits and a cold-start predictor of Spearman `rho` against them (the
true starting logit plus Gaussian noise, as in `selection_bound`; text predictors reach
0.35-0.47 on DeepScaleR), and every group a prompt gets adds its likelihood at the prompt's
offset then, on an exact grid. Each step it scores the whole pool by the posterior chance
that a group of G is mixed now, plus an optimism bonus for prompts never served, and serves
the best `batch`, as `informative`'s whole-pool scan does, until the scenario's N informative
groups (`--scale` times it). So it is perfect tracking with a cold start of that quality:
what is left of its zero-variance share is what the cold start costs. `exact` (the true
starting logits) reproduces the oracle, a check of the machinery. `--knows own+global` tells
the selector only the moves of each prompt's own groups and the global shift, at the law's
gains: the gap to `law` is what knowing the transfer between prompts is worth. `--knows mean`
tells it the whole law with every prompt learning at the mean rate, as a shadow world trained
on the same groups (in `hetero` the gap to `law` is what knowing each prompt's learnability is
worth; elsewhere the two agree). These are the best
selectors tried with this information, not a proof that none does better.

Binary and noisy-verifier scenarios only (a partial-credit group has no binomial likelihood).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace

import numpy as np

from benchmarks.dynamics import World, p_all_equal
from benchmarks.scenarios import SCENARIOS, Setup, _mixed, build
from benchmarks.selection_bound import GRID, log_population, noise_for
from benchmarks.simulator import IntArray

TOLD = {
    "law": "the whole learning law",
    "own+global": "own and global moves only",
    "mean": "the law at the mean learnability",
}


@dataclass
class Result:
    zero_var: float
    first_share: float  # groups of prompts served for the first time, share of all groups
    first_zero_var: float  # zero-variance share among those


def run(
    setup: Setup,
    n_target: int,
    prior: str,
    tau: float = 0.0,
    bonus: float = 0.0,
    knows: str = "law",
) -> Result:
    """One run to `n_target` informative groups. `prior`: oracle, exact, or noisy (`tau`).

    `knows`: "law" tells the selector every prompt's whole move; "own+global" only what its
    own groups and the global shift moved it (no neighbour or topic transfer), at the law's gains;
    "mean" the whole law with every prompt's learnability at the mean (`hetero`'s spread unknown).
    """
    sc = setup.scenario
    if sc.rewards.kind == "partial":
        raise SystemExit(f"{sc.name}: partial-credit rewards have no binomial likelihood here")
    world: World = setup.world()
    n, g = setup.n_pool, sc.g
    flip = sc.rewards.flip if sc.rewards.kind == "noisy" else 0.0
    rng = np.random.default_rng(setup.seed + 1)
    z0 = world.z0[:n].copy()
    if prior == "noisy":
        zhat = z0 + rng.normal(0, tau, n)
        logpost = (
            log_population(setup.start[:n])[None, :]
            - 0.5 * ((GRID[None, :] - zhat[:, None]) / tau) ** 2
        )
    else:
        logpost = -0.5 * ((GRID[None, :] - z0[:, None]) / 0.05) ** 2
    pool: IntArray = np.arange(n, dtype=np.int64)
    seen = np.zeros(n, dtype=bool)
    known = np.zeros(n)  # the part of each prompt's move since the start the selector is told
    shadow = (  # "mean": the same world and walk, every prompt learning at the mean rate
        World(setup.start, n, replace(sc.law, spread=0.0), setup.relations, sc.rewards, setup.seed)
        if knows == "mean"
        else None
    )
    served = zero = first = first_zero = informative = 0
    while informative < n_target:
        # as of this step's rollouts
        moved = (
            world.z[:n] - z0 if knows == "law" else known if shadow is None else shadow.z[:n] - z0
        )
        if prior == "oracle":
            score = world.p_mixed(pool, g)
        else:
            w = np.exp(logpost - logpost.max(axis=1, keepdims=True))
            w /= w.sum(axis=1, keepdims=True)
            p = 1.0 / (1.0 + np.exp(-(GRID[None, :] + moved[:, None])))
            pm = 1.0 - p_all_equal(p.ravel(), g, sc.rewards).reshape(p.shape)
            score = (w * pm).sum(axis=1) + bonus * ~seen
        keep = pool[np.lexsort((rng.random(n), -score))[: sc.batch]]
        reported, true = world.rollout(keep, g)
        mixed = _mixed(reported)
        new = ~seen[keep]
        served += len(keep)
        zero += int((~mixed).sum())
        first += int(new.sum())
        first_zero += int((~mixed & new).sum())
        informative += int(mixed.sum())
        if prior != "oracle":
            k = reported.sum(axis=1)
            pg = 1.0 / (1.0 + np.exp(-(GRID[None, :] + moved[keep][:, None])))
            pg = flip + pg * (1.0 - 2.0 * flip)
            logpost[keep] += k[:, None] * np.log(pg + 1e-12) + (g - k)[:, None] * np.log(
                1.0 - pg + 1e-12
            )
        seen[keep] = True
        world.train(keep, true)
        if shadow is not None:
            shadow.train(keep, true)
        if knows == "own+global":
            sd = true.std(axis=1)
            np.add.at(known, keep, sc.law.eta_self * sd)
            known += sc.law.eta_global * float(sd.sum())
    return Result(zero / served, first / served, first_zero / max(first, 1))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--scenarios",
        default=",".join(n for n, s in SCENARIOS.items() if s.rewards.kind != "partial"),
    )
    ap.add_argument("--rho", type=float, nargs="+", default=[0.4, 0.5, 0.8, 0.9])
    ap.add_argument(
        "--optimism",
        type=float,
        nargs="+",
        default=[0.0, 0.1, 0.2, 0.3, 0.4],
        help="bonuses for never-served prompts; each rho column shows the best of them",
    )
    ap.add_argument("--scale", type=float, default=1.0, help="times each scenario's full N")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--knows",
        choices=list(TOLD),
        default="law",
        help="what the selector is told of each prompt's move: all of it, or no transfer",
    )
    args = ap.parse_args()
    names = args.scenarios.split(",")
    cols = ["oracle", "exact"] + [f"rho={r}" for r in args.rho]
    rows: dict[str, list[str]] = {}
    t0 = time.perf_counter()
    for name in names:
        sc = SCENARIOS[name]
        setup = build(sc, args.seed)
        n_target = int(sc.n_full * args.scale)
        cells = [run(setup, n_target, "oracle"), run(setup, n_target, "exact")]
        for rho in args.rho:
            tau = noise_for(rho, setup.start[: setup.n_pool], draws=1)
            tries = {b: run(setup, n_target, "noisy", tau, b, args.knows) for b in args.optimism}
            best = min(tries, key=lambda b: tries[b].zero_var)
            cells.append(tries[best])
            print(
                f"  {name} rho={rho} (noise sd {tau:.2f}): "
                + ", ".join(f"+{b} {100 * r.zero_var:.1f}%" for b, r in tries.items())
                + f"  ({time.perf_counter() - t0:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
        rows[name] = [
            f"{100 * c.zero_var:.1f}% ({100 * c.first_share:.0f}% / {100 * c.first_zero_var:.0f}%)"
            for c in cells
        ]
    print(
        f"\n### Zero-variance share to N informative groups (x{args.scale}), seed {args.seed}: "
        f"a selector told {TOLD[args.knows]}, with a cold start of Spearman rho\n"
    )
    print("| scenario | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, cells_txt in rows.items():
        print(f"| {name} | " + " | ".join(cells_txt) + " |")
    print(
        "\nIn brackets: first serves' share of the groups / their zero-variance share. Each rho "
        f"column shows the best optimism bonus of {', '.join(map(str, args.optimism))}."
    )


if __name__ == "__main__":
    main()
