"""Each strategy says how many candidates to scan and which of them to keep."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from service.runs.schemas import SelectionConfig

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

StrategyName = Literal["uniform", "posterior"]


@dataclass(frozen=True)
class Candidates:
    """A scanned window: dense prompt positions and their Beta posteriors."""

    idx: IntArray
    alpha: FloatArray
    beta: FloatArray

    @property
    def mean(self) -> FloatArray:
        return self.alpha / (self.alpha + self.beta)


class Strategy(Protocol):
    name: str
    needs_stats: bool

    def scan_size(self, size: int, cfg: SelectionConfig) -> int: ...

    def choose(
        self, cands: Candidates, size: int, cfg: SelectionConfig, rng: np.random.Generator
    ) -> IntArray:
        """Positions into `cands` to serve, at most `size` of them."""
        ...


class Uniform:
    """Random without replacement within an epoch: the GRPO baseline."""

    name = "uniform"
    needs_stats = False

    def scan_size(self, size: int, cfg: SelectionConfig) -> int:
        return size

    def choose(
        self, cands: Candidates, size: int, cfg: SelectionConfig, rng: np.random.Generator
    ) -> IntArray:
        return np.arange(min(size, len(cands.idx)), dtype=np.int64)


class Posterior:
    """MoPPS-style: keep posterior means nearest 0.5, plus a random share for exploration."""

    name = "posterior"
    needs_stats = True

    def scan_size(self, size: int, cfg: SelectionConfig) -> int:
        return math.ceil(size * cfg.oversample)

    def choose(
        self, cands: Candidates, size: int, cfg: SelectionConfig, rng: np.random.Generator
    ) -> IntArray:
        n = len(cands.idx)
        size = min(size, n)
        n_explore = min(round(cfg.explore * size), size)
        order = rng.permutation(n)
        explore = order[:n_explore]
        rest = order[n_explore:]
        distance = np.abs(cands.mean[rest] - cfg.target)
        exploit = rest[np.argsort(distance, kind="stable")[: size - n_explore]]
        return np.concatenate([explore, exploit]).astype(np.int64)


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (Uniform(), Posterior())}


def get(name: str) -> Strategy:
    return STRATEGIES[name]
