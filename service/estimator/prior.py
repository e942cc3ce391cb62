"""A version's per-prompt predictions as a Beta prior: the part of an estimate before history."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.estimator.exposure import Shifts
from service.policy import SelectionConfig

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

DEFAULT_STRENGTH = 2.0


@dataclass(frozen=True)
class Prior:
    """What selection needs from a version: rates per prompt idx and the served-prompt drift.

    Version 0 is no fit: the prompts' known difficulties before the run's first fit.
    """

    version: int
    rates: F32
    drift: float
    strength: float | None = None
    tracked: Shifts | None = None  # per-prompt training since its evidence (tracking)
    mixed: F32 | None = None  # per-prompt P(mixed) of the mixed-group classifier (NaN: none)
    history_strength: float | None = None  # learned kappa of `history_from` counts, if any


def label_prior(labels: F32, cfg: SelectionConfig) -> Prior:
    """Known difficulties as the prior mean, worth as many pseudo-counts as the flat prior."""
    return Prior(version=0, rates=labels, drift=0.0, strength=cfg.prior_alpha + cfg.prior_beta)


def strength(cfg: SelectionConfig, prior: Prior | None, *, selecting: bool = False) -> float:
    """The run's fixed prior strength if set, else the one the newest fit estimated.

    Selection floors the estimated one at `min_prior_strength`: see SelectionConfig.
    """
    if cfg.prior_strength is not None:
        return cfg.prior_strength
    k = (prior.strength if prior is not None else None) or DEFAULT_STRENGTH
    return max(k, cfg.min_prior_strength) if selecting else k


def prior_pseudo_counts(
    cfg: SelectionConfig,
    prior: Prior | None,
    idx: npt.NDArray[np.int64],
    *,
    selecting: bool = False,
) -> tuple[F64, F64]:
    """Beta prior per prompt: the predicted rate at `prior_strength` pseudo-counts, or the run's."""
    a0 = np.full(len(idx), cfg.prior_alpha)
    b0 = np.full(len(idx), cfg.prior_beta)
    if prior is not None and len(idx):
        inside = idx < len(prior.rates)
        m = np.full(len(idx), np.nan)
        m[inside] = prior.rates[idx[inside]]
        ok = ~np.isnan(m)
        m = np.clip(m, 0.01, 0.99)
        k = strength(cfg, prior, selecting=selecting)
        a0[ok] = m[ok] * k
        b0[ok] = (1 - m[ok]) * k
    return a0, b0
