"""Which text features could lift cold-start Spearman: research for the predictor, not the service.

Run: `.venv/bin/python -m benchmarks.cold_start_features [--no-minilm] [--seed 0]`.

Same split as `benchmarks/eval_predictor.py` (80/20 of deepscaler_passrate_dev, seed 0), ridge
on each recipe, fitted on the true pass rates and on one simulated group of 8 per prompt, tested
on the true pass rates of the held-out fifth. Ridge is the yardstick: on the dense inputs the
service's torch model matches it. Prints a markdown table, then what a sparse block would cost.

`--torch` adds the service's own loss (binomial likelihood, optionally DEPO's ranking hinge) on the
sparse block + text features, fitted by L-BFGS within the service's 4 s budget. torch's own sparse
matmul makes each evaluation too slow to converge in that time; a custom autograd op on scipy
CSR (X for the forward pass, X^T for the gradient) converges in it.

Finding: most of the signal the dense inputs miss sits in the long tail of word n-grams.
Keeping only the most frequent n-grams (a dense vocabulary) loses it; hashing them into 2,048
buckets loses it to collisions; a sparse 2^18-wide block keeps it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TypeAlias

import numpy as np
import scipy.sparse as sp
import torch
from scipy.stats import spearmanr
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import Ridge

from benchmarks.eval_predictor import DATA, GROUP, load_jsonl, minilm_cached
from service.estimator import HashingEmbedder, text_features

SPARSE_WIDTH = 2**18
TOKENS = HashingEmbedder.TOKEN_PATTERN
Matrix: TypeAlias = np.ndarray | sp.csr_matrix


def _l2_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    out: sp.csr_matrix = (sp.diags(1.0 / np.maximum(norms, 1e-12)) @ m).tocsr()
    return out


def word_ngrams(texts: list[str]) -> sp.csr_matrix:
    """Stateless: log1p counts of hashed word/LaTeX 1-3 grams, rows at unit norm."""
    vec = HashingVectorizer(
        ngram_range=(1, 3),
        n_features=SPARSE_WIDTH,
        alternate_sign=False,
        norm=None,
        token_pattern=TOKENS,
    )
    m = vec.transform(texts).astype(np.float32).tocsr()
    m.data = np.log1p(m.data)
    return _l2_rows(m)


def idf(m: sp.csr_matrix) -> np.ndarray:
    """Inverse document frequency over the whole dataset (unsupervised: every text is known)."""
    df = np.bincount(m.indices, minlength=m.shape[1])
    out: np.ndarray = (np.log((1 + m.shape[0]) / (1 + df)) + 1).astype(np.float32)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-minilm", action="store_true", help="skip recipes that need MiniLM")
    ap.add_argument("--torch", action="store_true", help="also fit the service's loss on sparse")
    args = ap.parse_args()

    rows = load_jsonl(DATA / "deepscaler_passrate_dev.jsonl")
    texts = [str(r["problem"]) for r in rows]
    succ = np.array([r["successes"] for r in rows], dtype=np.float64)
    p = succ / np.array([r["samples"] for r in rows], dtype=np.float64)
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(len(rows))
    tr, te = perm[: int(0.8 * len(perm))], perm[int(0.8 * len(perm)) :]
    labels = {"true": p, f"k/{GROUP}": rng.binomial(GROUP, p) / GROUP}

    feats = text_features(texts)
    feats = (feats - feats[tr].mean(0)) / (feats[tr].std(0) + 1e-6) * 0.1
    dense_hash = HashingEmbedder().embed(texts)
    t0 = time.perf_counter()
    words = word_ngrams(texts)
    t_words = time.perf_counter() - t0
    weights = idf(words)
    sparse = _l2_rows((words @ sp.diags(weights)).tocsr())
    by_df = np.argsort(-np.bincount(words.indices, minlength=SPARSE_WIDTH))[:16384]
    top = _l2_rows((words[:, by_df] @ sp.diags(weights[by_df])).tocsr())
    minilm = None if args.no_minilm else minilm_cached(texts)

    recipes: list[tuple[str, Callable[[], Matrix], float]] = [
        (
            "`hashing` today: 2,048 dense buckets + text features",
            lambda: np.hstack([dense_hash, feats]),
            3.0,
        ),
        (
            "word 1-3 grams, 16,384 most frequent (dense-able) + idf",
            lambda: sp.hstack([top, feats]).tocsr(),
            2.0,
        ),
        (
            "word 1-3 grams, sparse 2^18 + idf + text features",
            lambda: sp.hstack([sparse, feats]).tocsr(),
            1.0,
        ),
    ]
    if minilm is not None:
        recipes += [
            (
                "`hybrid` today: 2,048 buckets + MiniLM + text features",
                lambda: np.hstack([dense_hash / np.sqrt(2), minilm / np.sqrt(2), feats]),
                3.0,
            ),
            (
                "16,384 most frequent n-grams + MiniLM x 0.5",
                lambda: sp.hstack([top, sp.csr_matrix(0.5 * minilm), feats]).tocsr(),
                2.0,
            ),
            (
                "sparse 2^18 n-grams + MiniLM x 0.5 + text features",
                lambda: sp.hstack([sparse, sp.csr_matrix(0.5 * minilm), feats]).tocsr(),
                2.0,
            ),
        ]
    print(
        f"\n## Cold start by feature recipe (ridge; train {len(tr)}, test {len(te)}, seed {args.seed})\n"
    )
    print(
        "| recipe | ridge alpha | Spearman, fitted on true rates | Spearman, fitted on one group of 8 |"
    )
    print("|---|---|---|---|")
    for name, build, alpha in recipes:
        x = build()
        cells = []
        for y in labels.values():
            model = Ridge(alpha=alpha).fit(x[tr], y[tr])
            cells.append(f"{spearmanr(model.predict(x[te]), p[te]).statistic:.3f}")
        print(f"| {name} | {alpha:g} | " + " | ".join(cells) + " |", flush=True)
        print(f"  done: {name}", file=sys.stderr, flush=True)

    if args.torch:
        t = {"true": 128.0, f"k/{GROUP}": float(GROUP)}
        print("\n## Service loss on sparse n-grams + text features (L-BFGS, 4 s budget)\n")
        print(
            "| loss | l2 | Spearman, true rates | Spearman, one group of 8 | evaluations in 4 s |"
        )
        print("|---|---|---|---|---|")
        for rank_weight, l2 in ((0.0, 1e-5), (3.0, 3e-4)):
            cells, evals = [], 0
            for name, y in labels.items():
                z, evals = _torch_fit(sparse, feats, y * t[name], t[name], tr, te, l2, rank_weight)
                cells.append(f"{spearmanr(z, p[te]).statistic:.3f}")
            loss = "binomial" + (f" + ranking x {rank_weight:g}" if rank_weight else "")
            print(f"| {loss} | {l2:g} | " + " | ".join(cells) + f" | {evals} |", flush=True)

    big = (sparse.tocsr()[np.arange(100_000) % sparse.shape[0]]).tocsr()
    w = np.random.default_rng(0).standard_normal(SPARSE_WIDTH).astype(np.float32)
    t_pred = min(_timed(lambda: big @ w) for _ in range(3))
    print("\n## What a sparse block costs (2 cores)\n")
    print("| what | measured | service budget |\n|---|---|---|")
    print(
        f"| hash word 1-3 grams of {len(texts):,} texts | {t_words:.1f} s ({len(texts) / t_words:,.0f}/s) | 5,000/s |"
    )
    print(
        f"| non-zeros per prompt | {words.nnz / words.shape[0]:.0f} (~{6 * words.nnz / words.shape[0] / 1024:.1f} KiB stored as int32 + float16) | - |"
    )
    print(f"| sparse part of predicting 100,000 prompts | {1000 * t_pred:.0f} ms | 100 ms in all |")


class _SparseMatVec(torch.autograd.Function):
    """X @ w with the gradient X^T @ g, both on scipy CSR (torch's sparse backward is slow)."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        w: torch.Tensor,
        x: sp.csr_matrix,
        xt: sp.csr_matrix,
    ) -> torch.Tensor:
        ctx.xt = xt  # type: ignore[attr-defined]
        return torch.from_numpy(x @ w.detach().numpy())

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, g: torch.Tensor
    ) -> tuple[torch.Tensor, None, None]:
        return torch.from_numpy(ctx.xt @ g.detach().numpy()), None, None  # type: ignore[attr-defined]


def _torch_fit(
    sparse: sp.csr_matrix,
    dense: np.ndarray,
    succ: np.ndarray,
    trials: float,
    tr: np.ndarray,
    te: np.ndarray,
    l2: float,
    rank_weight: float,
    seconds: float = 4.0,
) -> tuple[np.ndarray, int]:
    """Binomial likelihood (+ ranking hinge, margin 0.5, min gap 0.05) on [dense || sparse]."""
    torch.set_num_threads(2)
    x = sparse[tr].astype(np.float32).tocsr()
    xt = x.T.tocsr()
    xd = torch.from_numpy(dense[tr].astype(np.float32))
    s = torch.from_numpy(succ[tr].astype(np.float32))
    wd = torch.zeros(dense.shape[1], requires_grad=True)
    ws = torch.zeros(sparse.shape[1], requires_grad=True)
    pooled = float(succ[tr].sum() / (trials * len(tr)))
    b = torch.tensor([np.log(pooled / (1 - pooled))], dtype=torch.float32, requires_grad=True)
    rates = succ[tr] / trials
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(tr), (2, 4 * len(tr)))
    gap = rates[j] - rates[i]
    ok = np.abs(gap) >= 0.05
    lo = torch.from_numpy(np.where(gap > 0, i, j)[ok])
    hi = torch.from_numpy(np.where(gap > 0, j, i)[ok])
    opt = torch.optim.LBFGS(
        [wd, ws, b], max_iter=20, history_size=20, line_search_fn="strong_wolfe"
    )
    evals = 0

    def closure() -> torch.Tensor:
        nonlocal evals
        evals += 1
        opt.zero_grad()
        sparse_part = _SparseMatVec.apply(ws, x, xt)  # type: ignore[no-untyped-call]
        z = xd @ wd + sparse_part + b
        f = torch.nn.functional.logsigmoid
        loss = -(s * f(z) + (trials - s) * f(-z)).sum() / (trials * len(tr))
        loss = loss + l2 * (wd.square().sum() + ws.square().sum())
        if rank_weight > 0:
            loss = loss + rank_weight * torch.relu(0.5 - (z[hi] - z[lo])).mean()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        opt.step(closure)  # type: ignore[no-untyped-call]
    z = dense[te] @ wd.detach().numpy() + sparse[te] @ ws.detach().numpy()
    return np.asarray(z), evals


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
