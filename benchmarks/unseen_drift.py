"""What tells which never-served prompts are mixed now: where they started, or training nearby.

Run: `.venv/bin/python -m benchmarks.unseen_drift [--scenarios fast,embed,pool4k] [--steps 80]`.

Each scenario's world (benchmarks/scenarios.py, seed 0) is trained for `--steps` oracle steps
(the batch's likeliest mixed groups by true pass rate). Each prompt accumulates the neighbour
exposure the scenario's law moves it by: for every trained group of a prompt that has it among
its nearest neighbours, cosine times the group's reward sd. Then, among the prompts never
served, the Spearman correlation of their current true P(mixed) with their starting P(mixed)
(what text could tell at best) and with that exposure (what shifting unseen prompts by
tracking's neighbour gain would add). Needs a law with neighbour transfer.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import spearmanr

from benchmarks.dynamics import p_all_equal
from benchmarks.scenarios import SCENARIOS, build


def measure(name: str, steps: int) -> tuple[int, float, float, float]:
    """(never-served prompts, rho with the start, rho with the exposure, mean |logit moved|)."""
    sc = SCENARIOS[name]
    setup = build(sc, 0)
    world = setup.world()
    nb, weight = setup.relations.nb, setup.relations.nb_weight
    if nb is None or weight is None:
        raise SystemExit(f"{name}: its law has no neighbour transfer")
    rng = np.random.default_rng(0)
    pool = np.arange(setup.n_pool, dtype=np.int64)
    seen = np.zeros(setup.n_pool, dtype=bool)
    exposure = np.zeros(len(world.z))
    for _ in range(steps):
        score = world.p_mixed(pool, sc.g)
        keep = pool[np.lexsort((rng.random(len(pool)), -score))[: sc.batch]]
        _, true = world.rollout(keep, sc.g)
        sd = true.std(axis=1)
        np.add.at(exposure, nb[keep].ravel(), (sd[:, None] * weight[keep]).ravel())
        seen[keep] = True
        world.train(keep, true)
    unseen = np.flatnonzero(~seen)
    now = world.p_mixed(unseen, sc.g)
    start = 1.0 - p_all_equal(1.0 / (1.0 + np.exp(-world.z0[unseen])), sc.g, world.rewards)
    moved = float(np.abs(world.z[unseen] - world.z0[unseen]).mean())
    rho_start = float(spearmanr(now, start)[0])
    rho_exposure = float(spearmanr(now, exposure[unseen])[0])
    return len(unseen), rho_start, rho_exposure, moved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scenarios", default="fast,embed,pool4k")
    ap.add_argument("--steps", type=int, default=80)
    args = ap.parse_args()
    print(f"after {args.steps} oracle steps, among the prompts never served:\n")
    print(
        "| scenario | never served | rho(P(mixed) now, at start) | rho(now, neighbour exposure)"
        " | mean logit moved |"
    )
    print("|---|---|---|---|---|")
    for name in args.scenarios.split(","):
        n, rho_start, rho_exposure, moved = measure(name, args.steps)
        print(
            f"| {name} | {n:,} | {rho_start:.2f} | {rho_exposure:.2f} | {moved:.2f} |", flush=True
        )


if __name__ == "__main__":
    main()
