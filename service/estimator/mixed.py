"""Which never-run prompts will give a mixed group: a classifier beside the pass-rate model.

A pass-rate regressor regresses to the middle, so ranking unseen prompts by the P(mixed) of
its prediction picks barely better than chance (DeepScaleR: 0.50 against 0.46 for the pool,
top tenth). A logistic model of "its groups so far were mixed" picks 0.54-0.57 from the same
text: it learns what makes a prompt unsolvable (or trivial) for this policy, which difficulty
alone does not say. Selection uses it only to order unseen prompts (selection/strategies.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from service.estimator.features import N_FEATURES
from service.estimator.sparse import as_inputs

F32 = npt.NDArray[np.float32]

MIN_EACH_CLASS = 20
"""Fewer mixed or fewer all-equal prompts than this and there is nothing to learn yet."""

C = 1.0
"""Inverse L2 strength; 0.3-3 measured alike on DeepScaleR with n-gram inputs."""

MAX_ROWS = 10_000
"""A larger run trains on a fixed random sample: the fit stays a few seconds at any size."""


def mixed_targets(
    successes: npt.NDArray[np.float64], rollouts: npt.NDArray[np.float64]
) -> npt.NDArray[np.int64]:
    """1 where a prompt's outcomes so far were neither all right nor all wrong."""
    out: npt.NDArray[np.int64] = ((successes > 0) & (successes < rollouts)).astype(np.int64)
    return out


def fit_predict(
    x_train: Any,
    y: npt.NDArray[np.int64],
    x_all: Any,
    labels_train: npt.NDArray[np.float64] | None = None,
    labels_all: npt.NDArray[np.float64] | None = None,
) -> F32 | None:
    """P(mixed) for every row of `x_all`, learned on the prompts with history; None if too few.

    Only the embedding block: the trailing text features are unscaled counts. Known
    difficulties (label logits, NaN: none) join as how extreme the label is and whether any.
    """
    ones = int(y.sum())
    if min(ones, len(y) - ones) < MIN_EACH_CLASS:
        return None
    rows = np.arange(len(y))
    if len(y) > MAX_ROWS:
        rows = np.sort(np.random.default_rng(0).choice(len(y), MAX_ROWS, replace=False))
    model = LogisticRegression(C=C, max_iter=300)
    train = _embedding(x_train[rows])  # one conversion: `_embedding` makes it CSR or dense
    test = _embedding(x_all)
    if labels_train is not None and labels_all is not None:
        train = _with_labels(train, labels_train[rows])
        test = _with_labels(test, labels_all)
    model.fit(train, y[rows])
    out: F32 = model.predict_proba(test)[:, 1].astype(np.float32)
    return out


def _with_labels(x: Any, logits: npt.NDArray[np.float64]) -> Any:
    """P(mixed) falls with |logit|: the label's square and a missing flag, beside the text."""
    known = np.isfinite(logits)
    cols = np.column_stack([np.where(known, logits, 0.0) ** 2, ~known]).astype(np.float32)
    return (
        sp.hstack([x, sp.csr_matrix(cols)], format="csr")
        if sp.issparse(x)
        else np.hstack([x, cols])
    )


def _embedding(x: Any) -> Any:
    x = as_inputs(x)
    return x[:, : x.shape[1] - N_FEATURES] if x.shape[1] > N_FEATURES else x
