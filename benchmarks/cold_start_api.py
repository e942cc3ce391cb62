"""Cold start through the API: fit on 80% of deepscaler_passrate_dev, predict the unseen fifth.

Run: `.venv/bin/python -m benchmarks.cold_start_api [--embedder ngrams hashing] [--folds 5]
[--timings] [--no-math-levels]`. `--folds K` cross-validates instead of the one seeded split.

For each embedder it starts a real `depo serve` on the embedded default, uploads the training
prompts only, and opens two runs on them. One reports each prompt's true pass rate (its 128
labelled samples, as one group), the other one simulated group of 8 per prompt. Once the
predictor has fitted on all of them, the held-out prompts go to `POST /predict` as raw texts,
never uploaded, so they are unseen in every sense (idf too). Same split and draws as
`benchmarks/cold_start_features.py`. Prints a markdown table: Spearman against the true pass
rate, AUROC for all-fail / all-pass / informative, calibration MAE, and the fit's time.

Then, to show the predictor is not tuned to one dataset, the same service learns MATH's train
split from one group of 8 per problem whose successes fall with its level (8, 6, 4, 2, 0 for
levels 1 to 5) and predicts MATH500 from raw texts: Spearman against the level.
"""

from __future__ import annotations

import argparse
import sys
import time

import httpx
import numpy as np
from scipy.stats import spearmanr

from benchmarks._server import serve
from benchmarks.eval_predictor import DATA, GROUP, constant, load_jsonl, metrics

CHUNK = 2_000
PREDICT_CHUNK = 256  # raw texts per /predict: the cap on transformer embedders


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


def _upload(c: httpx.Client, name: str, embedder: str, ids: list[str], texts: list[str]) -> float:
    """A dataset of these prompts; seconds until every one is embedded."""
    c.post("/v1/datasets", json={"name": name, "embedder": embedder}).raise_for_status()
    t0 = time.perf_counter()
    for s in range(0, len(ids), CHUNK):
        chunk = [
            {"id": i, "text": t}
            for i, t in zip(ids[s : s + CHUNK], texts[s : s + CHUNK], strict=True)
        ]
        c.post(f"/v1/datasets/{name}/prompts", json={"prompts": chunk}).raise_for_status()
    _wait(c, f"/v1/datasets/{name}", lambda b: b["embedded"] == len(ids), "embedding")
    return time.perf_counter() - t0


def _fit_predict(
    c: httpx.Client,
    run: str,
    dataset: str,
    ids: list[str],
    succ: np.ndarray,
    n: int,
    unseen: list[str],
) -> tuple[np.ndarray, float]:
    """Report one group per prompt, wait for the fit, predict raw texts: (rates, fit seconds)."""
    sel = {"fit_min_outcomes": len(ids), "refit_every": 10**9}
    c.post(
        "/v1/runs",
        json={"name": run, "dataset": dataset, "group_size": GROUP, "selection": sel},
    ).raise_for_status()
    for s in range(0, len(ids), CHUNK):
        results = [
            {"prompt_id": pid, "rewards": [1.0] * int(k) + [0.0] * (n - int(k))}
            for pid, k in zip(ids[s : s + CHUNK], succ[s : s + CHUNK], strict=True)
        ]
        c.post(f"/v1/runs/{run}/outcomes", json={"step": 0, "results": results}).raise_for_status()
    _wait(c, f"/v1/runs/{run}/predictor", lambda b: b["version"] is not None, "the fit")
    info = c.get(f"/v1/runs/{run}/predictor").json()
    items = []
    for s in range(0, len(unseen), PREDICT_CHUNK):
        r = c.post(f"/v1/runs/{run}/predict", json={"texts": unseen[s : s + PREDICT_CHUNK]})
        r.raise_for_status()
        items += r.json()["items"]
    pred = np.array([x["pass_rate"] for x in items])
    return pred, float(info["calibration"].get("fit_seconds", float("nan")))


def run_embedder(
    embedder: str,
    texts: list[str],
    ids: list[str],
    tr: np.ndarray,
    te: np.ndarray,
    labels: dict[str, tuple[np.ndarray, int]],
    p: np.ndarray,
    math: dict[str, list[str] | np.ndarray] | None,
) -> tuple[list[tuple[str, dict[str, float]]], dict[str, float] | None]:
    """One service: DeepScaleR with one run per label kind, then MATH levels if given."""
    out = []
    with (
        serve("embedded", env={"DEPO_REFIT_MIN_SECONDS": "0"}) as url,
        httpx.Client(base_url=url, timeout=300) as c,
    ):
        train_ids, train_texts = [ids[i] for i in tr], [texts[i] for i in tr]
        if labels:
            took = _upload(c, "train", embedder, train_ids, train_texts)
            _log(f"  {embedder}: {len(tr)} prompts uploaded and embedded in {took:.1f} s")
        for r, (kind, (succ, n)) in enumerate(labels.items()):
            pred, fit_s = _fit_predict(
                c, f"cold-{r}", "train", train_ids, succ[tr], n, [texts[i] for i in te]
            )
            m = metrics(pred, p[te])
            m["fit_s"] = fit_s
            _log(f"  {embedder}, fitted on {kind}: Spearman {m['spearman']:.3f}")
            out.append((kind, m))
        levels = None
        if math is not None:
            mids, mtexts = list(math["train_ids"]), list(math["train_texts"])
            _upload(c, "math", embedder, mids, mtexts)
            k = np.asarray(math["train_successes"])
            pred, fit_s = _fit_predict(c, "math", "math", mids, k, GROUP, list(math["test_texts"]))
            rho = float(spearmanr(pred, -np.asarray(math["test_level"])).statistic)
            _log(f"  {embedder}, MATH levels: Spearman {rho:.3f}")
            levels = {"spearman": rho, "fit_s": fit_s}
    return out, levels


def load_math_levels() -> dict[str, list[str] | np.ndarray]:
    """MATH train with one group of 8 whose successes fall with the level; MATH500 to predict."""
    rows = load_jsonl(DATA / "math_levels.jsonl")
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    level = np.array([r["level"] for r in train], dtype=np.int64)
    return {
        "train_ids": [str(r["id"]) for r in train],
        "train_texts": [str(r["problem"]) for r in train],
        "train_successes": np.round(GROUP * (1.0 - (level - 1) / 4.0)).astype(np.int64),
        "test_texts": [str(r["problem"]) for r in test],
        "test_level": np.array([r["level"] for r in test], dtype=np.int64),
    }


def sparse_timings(texts: list[str], p: np.ndarray) -> None:
    """The `ngrams` embedder and sparse predictor against the service's speed budgets."""
    import scipy.sparse as sp

    from service.estimator import get_embedder, model_inputs, warmup
    from service.estimator.calibrate import fit_calibrated, predict_rates
    from service.estimator.inputs import fit_config
    from service.estimator.sparse import document_frequency_weights

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


def baselines(
    texts: list[str],
    tr: np.ndarray,
    te: np.ndarray,
    labels: dict[str, tuple[np.ndarray, int]],
    p: np.ndarray,
) -> list[tuple[str, str, dict[str, float]]]:
    """What the served predictor must beat, on the same split, fitted directly (no service)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression, Ridge

    loglen = np.log1p([len(t) for t in texts]).reshape(-1, 1)
    t0 = time.perf_counter()
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    xtr = vec.fit_transform([texts[i] for i in tr])
    xte = vec.transform([texts[i] for i in te])
    t_vec = time.perf_counter() - t0
    out = []
    for kind, (succ, n) in labels.items():
        s, rate = succ[tr], succ[tr] / n
        t0 = time.perf_counter()
        m = metrics(constant(loglen[tr], s, np.full(len(tr), n), loglen[te]), p[te])
        out.append(("constant (training mean)", kind, {**m, "fit_s": time.perf_counter() - t0}))
        t0 = time.perf_counter()
        # one row per success and per failure, weighted: the binomial likelihood of the counts
        lr = LogisticRegression().fit(
            np.vstack([loglen[tr], loglen[tr]]),
            np.r_[np.ones(len(tr)), np.zeros(len(tr))],
            sample_weight=np.r_[s, n - s],
        )
        m = metrics(lr.predict_proba(loglen[te])[:, 1], p[te])
        out.append(("log length (logistic)", kind, {**m, "fit_s": time.perf_counter() - t0}))
        t0 = time.perf_counter()
        pred = np.clip(Ridge(alpha=3.0).fit(xtr, rate).predict(xte), 1e-3, 1 - 1e-3)
        m = metrics(pred, p[te])
        out.append(
            ("TF-IDF 1-2 grams, ridge", kind, {**m, "fit_s": time.perf_counter() - t0 + t_vec})
        )
    return out


HEADER = (
    "| embedder | fitted on | Spearman | AUROC all-fail | AUROC all-pass | AUROC informative "
    "| calibration MAE | fit s |\n|---|---|---|---|---|---|---|---|"
)
COLUMNS = ("spearman", "auc_fail", "auc_pass", "auc_inf", "cal_mae")


def _row(embedder: str, kind: str, m: dict[str, float]) -> str:
    cells = " | ".join(f"{m[k]:.3f}" for k in COLUMNS)
    return f"| {embedder} | {kind} | {cells} | {m['fit_s']:.1f} |"


def cross_validate(
    folds: int,
    embedders: list[str],
    texts: list[str],
    ids: list[str],
    perm: np.ndarray,
    labels: dict[str, tuple[np.ndarray, int]],
    p: np.ndarray,
) -> None:
    """One split's Spearman moves by about 0.01 with the split: K folds give the spread."""
    parts = np.array_split(perm, folds)
    print(
        f"\n## Cold start through the API, {folds}-fold (each prompt held out once, never "
        f"uploaded; held out {min(map(len, parts))}-{max(map(len, parts))} per fold)\n"
    )
    print(HEADER)
    for embedder in embedders:
        per_kind: dict[str, list[dict[str, float]]] = {kind: [] for kind in labels}
        for f, te in enumerate(parts):
            tr = np.concatenate([q for g, q in enumerate(parts) if g != f])
            rows_out, _ = run_embedder(embedder, texts, ids, tr, te, labels, p, None)
            for kind, m in rows_out:
                per_kind[kind].append(m)
                print(_row(f"`{embedder}` fold {f + 1}", kind, m), flush=True)
        for kind, ms in per_kind.items():
            mean = {k: float(np.mean([m[k] for m in ms])) for k in (*COLUMNS, "fit_s")}
            sd = float(np.std([m["spearman"] for m in ms], ddof=1))
            cells = " | ".join(f"**{mean[k]:.3f}**" for k in COLUMNS)
            print(
                f"| `{embedder}` mean of {folds} | {kind} | {cells} | {mean['fit_s']:.1f} |"
                f"\n| `{embedder}` sd of {folds} | {kind} | {sd:.3f} | | | | | |",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--embedder", nargs="+", default=["ngrams", "hashing"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timings", action="store_true", help="also time the sparse path")
    ap.add_argument("--no-math-levels", action="store_true", help="skip the MATH levels check")
    ap.add_argument(
        "--folds",
        type=int,
        default=1,
        help="K > 1: K-fold cross-validation (each prompt held out once), mean and sd of K",
    )
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
    labels = {
        "true rates": (succ, int(samples[0])),
        f"one group of {GROUP}": (rng.binomial(GROUP, p), GROUP),
    }
    math = None if args.no_math_levels else load_math_levels()
    by_level: dict[str, dict[str, float]] = {}
    if args.folds > 1:
        cross_validate(args.folds, args.embedder, texts, ids, perm, labels, p)
        for embedder in args.embedder if math is not None else []:
            _, levels = run_embedder(embedder, texts, ids, perm[:0], perm[:0], {}, p, math)
            if levels is not None:
                by_level[embedder] = levels
    else:
        tr, te = perm[: int(0.8 * len(perm))], perm[int(0.8 * len(perm)) :]
        print(
            f"\n## Cold start through the API (train {len(tr)}, held out {len(te)} never "
            f"uploaded, seed {args.seed})\n"
        )
        print(HEADER)
        for name, kind, m in baselines(texts, tr, te, labels, p):
            print(_row(f"baseline: {name}", kind, m), flush=True)
        for embedder in args.embedder:
            rows_out, levels = run_embedder(embedder, texts, ids, tr, te, labels, p, math)
            for kind, m in rows_out:
                print(_row(f"`{embedder}`", kind, m), flush=True)
            if levels is not None:
                by_level[embedder] = levels
    if math is not None:
        print(
            f"\n## MATH levels through the API (train {len(math['train_ids'])}, one group of "
            f"{GROUP} with {GROUP}, 6, 4, 2, 0 successes for levels 1-5; the "
            f"{len(math['test_texts'])} MATH500 problems sent as raw texts)\n"
        )
        print("| embedder | Spearman against -level | fit s |\n|---|---|---|")
        for embedder, lv in by_level.items():
            print(f"| `{embedder}` | {lv['spearman']:.3f} | {lv['fit_s']:.1f} |")
    if args.timings:
        sparse_timings(texts, p)


if __name__ == "__main__":
    main()
