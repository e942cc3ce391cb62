"""The one estimate of a run's prompts: predictor prior, own history, tracking shift.

Selection, `/predict`, prompt stats and the admin pages all read estimates through
`for_run`, so they can never disagree about a prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy.ext.asyncio import AsyncSession

from service.estimator.beta import StatsColumns, beta_posterior, beta_std, p_mixed, shift_logit
from service.estimator.exposure import shift_for
from service.estimator.history import DEFAULT_STRENGTH, History
from service.estimator.prior import Prior, prior_pseudo_counts
from service.history import snapshot
from service.hotstats import catch_up as hotstats
from service.hotstats.store import HotStore
from service.models import Run
from service.policy import SelectionConfig
from service.predictor import labels, versions
from service.predictor.cache import PredictorCache

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Estimate:
    """Each prompt's Beta posterior: the predictor's prior, its own history, how far it moved."""

    alpha: F64
    beta: F64
    prior_mean: F64
    stats: StatsColumns  # each prompt's own counts (`seen` False: no group yet)

    @property
    def seen(self) -> npt.NDArray[np.bool_]:
        return self.stats.seen

    @property
    def mean(self) -> F64:
        out: F64 = self.alpha / (self.alpha + self.beta)
        return out

    @property
    def std(self) -> F64:
        return beta_std(self.alpha, self.beta)

    def p_mixed(self, group_size: int) -> F64:
        """P(a group of `group_size` rollouts is mixed): the chance it teaches something."""
        return p_mixed(self.alpha, self.beta, group_size)


@dataclass(frozen=True)
class RunEstimates:
    """A run's estimates at one step, against one predictor version; `at` is cheap per call."""

    hot: HotStore
    run_id: int
    policy: SelectionConfig
    prior: Prior | None
    step: int
    history: History | None = None  # another run's counts (`history_from`), weighted

    @property
    def version(self) -> int | None:
        return self.prior.version if self.prior is not None and self.prior.version else None

    async def at(self, idx: I64, *, selecting: bool = False) -> Estimate:
        stats = await self.hot.get_columns(self.run_id, idx.tolist())
        return estimate(
            self.policy,
            self.prior,
            idx,
            stats,
            self.step,
            selecting=selecting,
            history=self.history,
        )


async def for_run(
    session: AsyncSession,
    hot: HotStore,
    cache: PredictorCache,
    run: Run,
    policy: SelectionConfig,
    *,
    step: int | None = None,
    catch_up: bool = True,
) -> RunEstimates:
    """The run's stats caught up with its log and its newest predictor version, ready to read.

    `catch_up=False` skips folding the log in first: for uniform selection, which ranks nothing
    by history (it still reads the stats its batch stores with each prompt).
    """
    if catch_up:
        await hotstats.catch_up(session, hot, run.id, run.outcome_seq, policy.discount)
    prior = await versions.priors(cache, session, run.id)
    if prior is None:  # no fit yet: known difficulties, where the prompts have them
        prior = await labels.cold_prior(cache, session, run, policy)
    at = max(run.max_step, 0) if step is None else step
    history = await _history(session, cache, run, prior) if run.history_from else None
    return RunEstimates(hot, run.id, policy, prior, at, history)


async def _history(
    session: AsyncSession, cache: PredictorCache, run: Run, prior: Prior | None
) -> History | None:
    """The source's counts at the newest version's learned strength (before any: the default)."""
    dense = await snapshot.load(cache.histories, session, run.id)
    if dense is None:
        return None
    k = prior.history_strength if prior is not None else None
    return History(dense[0], dense[1], DEFAULT_STRENGTH if k is None else float(k))


def estimate(
    policy: SelectionConfig,
    prior: Prior | None,
    idx: I64,
    stats: StatsColumns,
    step: int,
    *,
    selecting: bool = False,
    history: History | None = None,
) -> Estimate:
    """Prior pseudo-counts, plus discounted history, shifted by the training since it.

    With `history` (another run's counts), its weighted counts join the prior: they are
    evidence from before this run, so tracking never shifts them.
    """
    a0, b0 = prior_pseudo_counts(policy, prior, idx, selecting=selecting)
    if history is not None:
        hs, hf = history.pseudo_counts(idx)
        a0, b0 = a0 + hs, b0 + hf
    alpha, beta = beta_posterior(stats, step, policy.discount, a0, b0)
    seen = stats.seen
    if prior is not None and prior.tracked is not None and policy.tracking and seen.any():
        evidence = alpha + beta - a0 - b0  # discounted rollouts of each prompt's own
        shift = shift_for(prior.tracked, idx, evidence, step, policy.discount)
        alpha, beta = shift_logit(alpha, beta, np.where(seen, shift, 0.0))
    elif prior is not None and prior.drift and seen.any():
        alpha, beta = shift_logit(alpha, beta, np.where(seen, prior.drift, 0.0))
    return Estimate(alpha, beta, a0 / (a0 + b0), stats)
