"""Routing by predicted difficulty on held-out DeepScaleR prompts: threshold against share.

Run: `.venv/bin/python -m benchmarks.routing [--embedder ngrams] [--seed 0] [--groups 1]`.

A real `depo serve` on the embedded default learns 80% of deepscaler_passrate_dev from
simulated groups of 8 (`--groups` per prompt, drawn from each prompt's labelled pass rate), as
`benchmarks/cold_start_api.py` does. The other 20% are never uploaded: they go to
`POST /v1/runs/{run}/route` as raw texts with two tiers, `small` up to the threshold's
difficulty (1 - predicted pass rate) and `large` for the rest. For each threshold the table
gives the share routed to `small`, the mean true pass rate (the labelled one, 128 samples of
Qwen2.5-Math-7B) of each tier's queries, and what the service expected of each tier. The
`oracle` columns route the same share by the true pass rate: the most any predictor could
separate at that share.
"""

from __future__ import annotations

import argparse
import sys

import httpx
import numpy as np

from benchmarks._server import serve
from benchmarks.cold_start_api import CHUNK, _upload, _wait
from benchmarks.eval_predictor import DATA, GROUP, load_jsonl

THRESHOLDS = (0.25, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9)
ROUTE_CHUNK = 2_000  # raw texts per request (10,000 at most on the n-gram embedders)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _train(
    c: httpx.Client, ids: list[str], texts: list[str], p: np.ndarray, args: argparse.Namespace
) -> str:
    """Upload the training prompts, report simulated groups, wait for the fit."""
    took = _upload(c, "train", args.embedder, ids, texts)
    _log(f"{len(ids)} prompts uploaded and embedded in {took:.1f} s")
    total = len(ids) * args.groups
    sel = {"fit_min_outcomes": total, "refit_every": 10**9}
    body = {"name": "route", "dataset": "train", "group_size": GROUP, "selection": sel}
    c.post("/v1/runs", json=body).raise_for_status()
    rng = np.random.default_rng(args.seed + 1)
    for step in range(args.groups):
        k = rng.binomial(GROUP, p)
        for s in range(0, len(ids), CHUNK):
            results = [
                {"prompt_id": pid, "rewards": [1.0] * int(kk) + [0.0] * (GROUP - int(kk))}
                for pid, kk in zip(ids[s : s + CHUNK], k[s : s + CHUNK], strict=True)
            ]
            r = c.post("/v1/runs/route/outcomes", json={"step": step, "results": results})
            r.raise_for_status()
    _wait(c, "/v1/runs/route/predictor", lambda b: b["version"] is not None, "the fit")
    return "route"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--embedder", default="ngrams")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--groups", type=int, default=1, help="simulated groups of 8 per training prompt"
    )
    args = ap.parse_args()
    rows = load_jsonl(DATA / "deepscaler_passrate_dev.jsonl")
    texts = [str(r["problem"]) for r in rows]
    ids = [str(r["id"]) for r in rows]
    p = np.array([float(r["successes"]) / float(r["samples"]) for r in rows])
    perm = np.random.default_rng(args.seed).permutation(len(rows))
    tr, te = perm[: int(0.8 * len(perm))], perm[int(0.8 * len(perm)) :]
    held = [texts[i] for i in te]
    truth = p[te]
    with (
        serve("embedded", env={"DEPO_REFIT_MIN_SECONDS": "0"}) as url,
        httpx.Client(base_url=url, timeout=600) as c,
    ):
        run = _train(c, [ids[i] for i in tr], [texts[i] for i in tr], p[tr], args)
        print(
            f"\n## Routing held-out DeepScaleR prompts by predicted difficulty ({len(tr):,} trained on "
            f"from {args.groups} simulated group(s) of {GROUP} each, {len(te):,} held out and sent "
            f"as raw texts, `{args.embedder}`, seed {args.seed})\n"
        )
        print(f"All {len(te):,} held-out queries: mean true pass rate {truth.mean():.3f}.\n")
        print(
            "| threshold (max difficulty of `small`) | share to `small` | true pass rate, `small` "
            "| true pass rate, `large` | expected by the service, `small` / `large` "
            "| oracle at the same share: `small` / `large` |"
        )
        print("|---|---|---|---|---|---|")
        order = np.argsort(-truth, kind="stable")  # easiest first
        for t in THRESHOLDS:
            routed, expected = _route_tiers(c, run, held, t)
            tiers = np.array([x or "unrouted" for x in routed])
            small = tiers == "small"
            share = small.mean()
            m = int(small.sum())
            orc_small = truth[order[:m]].mean() if m else float("nan")
            orc_large = truth[order[m:]].mean() if m < len(truth) else float("nan")

            def mean(x: np.ndarray) -> str:
                return f"{x.mean():.3f}" if len(x) else "-"

            exp = " / ".join(
                "-" if v is None else f"{v:.3f}" for v in (expected["small"], expected["large"])
            )
            print(
                f"| {t:.2f} | {share:.1%} | {mean(truth[small])} | {mean(truth[~small])} | {exp} "
                f"| {orc_small:.3f} / {orc_large:.3f} |",
                flush=True,
            )


def _route_tiers(
    c: httpx.Client, run: str, texts: list[str], threshold: float
) -> tuple[list[str | None], dict[str, float | None]]:
    """Each text's tier, and each tier's expected pass rate over all the texts."""
    tiers = [{"name": "small", "max_difficulty": threshold}, {"name": "large"}]
    out: list[str | None] = []
    sums = {"small": [0, 0.0], "large": [0, 0.0]}
    for s in range(0, len(texts), ROUTE_CHUNK):
        r = c.post(
            f"/v1/runs/{run}/route", json={"texts": texts[s : s + ROUTE_CHUNK], "tiers": tiers}
        )
        r.raise_for_status()
        body = r.json()
        out += [i["tier"] for i in body["items"]]
        for t in body["tiers"]:
            if t["count"]:
                sums[t["name"]][0] += t["count"]
                sums[t["name"]][1] += t["count"] * t["expected_pass_rate"]
    return out, {k: (v[1] / v[0] if v[0] else None) for k, v in sums.items()}


if __name__ == "__main__":
    main()
