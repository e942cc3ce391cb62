"""Cold start through the API: fit on 80% of deepscaler_passrate_dev, predict the unseen fifth.

Run: `.venv/bin/python -m benchmarks.cold_start_api [--embedder ngrams hashing] [--timings]`.

For each embedder it starts a real `depo serve` on the embedded default, uploads the training
prompts only, and opens two runs on them. One reports each prompt's true pass rate (its 128
labelled samples, as one group), the other one simulated group of 8 per prompt. Once the
predictor has fitted on all of them, the held-out prompts go to `POST /predict` as raw texts,
never uploaded, so they are unseen in every sense (idf too). Same split and draws as
`benchmarks/cold_start_features.py`. Prints a markdown table: Spearman against the true pass
rate, AUROC for all-fail / all-pass / informative, calibration MAE, and the fit's time.
"""

from __future__ import annotations

import argparse
import sys
import time

import httpx
import numpy as np

from benchmarks._server import serve
from benchmarks.eval_predictor import DATA, GROUP, load_jsonl, metrics

CHUNK = 2_000


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _wait(c: httpx.Client, path: str, done: object, what: str, timeout: float = 600) -> None:
    """Poll until `done(body)`; shows progress, gives up loudly."""
    t0 = time.monotonic()
    while True:
        body = c.get(path).json()
        if done(body):  # type: ignore[operator]
            return
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"timed out waiting for {what}: {body}")
        time.sleep(0.5)


def run_embedder(
    embedder: str,
    texts: list[str],
    ids: list[str],
    tr: np.ndarray,
    te: np.ndarray,
    labels: dict[str, tuple[np.ndarray, int]],
    p: np.ndarray,
) -> list[tuple[str, dict[str, float]]]:
    """One service, one dataset of the training prompts, one run per label kind."""
    out = []
    with (
        serve("embedded", env={"DEPO_REFIT_MIN_SECONDS": "0"}) as url,
        httpx.Client(base_url=url, timeout=300) as c,
    ):
        c.post("/v1/datasets", json={"name": "train", "embedder": embedder}).raise_for_status()
        t0 = time.perf_counter()
        for s in range(0, len(tr), CHUNK):
            chunk = [{"id": ids[i], "text": texts[i]} for i in tr[s : s + CHUNK]]
            c.post("/v1/datasets/train/prompts", json={"prompts": chunk}).raise_for_status()
        _wait(
            c,
            "/v1/datasets/train",
            lambda b: b["embedded"] == len(tr),
            "embedding",
        )
        _log(
            f"  {embedder}: {len(tr)} prompts uploaded and embedded in {time.perf_counter() - t0:.1f} s"
        )
        for r, (kind, (succ, n)) in enumerate(labels.items()):
            run = f"cold-{r}"
            sel = {"fit_min_outcomes": len(tr), "refit_every": 10**9}
            c.post(
                "/v1/runs",
                json={"name": run, "dataset": "train", "group_size": GROUP, "selection": sel},
            ).raise_for_status()
            for s in range(0, len(tr), CHUNK):
                results = [
                    {
                        "prompt_id": ids[i],
                        "rewards": [1.0] * int(succ[i]) + [0.0] * (n - int(succ[i])),
                    }
                    for i in tr[s : s + CHUNK]
                ]
                c.post(
                    f"/v1/runs/{run}/outcomes", json={"step": 0, "results": results}
                ).raise_for_status()
            _wait(c, f"/v1/runs/{run}/predictor", lambda b: b["version"] is not None, "the fit")
            info = c.get(f"/v1/runs/{run}/predictor").json()
            r = c.post(f"/v1/runs/{run}/predict", json={"texts": [texts[i] for i in te]})
            r.raise_for_status()
            pred = np.array([x["pass_rate"] for x in r.json()["items"]])
            m = metrics(pred, p[te])
            m["fit_s"] = float(info["calibration"].get("fit_seconds", float("nan")))
            _log(f"  {embedder}, fitted on {kind}: Spearman {m['spearman']:.3f}")
            out.append((kind, m))
    return out


def sparse_timings(texts: list[str], p: np.ndarray) -> None:
    """The `ngrams` embedder and sparse predictor against the service's speed budgets."""
    import scipy.sparse as sp

    from service.estimator import get_embedder, model_inputs, warmup
    from service.estimator.sparse import document_frequency_weights
    from service.predictor.calibrate import fit_calibrated, predict_rates
    from service.predictor.inputs import fit_config

    # distinct texts: 50,000 rows without duplicates (merged duplicates would flatter the fit)
    big = [f"{t} (variant {k})" for k in range(4) for t in texts][:50_000]
    emb = get_embedder("ngrams")
    t0 = time.perf_counter()
    grams = emb.embed(big[:30_000])
    t_embed = time.perf_counter() - t0
    x = model_inputs(grams, big[:30_000])
    t_inputs = time.perf_counter() - t0
    x = sp.vstack([x, model_inputs(emb.embed(big[30_000:]), big[30_000:])], format="csr")
    weights = np.ones(x.shape[1], dtype=np.float32)
    weights[: emb.dim] = document_frequency_weights(x, slice(0, emb.dim))
    cfg = fit_config("ngrams", x.shape[1], 2, weights)
    rate = np.array([p[i % len(p)] for i in range(x.shape[0])])
    succ = np.random.default_rng(0).binomial(GROUP, rate).astype(np.float64)
    trials = np.full(x.shape[0], float(GROUP))
    warmup()  # one-off torch imports, paid at service start
    t0 = time.perf_counter()
    state = fit_calibrated(x, succ, trials, init=None, config=cfg)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit_calibrated(x, succ, trials, init=state, config=cfg)
    t_refit = time.perf_counter() - t0
    x100 = sp.vstack([x, x], format="csr")
    t_pred = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        predict_rates(state, x100)
        t_pred = min(t_pred, time.perf_counter() - t0)
    print(f"\n## `ngrams` timings (2 CPU cores, input width {x.shape[1]:,}, sparse)\n")
    print("| what | measured | budget |\n|---|---|---|")
    print(
        f"| `ngrams` embed 30,000 texts | {t_embed:.1f} s ({30_000 / t_embed:,.0f} texts/s) "
        "| 5,000/s |"
    )
    print(
        f"| the same with the text features appended (what the service stores) "
        f"| {t_inputs:.1f} s ({30_000 / t_inputs:,.0f} texts/s) | 30,000 in 15 s |"
    )
    print(f"| non-zeros per prompt | {x.nnz / x.shape[0]:.0f} (6 bytes each stored) | - |")
    print(f"| fit 50,000 outcomes, cold (with the held-out calibration) | {t_fit:.2f} s | 5 s |")
    print(f"| refit 50,000 outcomes, warm start | {t_refit:.2f} s | 5 s |")
    print(f"| predict 100,000 rows (best of 3) | {1000 * t_pred:.0f} ms | 100 ms |")
    print(f"| predictor state, stored (npz) | {len(state.to_bytes()) / 2**20:.1f} MiB | - |")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--embedder", nargs="+", default=["ngrams", "hashing"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timings", action="store_true", help="also time the sparse path")
    args = ap.parse_args()
    rows = load_jsonl(DATA / "deepscaler_passrate_dev.jsonl")
    texts = [str(r["problem"]) for r in rows]
    ids = [str(r["id"]) for r in rows]
    succ = np.array([r["successes"] for r in rows], dtype=np.int64)
    samples = np.array([r["samples"] for r in rows], dtype=np.int64)
    if len(set(samples.tolist())) != 1:
        raise SystemExit("expected the same number of samples for every prompt")
    p = succ / samples
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(len(rows))
    tr, te = perm[: int(0.8 * len(perm))], perm[int(0.8 * len(perm)) :]
    labels = {
        "true rates": (succ, int(samples[0])),
        f"one group of {GROUP}": (rng.binomial(GROUP, p), GROUP),
    }
    print(
        f"\n## Cold start through the API (train {len(tr)}, held out {len(te)} never uploaded, "
        f"seed {args.seed})\n"
    )
    print(
        "| embedder | fitted on | Spearman | AUROC all-fail | AUROC all-pass | AUROC informative "
        "| calibration MAE | fit s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for embedder in args.embedder:
        for kind, m in run_embedder(embedder, texts, ids, tr, te, labels, p):
            print(
                f"| `{embedder}` | {kind} | {m['spearman']:.3f} | {m['auc_fail']:.3f} "
                f"| {m['auc_pass']:.3f} | {m['auc_inf']:.3f} | {m['cal_mae']:.3f} "
                f"| {m['fit_s']:.1f} |",
                flush=True,
            )
    if args.timings:
        sparse_timings(texts, p)


if __name__ == "__main__":
    main()
