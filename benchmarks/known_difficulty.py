"""Known difficulty at upload on MATH: level as the label, real pass rates as the outcomes.

Run: `.venv/bin/python -m benchmarks.known_difficulty [--groups 2000] [--seed 0]`.

The problems are the 3,059 of `math_levels.jsonl` that are also in
`deepscaler_passrate_dev.jsonl` (same text): each has a human level (1-5) and a measured pass
rate (Qwen2.5-Math-7B, 128 samples). The label is the level, through the dataset's
`difficulty_field` (level 1 easiest, 5 hardest); the outcomes are drawn from the measured pass
rate, never from the level, so the label is a second, independent view of difficulty and a fit
can only learn to trust it as far as it predicts real outcomes.

A real `depo serve` (embedded backend, `ngrams`) holds three copies of the problems: with the
level as label, without a label, and with the levels shuffled among the problems. Each gets one
run; half of the problems (seeded) receive groups of 8, 250 groups a step, a fit after each
step; the other half are never run. Printed: Spearman of the never-run prompts' estimates
(`POST /predict` by id) against the level (sign turned, so higher is better) and against the
measured pass rate, before any group and after `--groups`, with the fitted label weight.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from scipy.stats import spearmanr

from benchmarks._server import serve

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GROUP = 8
STEP_GROUPS = 250
ARMS = ("label", "none", "shuffled")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load() -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Ids, texts, levels and measured pass rates of the MATH problems DeepScaleR also holds."""

    def norm(s: str) -> str:
        return " ".join(s.split())

    rates = {}
    for line in (DATA / "deepscaler_passrate_dev.jsonl").read_text().splitlines():
        r = json.loads(line)
        rates[norm(r["problem"])] = float(r["pass_rate"])
    ids, texts, levels, passes = [], [], [], []
    for line in (DATA / "math_levels.jsonl").read_text().splitlines():
        r = json.loads(line)
        key = norm(r["problem"])
        if key in rates and key not in texts:
            ids.append(str(r["id"]))
            texts.append(r["problem"])
            levels.append(int(r["level"]))
            passes.append(rates[key])
    return ids, texts, np.array(levels, dtype=float), np.array(passes)


def _rho(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman; 0 for a constant estimate (no ranking at all)."""
    if np.std(a) == 0 or np.std(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def _wait(c: httpx.Client, path: str, done: Any, what: str, timeout: float = 600) -> None:
    t0 = time.monotonic()
    while not done(c.get(path).json()):
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.3)


def _estimates(c: httpx.Client, run: str, ids: list[str]) -> np.ndarray:
    r = c.post(f"/v1/runs/{run}/predict", json={"prompt_ids": ids})
    r.raise_for_status()
    return np.array([i["pass_rate"] for i in r.json()["items"]])


def arm(
    c: httpx.Client,
    kind: str,
    ids: list[str],
    texts: list[str],
    levels: np.ndarray,
    passes: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    groups: int,
    seed: int,
) -> dict[str, float]:
    """One dataset and run: the never-run prompts' Spearman at 0 groups and after `groups`."""
    name = f"math-{kind}"
    body: dict[str, Any] = {"name": name, "embedder": "ngrams"}
    label = levels
    if kind != "none":
        body["difficulty_field"] = {"name": "level", "easiest": 1, "hardest": 5}
    if kind == "shuffled":
        label = np.random.default_rng(seed + 1).permutation(levels)
    c.post("/v1/datasets", json=body).raise_for_status()
    prompts = [
        {"id": i, "text": t, "metadata": {"level": int(lv)}}
        for i, t, lv in zip(ids, texts, label, strict=True)
    ]
    c.post(f"/v1/datasets/{name}/prompts", json={"prompts": prompts}).raise_for_status()
    _wait(c, f"/v1/datasets/{name}", lambda b: b["embedded"] == len(ids), "embedding")
    sel = {"fit_min_outcomes": STEP_GROUPS, "refit_every": STEP_GROUPS}
    c.post(
        "/v1/runs", json={"name": name, "dataset": name, "group_size": GROUP, "selection": sel}
    ).raise_for_status()
    unseen = [ids[i] for i in test]
    out: dict[str, float] = {}
    est = _estimates(c, name, unseen)
    out["level_0"], out["pass_0"] = _rho(est, -levels[test]), _rho(est, passes[test])
    rng = np.random.default_rng(seed)  # the same groups in every arm
    sent = 0
    for step in range(groups // STEP_GROUPS):
        picks = rng.choice(train, size=STEP_GROUPS, replace=False)  # one group a prompt a step
        results = [
            {
                "prompt_id": ids[i],
                "rewards": (rng.random(GROUP) < passes[i]).astype(float).tolist(),
            }
            for i in picks
        ]
        ack = c.post(f"/v1/runs/{name}/outcomes", json={"step": step, "results": results})
        ack.raise_for_status()
        sent += STEP_GROUPS
        _wait(c, f"/v1/runs/{name}/predictor", lambda b, n=sent: b["trained_on"] == n, "a fit")
    info = c.get(f"/v1/runs/{name}/predictor").json()
    est = _estimates(c, name, unseen)
    out["level_n"], out["pass_n"] = _rho(est, -levels[test]), _rho(est, passes[test])
    out["weight"] = float(info["calibration"].get("label_weight", float("nan")))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--groups", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    ids, texts, levels, passes = load()
    order = np.random.default_rng(args.seed).permutation(len(ids))
    train, test = order[: len(ids) // 2], order[len(ids) // 2 :]
    _log(f"{len(ids)} problems: {len(train)} run, {len(test)} never run")
    rows = {}
    t0 = time.perf_counter()
    with (
        serve("embedded", env={"DEPO_REFIT_MIN_SECONDS": "0"}) as url,
        httpx.Client(base_url=url, timeout=300) as c,
    ):
        for kind in ARMS:
            rows[kind] = arm(
                c, kind, ids, texts, levels, passes, train, test, args.groups, args.seed
            )
            _log(f"  {kind}: {rows[kind]}")
    print(f"never-run prompts ({len(test)}), Spearman of the estimate; {args.groups} groups of 8")
    print(f"on the other {len(train)}; seed {args.seed}; {time.perf_counter() - t0:.0f} s\n")
    print(
        "| label | vs level, 0 groups | vs level, after | vs pass rate, 0 groups "
        "| vs pass rate, after | label weight |"
    )
    print("|---|---|---|---|---|---|")
    for kind in ARMS:
        r = rows[kind]
        w = "-" if kind == "none" else f"{r['weight']:.2f}"
        print(
            f"| {kind} | {r['level_0']:.3f} | {r['level_n']:.3f} | {r['pass_0']:.3f} "
            f"| {r['pass_n']:.3f} | {w} |"
        )


if __name__ == "__main__":
    main()
