"""Cold-start evaluation of the difficulty predictor on the shared labelled data.

Usage: .venv/bin/python benchmarks/eval_predictor.py [--embedder hashing|minilm|both] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.linear_model import Ridge
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.estimator import (  # noqa: E402
    N_FEATURES,
    FitConfig,
    HashingEmbedder,
    MiniLMEmbedder,
    combine_hybrid,
    fit,
    predict,
    text_features,
    warmup,
)

DATA = ROOT.parent / "shared" / "data"
CACHE = ROOT / ".cache" / "estimator"
GROUP = 8


def load_jsonl(path: Path) -> list[dict[str, object]]:
    """Read one JSON object per line."""
    with path.open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _key(texts: Sequence[str]) -> str:
    """Content hash of a text list, so cached embeddings never go stale."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\x1e")
    return h.hexdigest()[:16]


def minilm_cached(texts: Sequence[str], chunk: int = 512) -> np.ndarray:
    """Embed with MiniLM once and cache under .cache/ (about 35 texts/s on 2 cores)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE.parent / ".gitignore").write_text("*\n")
    path = CACHE / f"minilm-{_key(texts)}.npy"
    if path.exists():
        return np.load(path)
    emb = MiniLMEmbedder(num_threads=2)
    parts, t0 = [], time.perf_counter()
    for i in range(0, len(texts), chunk):
        parts.append(emb.embed(texts[i : i + chunk]))
        done = min(i + chunk, len(texts))
        rate = done / (time.perf_counter() - t0)
        print(f"  minilm {done}/{len(texts)} ({rate:.0f}/s)", file=sys.stderr, flush=True)
    out = np.concatenate(parts)
    np.save(path, out)
    return out


@dataclass
class Inputs:
    """Model inputs for one embedder choice, with their block layout."""

    name: str
    x: np.ndarray
    blocks: tuple[int, ...]
    gains: tuple[float, ...]


def build_inputs(texts: Sequence[str], which: str, feats: np.ndarray) -> list[Inputs]:
    """Embed texts with the requested embedder(s) and append the text features."""
    out: list[Inputs] = []
    h = m = None
    if which in ("hashing", "both"):
        h = HashingEmbedder().embed(texts)
        out.append(
            Inputs("hashing", np.hstack([h, feats]), (h.shape[1], N_FEATURES), GAINS["hashing"])
        )
    if which in ("minilm", "both"):
        m = minilm_cached(texts)
        out.append(
            Inputs("minilm", np.hstack([m, feats]), (m.shape[1], N_FEATURES), GAINS["minilm"])
        )
    if h is not None and m is not None:
        hy = combine_hybrid(h, m)
        out.append(
            Inputs(
                "hybrid",
                np.hstack([hy, feats]),
                (h.shape[1], m.shape[1], N_FEATURES),
                GAINS["hybrid"],
            )
        )
    return out


GAINS: dict[str, tuple[float, ...]] = {
    "hashing": (1.0, 0.45),
    "minilm": (1.0, 0.45),
    "hybrid": (1.0, 1.0, 0.45),
}


# ---------------------------------------------------------------- metrics


def calibration_mae(pred: np.ndarray, true: np.ndarray, bins: int = 10) -> float:
    """Mean |mean predicted - mean true| over equal-count bins of the prediction."""
    order = np.argsort(pred)
    errs = [abs(pred[i].mean() - true[i].mean()) for i in np.array_split(order, bins)]
    return float(np.mean(errs))


def auroc(score: np.ndarray, label: np.ndarray) -> float:
    """AUROC, or NaN when only one class is present."""
    if label.min() == label.max():
        return float("nan")
    return float(roc_auc_score(label, score))


def metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Spearman, AUROC for all-fail/all-pass/informative and calibration MAE."""
    const = bool(np.ptp(pred) < 1e-12)
    rho = 0.0 if const else float(spearmanr(pred, true)[0])
    informative = 1.0 - pred**GROUP - (1.0 - pred) ** GROUP
    return {
        "spearman": rho,
        "auc_fail": auroc(-pred, (true == 0).astype(int)),
        "auc_pass": auroc(pred, (true == 1).astype(int)),
        "auc_inf": auroc(informative, ((true > 0) & (true < 1)).astype(int)),
        "cal_mae": calibration_mae(pred, true),
    }


# ---------------------------------------------------------------- models

Predictor = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def model_predictor(cfg: FitConfig, ranking_weight: float, inp: Inputs) -> Predictor:
    """Wrap `fit`/`predict` with a fixed config (the real service path)."""

    def run(xtr: np.ndarray, s: np.ndarray, t: np.ndarray, xte: np.ndarray) -> np.ndarray:
        c = FitConfig(**{**cfg.__dict__, "blocks": inp.blocks, "block_gains": inp.gains})
        state = fit(xtr, s, t, ranking_weight=ranking_weight, config=c, max_seconds=60.0)
        return predict(state, xte)

    return run


def constant(xtr: np.ndarray, s: np.ndarray, t: np.ndarray, xte: np.ndarray) -> np.ndarray:
    """Pooled training pass rate for everyone."""
    return np.full(xte.shape[0], s.sum() / t.sum())


def loglen(xtr: np.ndarray, s: np.ndarray, t: np.ndarray, xte: np.ndarray) -> np.ndarray:
    """Logistic fit on log length only (column 0 of the text features)."""
    col = xtr.shape[1] - N_FEATURES
    state = fit(
        xtr[:, col : col + 1],
        s,
        t,
        ranking_weight=0.0,
        config=FitConfig(blocks=(1,), block_gains=(1.0,), l2=0.0),
    )
    return predict(state, xte[:, col : col + 1])


def ridge(inp: Inputs) -> Predictor:
    """Ridge on the same standardised inputs, predicting the observed rate."""

    def run(xtr: np.ndarray, s: np.ndarray, t: np.ndarray, xte: np.ndarray) -> np.ndarray:
        from service.estimator.model import standardisation

        mean, scale = standardisation(xtr, np.ones(len(s), np.float32), inp.blocks, inp.gains)
        m = Ridge(alpha=3.0).fit((xtr - mean) / scale, s / t)
        return np.clip(m.predict((xte - mean) / scale), 1e-3, 1 - 1e-3)

    return run


# ---------------------------------------------------------------- experiments


def md_table(title: str, rows: list[tuple[str, dict[str, float]]]) -> str:
    """Render metric rows as a markdown table."""
    cols = ["spearman", "auc_fail", "auc_pass", "auc_inf", "cal_mae"]
    lines = [
        f"\n### {title}\n",
        "| model | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for name, m in rows:
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.3f}" for c in cols) + " |")
    return "\n".join(lines)


def predictors(inp: Inputs, quick: bool) -> list[tuple[str, Predictor]]:
    """The baselines and model variants evaluated for one input set."""
    base = FitConfig()
    out: list[tuple[str, Predictor]] = [
        ("constant", constant),
        ("log length (logistic)", loglen),
        (f"ridge [{inp.name}+feats]", ridge(inp)),
        (f"model, no ranking [{inp.name}]", model_predictor(base, 0.0, inp)),
        (f"model, ranking w=3 [{inp.name}]", model_predictor(base, 3.0, inp)),
    ]
    if not quick:
        out.append((f"model, ranking w=0.3 [{inp.name}]", model_predictor(base, 0.3, inp)))
        mlp = FitConfig(hidden=64, l2=1e-3)
        out.append((f"MLP-64, no ranking [{inp.name}]", model_predictor(mlp, 0.0, inp)))
    if not quick and inp.name == "hybrid":
        out.append(("ref: model + RBF kernel ridge on MiniLM (memory-based)", kernel_blend(inp)))
    return out


def kernel_blend(inp: Inputs) -> Predictor:
    """Reference only: average the model with RBF kernel ridge on the MiniLM block.

    Kernel ridge needs the training embeddings at predict time (O(n_train) per row),
    so it cannot meet the 100 ms / 100k-row budget; it shows what locality adds.
    """
    from sklearn.kernel_ridge import KernelRidge

    lo = inp.blocks[0]
    hi = lo + inp.blocks[1]
    linear = model_predictor(FitConfig(), 0.0, inp)

    def run(xtr: np.ndarray, s: np.ndarray, t: np.ndarray, xte: np.ndarray) -> np.ndarray:
        m_tr = xtr[:, lo:hi] / np.linalg.norm(xtr[:, lo:hi], axis=1, keepdims=True)
        m_te = xte[:, lo:hi] / np.linalg.norm(xte[:, lo:hi], axis=1, keepdims=True)
        y = s / t
        krr = KernelRidge(alpha=1.0, kernel="rbf", gamma=2.0).fit(m_tr, y - y.mean())
        k = np.clip(krr.predict(m_te) + y.mean(), 1e-3, 1 - 1e-3)
        return 0.5 * (k + linear(xtr, s, t, xte))

    return run


def deepscaler(which: str, quick: bool, seed: int) -> None:
    """Cold start on held-out DeepScaleR problems: true labels vs one group of 8."""
    rows = load_jsonl(DATA / "deepscaler_passrate_dev.jsonl")
    texts = [str(r["problem"]) for r in rows]
    succ = np.array([r["successes"] for r in rows], dtype=np.float32)
    samples = np.array([r["samples"] for r in rows], dtype=np.float32)
    p = succ / samples
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(rows))
    if quick:  # the file is not shuffled, so subsample at random (embeddings stay cached)
        perm = perm[:5000]
    tr, te = perm[: int(0.8 * len(perm))], perm[int(0.8 * len(perm)) :]
    print(f"\n## DeepScaleR cold start: train {len(tr)}, test {len(te)} (seed {seed})")
    feats = text_features(texts)
    group = rng.binomial(GROUP, p).astype(np.float32)
    regimes = {
        "true pass rate (128 samples)": (succ, samples),
        f"one group of {GROUP} per prompt": (group, np.full_like(succ, GROUP)),
    }
    for inp in build_inputs(texts, which, feats):
        for regime, (s, t) in regimes.items():
            table = []
            for name, fn in predictors(inp, quick):
                t0 = time.perf_counter()
                pred = np.asarray(fn(inp.x[tr], s[tr], t[tr], inp.x[te]), dtype=np.float64)
                table.append((name, metrics(pred, p[te])))
                print(
                    f"  {inp.name} / {regime} / {name}: {time.perf_counter() - t0:.1f}s",
                    file=sys.stderr,
                    flush=True,
                )
            print(md_table(f"{inp.name}: fit on {regime}; test = true pass rate", table))


def math_levels(which: str) -> None:
    """Spearman against MATH level: fit on train with p = 1 - (level-1)/4, test on MATH500."""
    rows = load_jsonl(DATA / "math_levels.jsonl")
    texts = [str(r["problem"]) for r in rows]
    level = np.array([r["level"] for r in rows], dtype=np.float32)
    split = np.array([r["split"] for r in rows])
    tr, te = np.where(split == "train")[0], np.where(split == "test")[0]
    pseudo = np.clip(1.0 - (level - 1.0) / 4.0, 0.05, 0.95)
    s, t = (pseudo * GROUP).astype(np.float32), np.full(len(rows), GROUP, np.float32)
    print(
        f"\n## MATH levels: train {len(tr)}, test {len(te)} (MATH500); pseudo p = "
        "clip(1-(level-1)/4, .05, .95) as 8 trials; Spearman(pred, -level)\n"
    )
    print("| inputs | log length | ridge | model, no ranking | model, ranking w=3 |")
    print("|---|---|---|---|---|")
    for inp in build_inputs(texts, which, text_features(texts)):
        cells = []
        for fn in (
            loglen,
            ridge(inp),
            model_predictor(FitConfig(), 0.0, inp),
            model_predictor(FitConfig(), 3.0, inp),
        ):
            pred = fn(inp.x[tr], s[tr], t[tr], inp.x[te])
            cells.append(f"{spearmanr(pred, -level[te])[0]:.3f}")
        print(f"| {inp.name} | " + " | ".join(cells) + " |")


def timings(which: str) -> None:
    """Throughput checks against the service budgets."""
    rows = load_jsonl(DATA / "deepscaler_passrate_dev.jsonl")
    texts = [str(r["problem"]) for r in rows]
    big = (texts * 3)[:30000]
    h = HashingEmbedder()
    t0 = time.perf_counter()
    hx = h.embed(big)
    t_hash = time.perf_counter() - t0
    t0 = time.perf_counter()
    text_features(big)
    t_feat = time.perf_counter() - t0
    dim = hx.shape[1] + (384 if which == "both" else 0) + N_FEATURES
    rng = np.random.default_rng(0)
    x50 = (rng.standard_normal((50000, dim)) / np.sqrt(dim)).astype(np.float32)
    p50 = 1 / (1 + np.exp(-x50[:, :8].sum(1) * 3))
    s50 = rng.binomial(GROUP, p50).astype(np.float32)
    t50 = np.full(50000, GROUP, np.float32)
    blocks = (dim - N_FEATURES, N_FEATURES)
    warmup()  # one-off torch imports, paid at service start
    cfg = FitConfig(blocks=blocks)
    t0 = time.perf_counter()
    state = fit(x50, s50, t50, config=cfg)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit(x50, s50, t50, config=cfg, init=state)
    t_refit = time.perf_counter() - t0
    long = fit(x50, s50, t50, config=cfg, max_seconds=120.0)
    agree = spearmanr(predict(state, x50[:5000]), predict(long, x50[:5000]))[0]
    truth = spearmanr(predict(state, x50[:5000]), p50[:5000])[0]
    truth_long = spearmanr(predict(long, x50[:5000]), p50[:5000])[0]
    prompts = rng.integers(0, 10000, size=50000)  # 50k outcomes on 10k prompts
    t0 = time.perf_counter()
    fit(x50[prompts], s50[prompts], t50, config=cfg)
    t_dup = time.perf_counter() - t0
    x100 = rng.standard_normal((100000, dim)).astype(np.float32)
    predict(state, x100[:100])
    t_pred = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        predict(state, x100)
        t_pred = min(t_pred, time.perf_counter() - t0)
    print(f"\n## Timings (2 CPU cores, input width {dim})\n")
    print("| what | measured | budget |\n|---|---|---|")
    print(
        f"| hashing embed 30,000 texts | {t_hash:.2f}s ({30000 / t_hash:,.0f} texts/s) | "
        "15 s, 5,000/s |"
    )
    print(f"| text features 30,000 texts | {t_feat:.2f}s | - |")
    print(f"| fit 50,000 outcomes, cold (ranking w=3) | {t_fit:.2f}s | 5 s |")
    print(f"| refit 50,000 outcomes, warm start | {t_refit:.2f}s | 5 s |")
    print(
        f"| capped cold fit vs converged fit ({long.meta['fit_seconds']:.0f}s): Spearman "
        f"between predictions | {agree:.3f} (vs truth {truth:.3f} / {truth_long:.3f}) | - |"
    )
    print(f"| fit 50,000 outcomes on 10,000 prompts (duplicates merged) | {t_dup:.2f}s | 5 s |")
    print(f"| predict 100,000 rows (best of 3) | {1000 * t_pred:.0f} ms | 100 ms |")
    if which in ("minilm", "both"):
        m = MiniLMEmbedder(num_threads=2)
        m.embed(texts[:2])
        t0 = time.perf_counter()
        m.embed(texts[:200])
        t_m = time.perf_counter() - t0
        print(f"| minilm embed 200 texts | {t_m:.2f}s ({200 / t_m:.0f} texts/s) | - |")


def main() -> None:
    """Parse arguments and run the evaluations."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--embedder", choices=["hashing", "minilm", "both"], default="both")
    ap.add_argument("--quick", action="store_true", help="5,000 problems, fewer variants")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-timings", action="store_true")
    ap.add_argument("--timings-only", action="store_true")
    args = ap.parse_args()
    if args.timings_only:
        timings(args.embedder)
        return
    deepscaler(args.embedder, args.quick, args.seed)
    if not args.quick:
        math_levels(args.embedder)
    if not args.skip_timings:
        timings(args.embedder)


if __name__ == "__main__":
    main()
