"""Hold a fifth of the prompts out of each fit and shrink predictions by what they show.

A linear model on thousands of hashed features, fitted to a few hundred noisy groups, ranks
prompts usefully but spreads its predictions far too wide; as a Beta prior that would drown
the prompt's own history. One scale factor toward the mean, chosen on held-out prompts by
binomial likelihood, keeps the ranking and makes the rates honest.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from service.estimator import FitConfig, PredictorState, fit, predict_logit
from service.estimator.sparse import Matrix

F64 = npt.NDArray[np.float64]
MIN_ROWS = 100
# Pass rates on real data are U-shaped (a fifth of DeepScaleR never passes), so the calibrated
# strength can be well below 2; selection floors it separately (min_prior_strength).
MIN_STRENGTH, MAX_STRENGTH = 0.2, 50.0
GRID = np.linspace(0.0, 1.2, 25)


def _nll(z: F64, succ: F64, trials: F64) -> float:
    p = np.clip(1.0 / (1.0 + np.exp(-z)), 1e-6, 1 - 1e-6)
    return float(-(succ * np.log(p) + (trials - succ) * np.log(1 - p)).sum())


def fit_calibrated(
    x: Matrix,
    succ: F64,
    trials: F64,
    *,
    init: PredictorState | None,
    config: FitConfig,
    max_seconds: float = 4.0,
    logprob: F64 | None = None,
) -> PredictorState:
    """Fit on 80% of rows, choose the shrink on the other 20%, store it in the state's meta.

    `logprob` (NaN where a prompt has none) trains the model's second output, DEPO's
    distillation head.
    """
    n = x.shape[0]
    if n < MIN_ROWS:
        return fit(
            x, succ, trials, init=init, config=config, max_seconds=max_seconds, logprob=logprob
        )
    hold = np.arange(n) % 5 == 0
    train = np.flatnonzero(~hold)  # index arrays, not masks: x may be a sparse matrix
    state = fit(
        x[train],
        succ[~hold],
        trials[~hold],
        init=init,
        config=config,
        max_seconds=max_seconds,
        logprob=None if logprob is None else logprob[~hold],
    )
    rate = float(np.clip(succ[~hold].sum() / trials[~hold].sum(), 0.01, 0.99))
    centre = float(np.log(rate / (1 - rate)))
    z = predict_logit(state, x[np.flatnonzero(hold)]).astype(np.float64)
    losses = [_nll(centre + c * (z - centre), succ[hold], trials[hold]) for c in GRID]
    scale = float(GRID[int(np.argmin(losses))])
    m = 1.0 / (1.0 + np.exp(-(centre + scale * (z - centre))))
    state.meta["calibration"] = {
        "centre": centre,
        "scale": scale,
        "strength": prior_strength(m, succ[hold], trials[hold]),
    }
    return state


def prior_strength(m: F64, succ: F64, trials: F64) -> float:
    """Empirical-Bayes pseudo-count of the prediction: how many rollouts it is worth.

    With p ~ Beta(k m, k (1 - m)), Var(p | m) = m (1 - m) / (k + 1). The squared error of
    the observed rate k/n adds binomial noise E[p (1 - p)] / n on top; solving for k gives
    the strength at which the prior neither drowns nor ignores the prompt's own history.
    """
    rate = succ / trials
    err = float(np.mean((rate - m) ** 2))
    spread = float(np.mean(m * (1 - m)))
    n = float(len(trials) / np.sum(1.0 / trials))
    between = (err - spread / n) / (1 - 1 / n) if n > 1 else err
    if between <= 0:
        return MAX_STRENGTH
    return float(np.clip(spread / between - 1.0, MIN_STRENGTH, MAX_STRENGTH))


def predict_rates(state: PredictorState, x: Matrix) -> npt.NDArray[np.float32]:
    """Pass rates with the state's calibration applied (none for states fitted without it)."""
    z = predict_logit(state, x).astype(np.float64)
    cal = state.meta.get("calibration")
    if cal:
        z = cal["centre"] + cal["scale"] * (z - cal["centre"])
    out: npt.NDArray[np.float32] = (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    return out
