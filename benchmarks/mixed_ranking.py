"""Which unseen prompts give mixed groups: the pass-rate regressor's ranking against a classifier's.

Run: `.venv/bin/python -m benchmarks.mixed_ranking [--seeds 3]`.

On deepscaler_passrate_dev with the service's `ngrams` inputs: a random `seen` prompts each get one
simulated group of 8 at their true pass rate; the rest are unseen. Two rankings of the unseen:
the P(mixed) of a ridge regressor's pass rate (the service's pass-rate model is a binomial
likelihood on the same inputs; ridge on logits ranks alike), and the service's own mixed-group
classifier (`service/estimator/mixed.py`), trained on whether each seen group was mixed. Printed:
the true P(mixed) of the top tenth and top third of each ranking, the pool's, and the oracle's
top tenth.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import Ridge

from benchmarks.eval_predictor import DATA
from service.estimator.embedders import get_embedder
from service.estimator.mixed import fit_predict, mixed_targets

G = 8


def p_mixed(q: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1 - q**G - (1 - q) ** G
    return out


def top(score: np.ndarray, truth: np.ndarray, share: float) -> float:
    n = max(1, int(len(score) * share))
    return float(p_mixed(truth[np.argsort(-score)[:n]]).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seen", default="1000,3000,6000")
    args = ap.parse_args()
    rows = [json.loads(line) for line in (DATA / "deepscaler_passrate_dev.jsonl").open()]
    p = np.array([r["pass_rate"] for r in rows])
    x = sp.csr_matrix(get_embedder("ngrams").embed([r["problem"] for r in rows]))
    print("| seen prompts | ranking | true P(mixed), top tenth | top third |")
    print("|---|---|---|---|")
    for n_seen in (int(v) for v in args.seen.split(",")):
        got: dict[str, list[tuple[float, float]]] = {"regressor": [], "classifier": []}
        pool, oracle = [], []
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            perm = rng.permutation(len(p))
            s, u = perm[:n_seen], perm[n_seen:]
            k = rng.binomial(G, p[s]).astype(float)
            r = (k + 0.5) / (G + 1)
            rate = 1 / (1 + np.exp(-Ridge(alpha=3.0).fit(x[s], np.log(r / (1 - r))).predict(x[u])))
            clf = fit_predict(x[s], mixed_targets(k, np.full(len(s), float(G))), x[u])
            assert clf is not None
            for name, score in (("regressor", p_mixed(rate)), ("classifier", clf)):
                got[name].append((top(score, p[u], 0.1), top(score, p[u], 1 / 3)))
            pool.append(float(p_mixed(p[u]).mean()))
            oracle.append(top(p_mixed(p[u]), p[u], 0.1))
        for name, vals in got.items():
            a, b = np.mean(vals, axis=0)
            print(f"| {n_seen:,} | {name} | {a:.3f} | {b:.3f} |")
        print(f"| {n_seen:,} | pool / oracle | {np.mean(pool):.3f} / {np.mean(oracle):.3f} | |")


if __name__ == "__main__":
    main()
