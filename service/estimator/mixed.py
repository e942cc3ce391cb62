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


def enough(y: npt.NDArray[np.int64]) -> bool:
    """Both classes seen often enough to learn which prompts give mixed groups."""
    ones = int(y.sum())
    return min(ones, len(y) - ones) >= MIN_EACH_CLASS


def sample(n: int) -> npt.NDArray[np.int64]:
    """The training rows: all, or a fixed random MAX_ROWS of them."""
    if n <= MAX_ROWS:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, MAX_ROWS, replace=False))


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
    if not enough(y):
        return None
    rows = sample(len(y))
    train = embedding_block(as_inputs(x_train)[rows])
    return predict(
        train,
        y[rows],
        embedding_block(x_all),
        None if labels_train is None else labels_train[rows],
        labels_all,
    )


def predict(
    train: Any,
    y: npt.NDArray[np.int64],
    test: Any,
    labels_train: npt.NDArray[np.float64] | None = None,
    labels_test: npt.NDArray[np.float64] | None = None,
) -> F32:
    """Fit on embedding-block rows (already sampled), P(mixed) for each `test` row."""
    model = LogisticRegression(C=C, max_iter=300)
    if labels_train is not None and labels_test is not None:
        train = _with_labels(train, labels_train)
        test = _with_labels(test, labels_test)
    model.fit(train, y)
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


def embedding_block(x: Any) -> Any:
    """Model inputs without the trailing text features (all of them if that is all there is)."""
    x = as_inputs(x)
    return x[:, : x.shape[1] - N_FEATURES] if x.shape[1] > N_FEATURES else x
