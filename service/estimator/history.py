"""Another run's per-prompt counts as extra prior pseudo-counts, at a weight learned from outcomes.

A run created with `history_from` starts from a snapshot of that run's counts on the same
dataset: each prompt the source rolled out n times adds `w * successes` and `w * failures` to
its prior, with w = kappa / (kappa + n) in [0, 1]. kappa, the most rollouts a source's history
can count for, says how far the source's policy stands in for this run's: two models' rates on a
prompt differ by a spread no amount of the source's rollouts removes, so its counts are worth
about n while few and at most kappa however many. kappa is learned at each fit by the
beta-binomial likelihood of this run's own counts on prompts both runs rolled out
(`learn_strength`): near 0 when the source's rates contradict this run's, large when they agree.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import betaln

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

# Before any evidence: kappa = 8, so a prompt the source rolled out once (a group of 8) counts
# half, and no prompt's history counts for more than 8 rollouts. The source is usually the same
# prompts under a related model (a restart, a sweep), so its counts say which prompts are mixed;
# but nothing yet says how alike the two policies are, and half weight errs by at most half
# either way. It lasts until the first fit (`fit_min_outcomes` groups) learns one.
DEFAULT_STRENGTH = 8.0
MAX_STRENGTH = 4096.0  # the grid's top: the source's counts in full, for any run's sizes
MIN_PROMPTS = 32  # prompts with both histories before a learned strength replaces the default
MAX_PROMPTS = 20_000  # the likelihood's sample: bounded cost at every fit
_GRID = np.concatenate([[0.0], 2.0 ** np.arange(-3.0, 12.01, 0.5)])  # 0, 1/8 .. 4096


def weight(strength: float, rollouts: int | float | F64) -> F64:
    """The share of n rollouts of source history that counts: kappa / (kappa + n), in [0, 1]."""
    n = np.asarray(rollouts, dtype=np.float64)
    out: F64 = np.where(n > 0, strength / np.maximum(strength + n, 1e-12), 0.0)
    return out


_HEADER = struct.Struct("<I")


@dataclass(frozen=True)
class Snapshot:
    """The source's counts per prompt idx, discounted to its newest step; immutable per run."""

    idx: I64
    successes: F64
    failures: F64

    def encode(self) -> bytes:
        """A count, then int64 idx, float64 successes, float64 failures: 24 bytes a prompt."""
        n = len(self.idx)
        return (
            _HEADER.pack(n)
            + self.idx.astype("<i8").tobytes()
            + self.successes.astype("<f8").tobytes()
            + self.failures.astype("<f8").tobytes()
        )

    @classmethod
    def decode(cls, blob: bytes) -> Snapshot:
        (n,) = _HEADER.unpack_from(blob)
        at = _HEADER.size
        idx = np.frombuffer(blob, dtype="<i8", count=n, offset=at).astype(np.int64)
        s = np.frombuffer(blob, dtype="<f8", count=n, offset=at + 8 * n).astype(np.float64)
        f = np.frombuffer(blob, dtype="<f8", count=n, offset=at + 16 * n).astype(np.float64)
        return cls(idx, s, f)

    def dense(self, size: int) -> tuple[F64, F64]:
        """Successes and failures by idx over `size` prompts (0 where the source had none)."""
        s = np.zeros(size)
        f = np.zeros(size)
        inside = self.idx < size
        s[self.idx[inside]] = self.successes[inside]
        f[self.idx[inside]] = self.failures[inside]
        return s, f


@dataclass(frozen=True)
class History:
    """A snapshot spread out by idx, and the strength kappa its counts enter the prior at."""

    successes: F64
    failures: F64
    strength: float

    def pseudo_counts(self, idx: I64) -> tuple[F64, F64]:
        """w x the source's successes and failures for these prompts (0 beyond the snapshot)."""
        inside = idx < len(self.successes)
        s = np.zeros(len(idx))
        f = np.zeros(len(idx))
        s[inside] = self.successes[idx[inside]]
        f[inside] = self.failures[idx[inside]]
        w = weight(self.strength, s + f)
        return w * s, w * f


def learn_strength(
    src_s: F64,
    src_f: F64,
    own_s: F64,
    own_f: F64,
    prior_alpha: float,
    prior_beta: float,
) -> tuple[float, int]:
    """The kappa under which the run's own counts were likeliest, and the prompts it used.

    Per prompt with both histories, own counts ~ BetaBinomial(prior_alpha + w s, prior_beta
    + w f), w = kappa / (kappa + s + f). A geometric grid from 0 to MAX_STRENGTH, refined
    around the best point; the default below MIN_PROMPTS.
    """
    both = (src_s + src_f > 0) & (own_s + own_f > 0)
    n = int(both.sum())
    if n < MIN_PROMPTS:
        return DEFAULT_STRENGTH, n
    pick = np.flatnonzero(both)
    if len(pick) > MAX_PROMPTS:  # evenly spaced: the same sample for the same counts
        pick = pick[np.linspace(0, len(pick) - 1, MAX_PROMPTS).astype(np.int64)]
    s, f, k, m = src_s[pick], src_f[pick], own_s[pick], own_f[pick]

    def loglik(kappas: F64) -> F64:
        w = kappas[:, None] / (kappas[:, None] + s + f)
        a = prior_alpha + w * s
        b = prior_beta + w * f
        out: F64 = (betaln(a + k, b + m) - betaln(a, b)).sum(axis=1)
        return out

    at = int(np.argmax(loglik(_GRID)))
    lo, hi = _GRID[max(at - 1, 0)], _GRID[min(at + 1, len(_GRID) - 1)]
    fine = np.unique(np.concatenate([[_GRID[at]], np.linspace(lo, hi, 9)]))
    return float(fine[int(np.argmax(loglik(fine)))]), n
