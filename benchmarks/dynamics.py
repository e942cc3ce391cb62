"""Learning laws and reward models for the scenario benchmarks (benchmarks/scenarios.py).

A `World` holds the simulated policy's logit for every prompt (the pool first, then the
held-out set), starting at the logit of a real pass rate. One GRPO step on a batch of groups
moves it by the law below; a group's learning signal is the standard deviation s of its true
rewards, so a zero-variance group teaches nothing. Per unit of s:

- `eta_self`: the trained prompt itself, times the prompt's own learnability when `spread` > 0
  (a Gamma draw of mean 1 and variance `spread`, from its own generator: some prompts barely
  move, others learn several times the mean);
- `eta_neighbour`: each of its k nearest neighbours by the simulator's hashing embedding,
  times their cosine (benchmarks/simulator.py's law);
- `topic_mass`: spread evenly over the prompts of its hidden cluster (each gets
  `topic_mass / cluster size`), whatever their texts look like;
- `eta_global`: every prompt, the held-out set included;
- `forget`: after the step, every prompt not trained in it loses this share of its distance
  from its starting logit;
- `wander`: after the step, every prompt's logit takes an independent Gaussian step of this sd,
  trained or not: the churn of a real policy that no model of training predicts (its own
  generator, so every method's k-th step takes the same walk);
- `jump`: after step `jump_at`, every prompt's logit rises by this much at once, as when a
  policy picks up the answer format and many prompts turn solvable in a few steps.

With no forgetting or wander the updates are additive, so applying a step's groups together is the
same as the simulator's one-by-one loop.

Rewards: `binary` (Bernoulli at the pass rate), `noisy` (the same, with a share of the
reported rewards flipped; learning follows the true rewards, since a flip adds variance but no
skill), `partial` (each rollout passes a fraction of k sub-checks whose pass chance is drawn
per rollout from a Beta with mean p, so the reward's mean is the pass rate and the checks of
one rollout are correlated, as the steps of one solution are).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.stats import betabinom

from benchmarks.simulator import FloatArray, IntArray, logit


@dataclass(frozen=True)
class Law:
    eta_self: float = 0.25
    eta_neighbour: float = 0.0
    topic_mass: float = 0.0
    eta_global: float = 0.0
    forget: float = 0.0
    wander: float = 0.0
    spread: float = 0.0
    jump: float = 0.0
    jump_at: int = 50


@dataclass(frozen=True)
class Rewards:
    kind: str = "binary"  # binary | noisy | partial
    flip: float = 0.1  # noisy: share of reported rewards flipped
    checks: int = 4  # partial: sub-checks per rollout
    concentration: float = 1.0  # partial: Beta(c p, c (1 - p)) per rollout; small = correlated


@dataclass(frozen=True)
class Relations:
    """Who learns from whom: nearest neighbours (n, k) with weights, and hidden clusters."""

    nb: IntArray | None = None
    nb_weight: FloatArray | None = None
    cluster: IntArray | None = None


def nearest(emb: npt.NDArray[np.float32], k: int, block: int = 2048) -> tuple[IntArray, FloatArray]:
    """Each row's k nearest other rows by cosine (rows are unit vectors), weights clipped to [0, 1]."""
    n = len(emb)
    nb = np.empty((n, k), dtype=np.int64)
    w = np.empty((n, k), dtype=np.float64)
    for s in range(0, n, block):
        sims = emb[s : s + block] @ emb.T
        rows = np.arange(sims.shape[0])
        sims[rows, rows + s] = -1.0
        part = np.argpartition(-sims, k, axis=1)[:, :k]
        nb[s : s + block] = part
        w[s : s + block] = np.clip(np.take_along_axis(sims, part, axis=1), 0.0, 1.0)
    return nb, w


def p_all_equal(p: FloatArray, g: int, rewards: Rewards) -> FloatArray:
    """Chance that a group of g reported rewards at true pass rate p are all equal."""
    if rewards.kind == "partial":
        k, c = rewards.checks, rewards.concentration
        q = np.clip(p, 1e-6, 1 - 1e-6)
        pmf = betabinom.pmf(np.arange(k + 1)[:, None], k, c * q[None, :], c * (1 - q)[None, :])
        out: FloatArray = (pmf**g).sum(axis=0)
        return out
    if rewards.kind == "noisy":
        p = rewards.flip + p * (1 - 2 * rewards.flip)
    out = p**g + (1 - p) ** g
    return out


class World:
    """The simulated policy: pass rates of the pool (0..P-1) and the held-out set (P..)."""

    def __init__(
        self,
        start: FloatArray,
        n_pool: int,
        law: Law,
        relations: Relations,
        rewards: Rewards,
        seed: int,
    ) -> None:
        self.z0 = logit(start)
        self.z = self.z0.copy()
        self.n_pool = n_pool
        self.law = law
        self.rel = relations
        self.rewards = rewards
        self.rng = np.random.default_rng(seed)
        self.walk = np.random.default_rng([seed, 7])
        self.steps = 0
        self.learnability = (
            np.random.default_rng([seed, 11]).gamma(1.0 / law.spread, law.spread, len(self.z))
            if law.spread
            else np.ones(len(self.z))
        )
        if law.topic_mass and relations.cluster is None:
            raise ValueError("a topic law needs clusters")
        if law.eta_neighbour and relations.nb is None:
            raise ValueError("a neighbour law needs neighbours")
        if relations.cluster is not None:
            sizes = np.bincount(relations.cluster).astype(np.float64)
            self.topic_eta = law.topic_mass / np.maximum(sizes, 1.0)

    def pass_rate(self, idx: IntArray | None = None) -> FloatArray:
        z = self.z if idx is None else self.z[idx]
        out: FloatArray = 1.0 / (1.0 + np.exp(-z))
        return out

    def heldout_pass_rate(self) -> float:
        return float(self.pass_rate()[self.n_pool :].mean())

    def pool_pass_rate(self) -> float:
        return float(self.pass_rate()[: self.n_pool].mean())

    def rollout(self, idx: IntArray, g: int) -> tuple[FloatArray, FloatArray]:
        """Reported and true rewards, each (len(idx), g)."""
        p = self.pass_rate(idx)[:, None]
        r = self.rewards
        if r.kind == "partial":
            q = np.clip(p, 1e-6, 1 - 1e-6)
            per = self.rng.beta(r.concentration * q, r.concentration * (1 - q), (len(idx), g))
            true: FloatArray = self.rng.binomial(r.checks, per) / r.checks
            return true, true
        true = (self.rng.random((len(idx), g)) < p).astype(np.float64)
        if r.kind == "noisy":
            flipped = self.rng.random(true.shape) < r.flip
            return np.where(flipped, 1.0 - true, true), true
        return true, true

    def p_mixed(self, idx: IntArray, g: int) -> FloatArray:
        """Chance each prompt's next group of g reported rewards is mixed (the oracle's score)."""
        out: FloatArray = 1.0 - p_all_equal(self.pass_rate(idx), g, self.rewards)
        return out

    def train(self, idx: IntArray, true: FloatArray) -> None:
        """One GRPO step on these groups (rows of true rewards)."""
        m = self.law
        s = true.std(axis=1) if len(idx) else np.zeros(0)
        live = s > 0
        idx, s = idx[live], s[live]
        delta = np.zeros_like(self.z)
        np.add.at(delta, idx, m.eta_self * s * self.learnability[idx])
        if m.eta_neighbour and self.rel.nb is not None and self.rel.nb_weight is not None:
            w = m.eta_neighbour * s[:, None] * self.rel.nb_weight[idx]
            np.add.at(delta, self.rel.nb[idx].ravel(), w.ravel())
        if m.topic_mass and self.rel.cluster is not None:
            cl = self.rel.cluster
            per = np.bincount(cl[idx], weights=s, minlength=len(self.topic_eta)) * self.topic_eta
            delta += per[cl]
        delta += m.eta_global * float(s.sum())
        self.z += delta
        if m.forget:
            rest = np.ones(len(self.z), dtype=bool)
            rest[idx] = False
            self.z[rest] -= m.forget * (self.z[rest] - self.z0[rest])
        if m.wander:
            self.z += self.walk.normal(0.0, m.wander, len(self.z))
        self.steps += 1
        if m.jump and self.steps == m.jump_at:
            self.z += m.jump


def quantile_rates(levels: IntArray, reference: FloatArray, rng: np.random.Generator) -> FloatArray:
    """Pass rates for problems with ordinal levels (1 easiest): each level takes the band of the
    reference distribution's quantiles its share of the problems covers, easiest at the top, and
    each problem a uniform draw within its band."""
    ref = np.sort(reference)[::-1]  # easiest first
    out = np.empty(len(levels))
    lo = 0.0
    for lv in np.unique(levels):
        at = np.flatnonzero(levels == lv)
        hi = lo + len(at) / len(levels)
        u = rng.uniform(lo, hi, len(at))
        out[at] = ref[np.minimum((u * len(ref)).astype(np.int64), len(ref) - 1)]
        lo = hi
    return out
