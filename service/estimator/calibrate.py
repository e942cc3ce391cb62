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
# a known difficulty's weight, in logit per logit of the label: 1 takes it as given, 0 ignores
# it, below 0 reads it backwards; fitted on held-out prompts when enough of them are labelled
LABEL_GRID = np.linspace(-1.0, 2.0, 61)
LABEL_AS_GIVEN = 1.0
MIN_LABELLED = 20
LABEL_CLIP = 0.02


def label_logits(labels: npt.ArrayLike) -> F64:
    """Known difficulties (pass rates, NaN: none) on the logit scale the predictor works in."""
    p = np.clip(np.asarray(labels, dtype=np.float64), LABEL_CLIP, 1 - LABEL_CLIP)
    out: F64 = np.log(p / (1 - p))
    return out


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
    label: F64 | None = None,
) -> PredictorState:
    """Fit on 80% of rows, choose the shrink on the other 20%, store it in the state's meta.

    `logprob` (NaN where a prompt has none) trains the model's second output, DEPO's
    distillation head. `label` (label logits, NaN where a prompt has none) joins the
    calibration as a second input: its weight is chosen with the shrink on the held-out rows.
    """
    n = x.shape[0]
    labelled = label is not None and bool(np.isfinite(label).any())
    if n < MIN_ROWS:
        state = fit(
            x, succ, trials, init=init, config=config, max_seconds=max_seconds, logprob=logprob
        )
        if labelled:
            assert label is not None
            rate = float(np.clip(succ.sum() / trials.sum(), 0.01, 0.99))
            state.meta["calibration"] = {
                "centre": float(np.log(rate / (1 - rate))),
                "scale": 1.0,
                "label_weight": LABEL_AS_GIVEN,
                "label_centre": float(np.nanmean(label)),
            }
        return state
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
    cal: dict[str, float] = {"centre": centre}
    offset = np.zeros_like(z)
    if labelled:
        assert label is not None
        cal["label_centre"] = float(np.nanmean(label))
        d = label[hold] - cal["label_centre"]
        known = np.isfinite(d)
        d = np.where(known, d, 0.0)
        weights = LABEL_GRID if known.sum() >= MIN_LABELLED else np.array([LABEL_AS_GIVEN])
        losses = np.array(
            [
                [_nll(centre + c * (z - centre) + w * d, succ[hold], trials[hold]) for c in GRID]
                for w in weights
            ]
        )
        best_w, best_c = np.unravel_index(int(np.argmin(losses)), losses.shape)
        cal["label_weight"] = float(weights[best_w])
        offset = cal["label_weight"] * d
        scale = float(GRID[best_c])
    else:
        losses1 = [_nll(centre + c * (z - centre), succ[hold], trials[hold]) for c in GRID]
        scale = float(GRID[int(np.argmin(losses1))])
    m = 1.0 / (1.0 + np.exp(-(centre + scale * (z - centre) + offset)))
    cal |= {"scale": scale, "strength": prior_strength(m, succ[hold], trials[hold])}
    state.meta["calibration"] = cal
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


def predict_rates(
    state: PredictorState, x: Matrix, label: F64 | None = None
) -> npt.NDArray[np.float32]:
    """Pass rates with the state's calibration applied (none for states fitted without it).

    `label`: the rows' label logits (NaN: none), added at the weight the calibration learned.
    """
    z = predict_logit(state, x).astype(np.float64)
    cal = state.meta.get("calibration")
    if cal:
        z = cal["centre"] + cal["scale"] * (z - cal["centre"])
        z += label_offset(cal, label)
    out: npt.NDArray[np.float32] = (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    return out


def label_offset(cal: dict[str, float], label: F64 | None) -> F64 | float:
    """What the rows' known difficulties add to their calibrated logits: 0 where they have none."""
    if label is None or "label_weight" not in cal:
        return 0.0
    d = label - cal["label_centre"]
    out: F64 = np.where(np.isfinite(d), cal["label_weight"] * d, 0.0)
    return out
