"""Where `informative`'s zero-variance groups come from: the estimates, or the scan they rank.

Run: `.venv/bin/python -m benchmarks.selection_probe [--pool 4000] [--oversample 8]
[--informative '{...}']`.

It drives one `informative` run through a real service, exactly as `benchmarks.efficacy` does
(same simulated policy, seed 0, fits waited out), and every `--every` steps asks `POST /predict`
for the whole pool. Against the simulated policy's true current pass rates it prints, per probed
step, the expected zero-variance share (P(all G equal) at the true rate, free of Bernoulli noise):
- of the batch the service served (it ranks one scanned window of oversample x batch prompts);
- of the best `batch` prompts of the whole pool by the service's own p_informative, and by the
  true rates (no estimator can beat that);
- of the best 1/oversample of the pool, by each: the share a scan can serve per pass over the
  pool, so the selectivity that serving `batch` of every oversample x batch scanned allows;
and how well p_informative ranks the whole pool (Spearman against the true P(mixed)).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from depo_client import DepoClient
from scipy.stats import spearmanr

from benchmarks._server import serve
from benchmarks.efficacy import INFORMATIVE, Method, Sim, run_method, upload
from benchmarks.simulator import LearningModel, Policy, embed, load_problems


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pool", type=int, default=4000)
    ap.add_argument("--steps", type=int, default=160)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--every", type=int, default=16, help="probe the whole pool this often")
    ap.add_argument("--oversample", type=float, default=INFORMATIVE["oversample"])
    ap.add_argument("--informative", default="{}", help="JSON merged into the run's selection")
    args = ap.parse_args()
    g, batch = args.group, args.batch
    selection = {**INFORMATIVE, "oversample": args.oversample, **json.loads(args.informative)}
    pool, heldout = load_problems(args.pool, 1000, 0)
    print(
        f"\n### Selection probe: `informative`, pool {args.pool}, batch {batch}, G={g}, "
        f"selection {json.dumps(selection)}\n"
    )
    print(
        f"| step | served | best {batch} by p_informative | best {batch} by true rate "
        f"| best 1/{args.oversample:g} by p_informative | best 1/{args.oversample:g} by true rate "
        "| Spearman, all | Spearman, seen | pool mean |\n|---|---|---|---|---|---|---|---|---|"
    )
    served: list[float] = []

    def zero_var(p: np.ndarray) -> np.ndarray:
        out: np.ndarray = p**g + (1 - p) ** g
        return out

    def on_served(run: str, step: int, idx: list[int], policy: Policy) -> None:
        true = zero_var(policy.pass_rate(np.arange(args.pool)))
        served.append(float(true[idx].mean()))
        if step % args.every != args.every // 2:
            return
        items = c.predict(run, prompt_ids=pool.ids).items
        est = np.array([x.p_informative for x in items])
        seen = np.array([x.observations > 0 for x in items])
        by_est, by_true = true[np.argsort(-est, kind="stable")], np.sort(true)
        share = max(batch, round(args.pool / args.oversample))
        rho_all = spearmanr(est, -true).statistic
        rho_seen = spearmanr(est[seen], -true[seen]).statistic if seen.sum() > 2 else np.nan
        print(
            f"| {step} | {served[-1]:.1%} | {by_est[:batch].mean():.1%} "
            f"| {by_true[:batch].mean():.1%} | {by_est[:share].mean():.1%} "
            f"| {by_true[:share].mean():.1%} | {rho_all:.3f} "
            f"| {rho_seen:.3f} | {true.mean():.1%} |",
            flush=True,
        )

    with (
        serve("embedded", env={"DEPO_REFIT_MIN_SECONDS": "0"}) as url,
        DepoClient(url, timeout=120) as c,
    ):
        dataset = upload(c, pool, 0, None)
        sim = Sim(
            pool,
            heldout,
            embed(pool.texts + heldout.texts),
            0,
            args.steps * batch * g,
            batch,
            g,
            -(-args.pool // batch),
            LearningModel(),
            sync_fits=True,
        )
        run_method(c, Method("informative", "informative", selection), dataset, sim, on_served)
    warm = sim.warmup_steps
    print(
        f"\nExpected zero-variance share of served batches after step {warm} (one epoch): "
        f"{np.mean(served[warm:]):.1%}"
    )


if __name__ == "__main__":
    main()
