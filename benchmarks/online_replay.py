"""Online replay: outcomes arrive step by step through the real API; how good is the estimate?

Run: `.venv/bin/python -m benchmarks.online_replay [--steps 120] [--drift 0.01]`.
A uniform run over a sample of `deepscaler_passrate_dev` reports Binomial(G=8, p) groups each
step, where p is the labelled pass rate, optionally rising by `drift` logits per step (a
policy that learns). At checkpoints it asks the service for estimates (`POST /predict`) and
compares them with the current true pass rate: on prompts already seen, against the last raw
observation k/n and an undiscounted Beta posterior; on held-out prompts never uploaded (sent
as raw texts), the predictor alone.

Spearman against labels that tie (a fifth are exactly 0) favours k/n, whose own ties line up
with them. Two extra columns show what the estimate's order is worth inside k/n's ties: k/n
with its ties broken by the estimate (the best any estimate that keeps k/n's order can do),
and the estimate's Spearman inside each tie. After the table, the same for a tie-break by the
true rate plus noise: how good an order inside the ties would have to be to beat k/n.
"""

from __future__ import annotations

import argparse
import sys
import time

import httpx
import numpy as np
from scipy.stats import rankdata, spearmanr

from benchmarks._server import serve
from benchmarks.simulator import load_problems


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pool", type=int, default=6000)
    ap.add_argument("--heldout", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--drift", type=float, default=0.0, help="logit gain of every prompt per step")
    ap.add_argument("--every", type=int, default=20, help="steps between checkpoints")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    pool, held = load_problems(args.pool, args.heldout, args.seed)
    z0 = np.log(np.clip(pool.pass_rate, 0.003, 0.997) / (1 - np.clip(pool.pass_rate, 0.003, 0.997)))
    zh = np.log(np.clip(held.pass_rate, 0.003, 0.997) / (1 - np.clip(held.pass_rate, 0.003, 0.997)))
    index = {pid: i for i, pid in enumerate(pool.ids)}
    rng = np.random.default_rng(args.seed)
    k_sum = np.zeros(len(pool.ids))
    n_sum = np.zeros(len(pool.ids))
    last = np.full(len(pool.ids), np.nan)
    rows = []
    first: tuple[np.ndarray, np.ndarray, float] | None = None  # (last k/n, truth, groups)
    with (
        serve("embedded", env={"DEPO_REFIT_MIN_SECONDS": "0"}) as url,
        httpx.Client(base_url=url, timeout=120) as c,
    ):
        c.post("/v1/datasets", json={"name": "replay"}).raise_for_status()
        prompts = [{"id": i, "text": t} for i, t in zip(pool.ids, pool.texts, strict=True)]
        for s in range(0, len(prompts), 5000):
            c.post(
                "/v1/datasets/replay/prompts", json={"prompts": prompts[s : s + 5000]}
            ).raise_for_status()
        while c.get("/v1/datasets/replay").json()["embedded"] < len(prompts):
            pass
        sel = {"seed": args.seed, "fit_min_outcomes": 256, "refit_every": 1000}
        c.post(
            "/v1/runs",
            json={
                "name": "r",
                "dataset": "replay",
                "group_size": args.group,
                "strategy": "uniform",
                "selection": sel,
            },
        ).raise_for_status()
        for step in range(args.steps):
            shift = args.drift * step
            b = c.post("/v1/runs/r/batches", json={"step": step, "size": args.batch}).json()
            results = []
            for p in b["prompts"]:
                i = index[p["id"]]
                prob = 1 / (1 + np.exp(-(z0[i] + shift)))
                k = int(rng.binomial(args.group, prob))
                k_sum[i] += k
                n_sum[i] += args.group
                last[i] = k / args.group
                results.append(
                    {"prompt_id": p["id"], "rewards": [1.0] * k + [0.0] * (args.group - k)}
                )
            c.post(
                "/v1/runs/r/outcomes",
                json={"step": step, "batch_id": b["batch_id"], "results": results},
            ).raise_for_status()
            if (step + 1) % args.every:
                continue
            # let the background refit catch up, as it would between real training steps
            deadline = time.monotonic() + 60
            while c.get("/v1/runs/r/predictor").json()["outcomes_since"] >= 1000:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            cal = c.get("/v1/runs/r/predictor").json()["calibration"]
            seen = np.flatnonzero(n_sum > 0)
            pick = rng.choice(seen, size=min(1500, len(seen)), replace=False)
            est = c.post(
                "/v1/runs/r/predict", json={"prompt_ids": [pool.ids[i] for i in pick]}
            ).json()
            truth = 1 / (1 + np.exp(-(z0[pick] + shift)))
            e = np.array([x["pass_rate"] for x in est["items"]])
            undiscounted = (1 + k_sum[pick]) / (2 + n_sum[pick])
            unseen = c.post("/v1/runs/r/predict", json={"texts": held.texts}).json()
            u = np.array([x["pass_rate"] for x in unseen["items"]])
            ut = 1 / (1 + np.exp(-(zh + shift)))
            # a fifth of the labels are exactly 0: tied in the truth, and k/n = 0 ties them too
            solved = pool.pass_rate[pick] > 0
            # any estimate that orders prompts within a tie of k/n pays for it in Spearman
            # against tied labels; the fair yardstick for such an estimate is k/n with its
            # ties broken at random (own generator: the replay's draws stay as they were)
            jitter = np.random.default_rng(step).random(len(pick)) * 1e-6
            if first is None:
                first = (last[pick].copy(), truth, float(n_sum[pick].mean() / args.group))
            rows.append(
                (
                    step + 1,
                    f"v{est['model_version']} ({cal['prior_strength']:.2f})"
                    if cal.get("prior_strength")
                    else f"v{est['model_version']}",
                    len(seen),
                    spearmanr(e, truth).statistic,
                    spearmanr(last[pick], truth).statistic,
                    spearmanr(last[pick] + jitter, truth).statistic,
                    spearmanr(undiscounted, truth).statistic,
                    spearmanr(broken_by(last[pick], e), truth).statistic,
                    within_ties(last[pick], e, truth),
                    np.abs(e - truth).mean(),
                    np.abs(last[pick] - truth).mean(),
                    np.abs(undiscounted - truth).mean(),
                    spearmanr(e[solved], truth[solved]).statistic,
                    spearmanr(last[pick][solved], truth[solved]).statistic,
                    spearmanr(u, ut).statistic if u.std() > 0 else float("nan"),
                    np.abs(u - ut).mean(),
                )
            )
            print(
                f"  step {step + 1}: predictor v{est['model_version']}, {len(seen)} prompts seen",
                file=sys.stderr,
            )
    print(
        f"\n### Online replay: pool {args.pool}, held-out {args.heldout} (raw texts), G={args.group}, batch {args.batch}, drift {args.drift} logit/step\n"
    )
    print(
        "| step | predictor (prior strength) | prompts seen | Spearman seen: estimate / last k/n / "
        "k/n, ties broken at random / undiscounted | Spearman seen: k/n, ties broken by the "
        "estimate / estimate inside ties | MAE seen: estimate / last k/n / undiscounted | Spearman seen, label > 0: estimate / "
        "last k/n | held-out Spearman | held-out MAE |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.3f} / {r[4]:.3f} / {r[5]:.3f} / {r[6]:.3f} | "
            f"{r[7]:.3f} / {r[8]:.3f} | {r[9]:.3f} / {r[10]:.3f} / {r[11]:.3f} | "
            f"{r[12]:.3f} / {r[13]:.3f} | {r[14]:.3f} | {r[15]:.3f} |"
        )
    if first is not None:
        _tie_yardstick(*first, seed=args.seed)


def broken_by(last: np.ndarray, by: np.ndarray) -> np.ndarray:
    """k/n with its ties ordered by `by`: a nudge smaller than the gap between two levels."""
    return last + 1e-6 * rankdata(by) / len(by)


def within_ties(last: np.ndarray, by: np.ndarray, truth: np.ndarray) -> float:
    """Spearman of `by` against the truth inside each tie of k/n, weighted by the tie's size."""
    total = weight = 0.0
    for level in np.unique(last):
        inside = last == level
        if inside.sum() >= 20 and truth[inside].std() > 0 and by[inside].std() > 0:
            total += inside.sum() * spearmanr(by[inside], truth[inside]).statistic
            weight += inside.sum()
    return total / weight if weight else float("nan")


def _tie_yardstick(last: np.ndarray, truth: np.ndarray, groups: float, *, seed: int) -> None:
    """How good an order inside k/n's ties must be before breaking them beats keeping them."""
    rng = np.random.default_rng(seed)
    print(
        f"\nAt the first checkpoint ({len(last)} prompts, {groups:.2f} groups each on average), "
        f"the last k/n scores "
        f"{spearmanr(last, truth).statistic:.3f}. Its ties broken by the true rate plus noise:\n"
    )
    print("| noise sd | Spearman inside ties | Spearman, k/n with ties broken by it |")
    print("|---|---|---|")
    for sd in (0.0, 0.05, 0.1, 0.2, 0.4, np.inf):
        by = rng.random(len(truth)) if np.isinf(sd) else truth + rng.normal(0, sd, len(truth))
        label = "random" if np.isinf(sd) else f"{sd:g}"
        print(
            f"| {label} | {within_ties(last, by, truth):.3f} | "
            f"{spearmanr(broken_by(last, by), truth).statistic:.3f} |"
        )


if __name__ == "__main__":
    main()
