"""A second model's run started from a first model's per-prompt history (`history_from`).

Run: `python -m benchmarks.warm_history [--pool 6000] [--source-steps 60] [--steps 100]
[--batch 128] [--g 8] [--seed 0] [--backend embedded|postgres] [--json PATH]` (about 17
minutes on 2 busy cores with the defaults).

One `depo serve`, one dataset: a pool of the labelled DeepScaleR prompts
(`../shared/data/deepscaler_passrate_dev.jsonl`, as benchmarks/scenarios.py draws it, with its
`embed` learning law). Run 1 trains model A, which starts at the labelled pass rates, for
`--source-steps` steps of `informative`. Then a second model B trains for `--steps` steps,
started either cold or with `history_from` run 1 (and, in one arm, `init_from` too). B is:

- similar: B's starting logit is A's starting logit - 0.5 + N(0, 1) per prompt (a retrained
  model: a little weaker, the same prompts mostly hard or easy; Spearman 0.96 with A's start on
  the default pool, most of it from the many prompts both never or always solve);
- different: A's starting rates permuted across prompts (the same spread, no relation).

Per arm: the zero-variance share of served groups and the rollouts they wasted over steps
1-50 and after 50, rollouts to N informative groups, and the learned weight of run 1's counts.
Each due fit is waited out between steps, as in the scenario benchmark.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from depo_client import DepoClient
from scipy.stats import spearmanr

from benchmarks._server import serve
from benchmarks.dynamics import World
from benchmarks.efficacy import await_fit
from benchmarks.scenarios import EMBED, Scenario, Setup, build, upload
from benchmarks.simulator import FloatArray, logit

EARLY = 50


@dataclass
class Trace:
    """Per step: groups served, zero-variance groups, and the weight of the source's counts."""

    served: list[int] = field(default_factory=list)
    zero_var: list[int] = field(default_factory=list)
    weight: list[float | None] = field(default_factory=list)
    strength: list[float | None] = field(default_factory=list)
    wall_s: float = 0.0

    def zero_share(self, lo: int, hi: int) -> float:
        served = sum(self.served[lo:hi])
        return sum(self.zero_var[lo:hi]) / served if served else float("nan")

    def to_informative(self, n: int, g: int) -> float:
        """Rollouts until n informative groups, linear within a step (NaN if never reached)."""
        informative = np.concatenate([[0], np.cumsum(np.subtract(self.served, self.zero_var))])
        rollouts = np.concatenate([[0], np.cumsum(self.served) * g])
        hit = np.flatnonzero(informative >= n)
        if not len(hit):
            return float("nan")
        i = int(hit[0])
        x0, x1, y0, y1 = rollouts[i - 1], rollouts[i], informative[i - 1], informative[i]
        return float(x0 + (x1 - x0) * (n - y0) / (y1 - y0))


def run(
    c: DepoClient,
    dataset: str,
    setup: Setup,
    start: FloatArray,
    steps: int,
    batch: int,
    g: int,
    name: str,
    **sources: str,
) -> Trace:
    """`steps` steps of informative selection on a world starting at `start`."""
    sc = setup.scenario
    world = World(start, setup.n_pool, sc.law, setup.relations, sc.rewards, setup.seed)
    index = {pid: i for i, pid in enumerate(setup.ids[: setup.n_pool])}
    c.create_run(
        name,
        dataset,
        g,
        init_from=sources.get("init_from"),
        history_from=sources.get("history_from"),
    )
    if sources.get("init_from"):  # its version 1, from the source's predictor, lands first
        deadline = time.perf_counter() + 60
        while c.predictor(name).version is None and time.perf_counter() < deadline:
            time.sleep(0.05)
    tr = Trace()
    t0 = time.perf_counter()
    for step in range(steps):
        b = c.next_batch(name, step, batch)
        idx = np.array([index[p.id] for p in b.prompts], dtype=np.int64)
        reported, true = world.rollout(idx, g)
        mixed = (reported != reported[:, :1]).any(axis=1)
        results = [
            {"prompt_id": p.id, "rewards": reported[j].tolist()} for j, p in enumerate(b.prompts)
        ]
        c.report(name, step, results, batch_id=b.batch_id)
        await_fit(c, name)
        world.train(idx, true)
        tr.served.append(len(idx))
        tr.zero_var.append(int((~mixed).sum()))
        hist = c.get_run(name).history
        tr.weight.append(hist.weight if hist is not None else None)
        tr.strength.append(hist.strength if hist is not None else None)
    tr.wall_s = time.perf_counter() - t0
    return tr


def second_models(setup: Setup, seed: int) -> dict[str, FloatArray]:
    """Model B's starting pass rates: similar to A's, or unrelated to them."""
    rng = np.random.default_rng(seed + 500)
    a = setup.start
    z = logit(a) - 0.5 + rng.normal(0.0, 1.0, len(a))
    similar: FloatArray = 1.0 / (1.0 + np.exp(-z))
    different: FloatArray = a.copy()
    different[: setup.n_pool] = rng.permutation(a[: setup.n_pool])
    return {"similar": similar, "different": different}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pool", type=int, default=6000)
    ap.add_argument("--source-steps", type=int, default=60)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--g", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", default="2000,5000", help="informative-group counts to time")
    ap.add_argument("--backend", choices=["embedded", "postgres"], default="embedded")
    ap.add_argument("--json", default=None, help="write the per-step traces here")
    args = ap.parse_args()
    ns = [int(x) for x in args.n.split(",") if x]
    setup = build(Scenario("warm", EMBED, pool=args.pool, heldout=200), args.seed)
    models = second_models(setup, args.seed)
    pool = slice(0, setup.n_pool)
    t_all = time.perf_counter()
    rows: list[tuple[str, str, Trace]] = []
    with (
        serve(args.backend, env={"DEPO_REFIT_MIN_SECONDS": "0"}) as url,
        DepoClient(url, timeout=120) as c,
    ):
        dataset = upload(c, setup)
        tag = uuid.uuid4().hex[:6]
        source = f"a-{tag}"
        src = run(c, dataset, setup, setup.start, args.source_steps, args.batch, args.g, source)
        print(
            f"run 1 (model A): {args.source_steps} steps, zero-variance "
            f"{src.zero_share(0, args.source_steps):.1%} ({src.wall_s:.0f} s)",
            file=sys.stderr,
        )
        arms: list[tuple[str, dict[str, str]]] = [
            ("cold", {}),
            ("history_from run 1", {"history_from": source}),
        ]
        for model, start in models.items():
            rho = spearmanr(setup.start[pool], start[pool]).statistic
            print(f"model B {model}: Spearman {rho:.2f} with A's start", file=sys.stderr)
            extra = [("history_from + init_from", {"history_from": source, "init_from": source})]
            for arm, sources in arms + (extra if model == "similar" else []):
                name = f"b-{model}-{len(rows)}-{tag}"
                tr = run(c, dataset, setup, start, args.steps, args.batch, args.g, name, **sources)
                rows.append((model, arm, tr))
                print(f"  {model} / {arm}: {tr.wall_s:.0f} s", file=sys.stderr)
    report(rows, args, ns, time.perf_counter() - t_all)
    if args.json:
        body = {"args": vars(args), "rows": [[m, a, asdict(t)] for m, a, t in rows]}
        Path(args.json).write_text(json.dumps(body))


def report(
    rows: list[tuple[str, str, Trace]], args: argparse.Namespace, ns: list[int], wall: float
) -> None:
    g, steps = args.g, args.steps
    print(
        f"\n### warm_history (pool {args.pool}, batch {args.batch}, G {g}, run 1 {args.source_steps}"
        f" steps, run 2 {steps} steps, seed {args.seed}, {args.backend})\n"
    )
    head = (
        "| model B | start | zero-variance, steps 1-50 | rollouts wasted, 1-50 "
        f"| zero-variance, 51-{steps} | rollouts wasted, 51-{steps} | "
        + " | ".join(f"rollouts to {n:,} informative" for n in ns)
        + " | weight of one group at step 3 / 10 / 50 / end | strength at end |"
    )
    print(head)
    print("|" + "---|" * (8 + len(ns)))
    for model, arm, tr in rows:
        wasted = [g * sum(tr.zero_var[lo:hi]) for lo, hi in ((0, EARLY), (EARLY, steps))]
        reach = [tr.to_informative(n, g) for n in ns]
        to_n = " | ".join(f"{r / 1000:.1f}k" if r == r else "-" for r in reach)
        ws = [tr.weight[i] for i in (2, 9, EARLY - 1, -1) if -len(tr.weight) <= i < len(tr.weight)]
        wcell = " / ".join("-" if w is None else f"{w:.2f}" for w in ws)
        print(
            f"| {model} | {arm} | {tr.zero_share(0, EARLY):.1%} | {wasted[0]:,} "
            f"| {tr.zero_share(EARLY, steps):.1%} | {wasted[1]:,} | {to_n} | {wcell} "
            f"| {'-' if not tr.strength or tr.strength[-1] is None else f'{tr.strength[-1]:.3g}'} |"
        )
    print(f"\ntotal wall time {wall:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
