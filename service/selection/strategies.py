"""Each strategy scores a scanned window of candidates and says which to keep."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from service.estimator.beta import p_mixed, p_mixed_at
from service.policy import SelectionConfig
from service.selection.adaptive import MIN_PER_SLOT, scored_scan

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Candidates:
    """A scanned window: dense prompt positions, Beta posteriors, and whether history exists."""

    idx: IntArray
    alpha: FloatArray
    beta: FloatArray
    seen: npt.NDArray[np.bool_]
    age: FloatArray | None = None  # steps since the last outcome (inf: never seen)
    mixed: FloatArray | None = None  # the mixed-group classifier's P(mixed) (NaN: none)

    def take(self, pos: IntArray) -> Candidates:
        age = None if self.age is None else self.age[pos]
        mixed = None if self.mixed is None else self.mixed[pos]
        return Candidates(
            self.idx[pos], self.alpha[pos], self.beta[pos], self.seen[pos], age, mixed
        )

    @staticmethod
    def concat(a: Candidates, b: Candidates) -> Candidates:
        age = None if a.age is None or b.age is None else np.concatenate([a.age, b.age])
        mixed = None if a.mixed is None or b.mixed is None else np.concatenate([a.mixed, b.mixed])
        return Candidates(
            np.concatenate([a.idx, b.idx]),
            np.concatenate([a.alpha, b.alpha]),
            np.concatenate([a.beta, b.beta]),
            np.concatenate([a.seen, b.seen]),
            age,
            mixed,
        )

    @property
    def mean(self) -> FloatArray:
        return self.alpha / (self.alpha + self.beta)

    def __len__(self) -> int:
        return len(self.idx)


class Strategy(Protocol):
    name: str
    needs_stats: bool

    def scan_size(self, size: int, cfg: SelectionConfig, free: int) -> int:
        """Candidates to draw before the first `choose` (of `free` unleased prompts)."""
        ...

    def max_scan(self, size: int, cfg: SelectionConfig, free: int) -> int:
        """Candidates to draw at most, when `choose` keeps fewer than `size`."""
        ...

    def choose(
        self,
        cands: Candidates,
        size: int,
        cfg: SelectionConfig,
        rng: np.random.Generator,
        group_size: int,
    ) -> IntArray:
        """Positions into `cands` to serve, at most `size`; fewer asks for more candidates."""
        ...


class _Scored:
    """Scan `oversample * size` (unset: the whole free pool, up to a cap), keep the best.

    An `explore` share of the batch is taken from the rest (re-tests).
    """

    name = "scored"
    needs_stats = True
    explores = True  # keeps the run's `explore` share for re-tests

    def scan_size(self, size: int, cfg: SelectionConfig, free: int) -> int:
        if cfg.oversample is None:
            return scored_scan(free, size)
        return math.ceil(size * cfg.oversample)

    def max_scan(self, size: int, cfg: SelectionConfig, free: int) -> int:
        return self.scan_size(size, cfg, free)

    def score(
        self, cands: Candidates, cfg: SelectionConfig, rng: np.random.Generator, group_size: int
    ) -> FloatArray:
        raise NotImplementedError

    def explore_pool(self, cands: Candidates, rest: IntArray) -> IntArray:
        return rest

    def explore(
        self, cands: Candidates, pool: IntArray, n: int, rng: np.random.Generator
    ) -> IntArray:
        out: IntArray = rng.choice(pool, size=n, replace=False) if n else pool[:0]
        return out

    def choose(
        self,
        cands: Candidates,
        size: int,
        cfg: SelectionConfig,
        rng: np.random.Generator,
        group_size: int,
    ) -> IntArray:
        size = min(size, len(cands))
        scores = self.score(cands, cfg, rng, group_size)
        # random tie-break, so equal scores (all unseen) do not follow scan order
        order = np.lexsort((rng.random(len(cands)), -scores))
        n_explore = min(round(cfg.explore * size), size) if self.explores else 0
        exploit = order[: size - n_explore]
        rest = order[size - n_explore :]
        pool = self.explore_pool(cands, rest)
        if len(pool) < n_explore:
            pool = rest
        explore = self.explore(cands, pool, n_explore, rng)
        return np.concatenate([exploit, explore]).astype(np.int64)


class Uniform:
    """The epoch permutation as it comes: plain GRPO."""

    name = "uniform"
    needs_stats = False

    def scan_size(self, size: int, cfg: SelectionConfig, free: int) -> int:
        return size

    def max_scan(self, size: int, cfg: SelectionConfig, free: int) -> int:
        return size

    def choose(
        self,
        cands: Candidates,
        size: int,
        cfg: SelectionConfig,
        rng: np.random.Generator,
        group_size: int,
    ) -> IntArray:
        return np.arange(min(size, len(cands)), dtype=np.int64)


class Posterior(_Scored):
    """MoPPS-style ranking by posterior mean nearest the target pass rate."""

    name = "posterior"

    def score(
        self, cands: Candidates, cfg: SelectionConfig, rng: np.random.Generator, group_size: int
    ) -> FloatArray:
        out: FloatArray = -np.abs(cands.mean - cfg.target)
        return out


class Target(_Scored):
    """MoPPS: Thompson-sample each posterior, keep the samples nearest the target."""

    name = "target"
    explores = False  # as in MoPPS, the Thompson samples are the exploration

    def score(
        self, cands: Candidates, cfg: SelectionConfig, rng: np.random.Generator, group_size: int
    ) -> FloatArray:
        out: FloatArray = -np.abs(rng.beta(cands.alpha, cands.beta) - cfg.target)
        return out


class Informative(_Scored):
    """Ours: rank by P(a group of G is mixed), exact or averaged over `thompson_draws` samples."""

    name = "informative"

    def score(
        self, cands: Candidates, cfg: SelectionConfig, rng: np.random.Generator, group_size: int
    ) -> FloatArray:
        if cfg.thompson_draws == 0:
            scores = p_mixed(cands.alpha, cands.beta, group_size)
        else:
            draws = rng.beta(cands.alpha, cands.beta, size=(cfg.thompson_draws, len(cands)))
            scores = p_mixed_at(draws, group_size).mean(axis=0)
        return reorder_unseen(scores, cands)

    def explore_pool(self, cands: Candidates, rest: IntArray) -> IntArray:
        """Prompts filtered out before (they have history) are the ones worth re-testing."""
        return rest[cands.seen[rest]]

    def explore(
        self, cands: Candidates, pool: IntArray, n: int, rng: np.random.Generator
    ) -> IntArray:
        """Stalest first: the longer since a prompt's last group, the likelier the policy moved."""
        if cands.age is None or not n:
            return super().explore(cands, pool, n, rng)
        order = np.lexsort((rng.random(len(pool)), -cands.age[pool]))
        out: IntArray = pool[order[:n]]
        return out


def reorder_unseen(scores: FloatArray, cands: Candidates) -> FloatArray:
    """Unseen prompts keep their scores as a set but take them in the classifier's order.

    The prior's optimism decides how many new prompts a batch takes against ones with
    history (a new prompt that turns out mixed pays back over several steps); which new
    prompts is better told by the mixed-group classifier (estimator/mixed.py).
    """
    if cands.mixed is None:
        return scores
    pos = np.flatnonzero(~cands.seen & np.isfinite(cands.mixed))
    if len(pos) < 2:
        return scores
    out = scores.copy()
    # equal scores (one prior for all) still follow the classifier, not the random tie-break
    by_score = np.sort(scores[pos])[::-1] - 1e-9 * np.arange(len(pos))
    out[pos[np.argsort(-cands.mixed[pos], kind="stable")]] = by_score
    return out


class Window:
    """DEPO: keep predicted pass rates inside [lo, hi], scanning as far as needed."""

    name = "window"
    needs_stats = True

    def scan_size(self, size: int, cfg: SelectionConfig, free: int) -> int:
        # it keeps the first candidates inside the window in epoch order, so a wider first scan
        # would only pass over more of the epoch: unset, 4 per slot as before
        return math.ceil(size * (cfg.oversample or MIN_PER_SLOT))

    def max_scan(self, size: int, cfg: SelectionConfig, free: int) -> int:
        return math.ceil(size * cfg.max_scan)

    def choose(
        self,
        cands: Candidates,
        size: int,
        cfg: SelectionConfig,
        rng: np.random.Generator,
        group_size: int,
    ) -> IntArray:
        mean = cands.mean
        inside = np.flatnonzero((mean >= cfg.window_lo) & (mean <= cfg.window_hi))
        return inside[:size].astype(np.int64)


STRATEGIES: dict[str, Strategy] = {
    s.name: s for s in (Uniform(), Posterior(), Target(), Informative(), Window())
}


def get(name: str) -> Strategy:
    return STRATEGIES[name]


def fill(keep: IntArray, cands: Candidates, size: int, target: float) -> IntArray:
    """Top a short selection up with the remaining candidates nearest the target rate."""
    if len(keep) >= size:
        return keep
    rest = np.setdiff1d(np.arange(len(cands)), keep, assume_unique=False)
    nearest = rest[np.argsort(np.abs(cands.mean[rest] - target), kind="stable")]
    return np.concatenate([keep, nearest[: size - len(keep)]]).astype(np.int64)
