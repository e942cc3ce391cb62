"""Split a rollout budget across a batch: more rollouts where a small group would be all-equal."""

from __future__ import annotations

import numpy as np

from service.estimator.beta import p_mixed
from service.selection.strategies import FloatArray, IntArray


def allocate(alpha: FloatArray, beta: FloatArray, total: int, n_min: int, n_max: int) -> IntArray:
    """Most expected mixed groups for `total` rollouts; each prompt gets n_min..n_max.

    The gain of one more rollout shrinks as n grows (the objective is concave in n), so
    taking the largest marginal gains across all prompts is optimal.
    """
    k = len(alpha)
    n = np.full(k, n_min, dtype=np.int64)
    extra = min(total - n_min * k, (n_max - n_min) * k)
    if extra <= 0 or k == 0:
        return n
    p = p_mixed(alpha[:, None], beta[:, None], np.arange(n_min, n_max + 1, dtype=np.int64)[None, :])
    gains = np.diff(p, axis=1)
    # tiny tie-break towards earlier increments keeps every row's choice a prefix
    gains = gains - 1e-12 * np.arange(gains.shape[1])[None, :]
    top = np.argpartition(gains.ravel(), -extra)[-extra:]
    n += np.bincount(top // gains.shape[1], minlength=k)
    return n
