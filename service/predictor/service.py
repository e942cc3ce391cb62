"""Fit each run's predictor in the background and turn it into a prior for every prompt.

The request path only reads: the newest version's per-prompt priors (cached per process by
version). Fitting loads the dataset's stored model inputs, learns from the run's discounted
per-prompt counts (recent outcomes weigh more, so the fit follows the improving policy),
warm-starts from the previous version, and stores the new version with its calibration on
the outcomes that arrived since the previous one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.stats import spearmanr
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from service.datasets.models import Dataset
from service.db import utcnow
from service.estimator import PredictorState
from service.outcomes.models import Outcome
from service.predictor import tracking
from service.predictor.cache import F32, DatasetInputs, Prior
from service.predictor.calibrate import fit_calibrated, predict_rates
from service.predictor.drift import served_drift
from service.predictor.inputs import dataset_inputs, fit_config
from service.predictor.models import PredictorVersion
from service.runs.models import Run
from service.runs.schemas import SelectionConfig
from service.state import AppState
from service.stats.math import PromptStats, beta_posterior, shift_logit
from service.stats.service import catch_up

log = logging.getLogger(__name__)

DEFAULT_STRENGTH = 2.0
KEEP_BLOBS = 3


async def latest(
    session: AsyncSession, run_id: int, *, blobs: bool = True
) -> PredictorVersion | None:
    """The newest version; `blobs=False` leaves model, priors and replay (megabytes) unloaded."""
    stmt = (
        select(PredictorVersion)
        .where(PredictorVersion.run_id == run_id)
        .order_by(PredictorVersion.version.desc())
        .limit(1)
    )
    if not blobs:
        stmt = stmt.options(
            defer(PredictorVersion.state),
            defer(PredictorVersion.priors),
            defer(PredictorVersion.tracking),
        )
    return (await session.execute(stmt)).scalar_one_or_none()


async def latest_version(session: AsyncSession, run_id: int) -> int | None:
    stmt = select(func.max(PredictorVersion.version)).where(PredictorVersion.run_id == run_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def priors(state: AppState, session: AsyncSession, run_id: int) -> Prior | None:
    """The newest version's predicted pass rate per prompt idx (NaN: not embedded at fit time)."""
    version = await latest_version(session, run_id)
    if version is None:
        return None
    cached = state.predictor_cache.priors.get(run_id)
    if cached is not None and cached.version == version:
        return cached
    row = (
        await session.execute(
            select(
                PredictorVersion.priors, PredictorVersion.calibration, PredictorVersion.tracking
            ).where(PredictorVersion.run_id == run_id, PredictorVersion.version == version)
        )
    ).one()
    prior = Prior(
        version=version,
        rates=np.frombuffer(row.priors, dtype=np.float32),
        drift=float(row.calibration.get("served_drift_logit", 0.0)),
        strength=row.calibration.get("prior_strength"),
        tracked=tracking.unpack_shifts(row.tracking),
    )
    state.predictor_cache.priors[run_id] = prior
    return prior


async def model(
    state: AppState, session: AsyncSession, run_id: int
) -> tuple[int, PredictorState] | None:
    version = await latest_version(session, run_id)
    if version is None:
        return None
    cached = state.predictor_cache.states.get(run_id)
    if cached is None or cached[0] != version:
        blob = (
            await session.execute(
                select(PredictorVersion.state).where(
                    PredictorVersion.run_id == run_id, PredictorVersion.version == version
                )
            )
        ).scalar_one()
        cached = (version, PredictorState.from_bytes(blob))
        state.predictor_cache.states[run_id] = cached
    return cached


async def fit_runs_of(state: AppState, dataset_id: int) -> None:
    """Newly embedded prompts: a fit that was due with nothing embedded runs now, not later."""
    async with state.read_sessionmaker() as session:
        ids = (await session.execute(select(Run.id).where(Run.dataset_id == dataset_id))).scalars()
        run_ids = list(ids)
    for run_id in run_ids:
        schedule_fit(state, run_id)


def schedule_fit(state: AppState, run_id: int) -> None:
    """The run's one background fit job: a request while it runs makes it check once more."""
    state.jobs.spawn(f"fit:{run_id}", functools.partial(maybe_fit, state, run_id))


async def maybe_fit(state: AppState, run_id: int, *, force: bool = False) -> int | None:
    """Fit a new version when enough outcomes are new; one fitter per run across replicas."""
    token = await state.hot.try_lock(f"fit:{run_id}", ttl=300)
    if token is None:
        return None
    try:
        return await _fit(state, run_id, force)
    finally:
        await state.hot.unlock(f"fit:{run_id}", token)


async def _fit(state: AppState, run_id: int, force: bool) -> int | None:
    t0 = time.perf_counter()
    async with state.read_sessionmaker() as session:
        run = await session.get_one(Run, run_id)
        cfg = SelectionConfig.model_validate(run.selection)
        prev = await latest(session, run_id)
        seen = prev.trained_on if prev is not None else 0
        needed = cfg.refit_every if prev is not None else cfg.fit_min_outcomes
        warm = prev is None and run.init_from is not None
        if not force and not warm and run.outcome_seq - seen < needed:
            return None
        wait = state.settings.refit_min_seconds - (
            (utcnow() - prev.fitted_at).total_seconds() if prev is not None else math.inf
        )
        if wait > 0 and not force:
            # due but too soon after the last fit: retry then, even if no outcome arrives
            state.jobs.spawn_after(
                f"fit:{run_id}", wait, functools.partial(maybe_fit, state, run_id)
            )
            return None
        dataset = await session.get_one(Dataset, run.dataset_id)
        inputs = await dataset_inputs(state.predictor_cache, session, dataset)
        embedder = dataset.embedder
        if not inputs.mask.any():
            return None
        init = PredictorState.from_bytes(prev.state) if prev is not None else None
        if warm:
            init = await _source_state(session, run.init_from)
        if init is not None and init.dim != inputs.x.shape[1]:
            init = None  # another width (client vectors resized): learn afresh
        target = run.outcome_seq
        await catch_up(session, state.hot, run.id, target, cfg.discount)
        stats = await state.hot.get_all(run.id)
        calibration = await _calibration(session, run.id, prev) if prev is not None else {}
        calibration["served_drift_logit"] = await served_drift(session, run.id, cfg)
        logprobs = await _mean_logprobs(session, run.id)
        step = max(run.max_step, 0)
    # per-prompt loops over the whole run: off the event loop, like the fit itself
    idx, succ, trials, lp = await asyncio.to_thread(
        _training_rows, stats, inputs.mask, step, cfg.discount, logprobs
    )
    if len(idx) < 2 and init is None:
        return None
    if len(idx) >= 2:
        new = await asyncio.to_thread(
            fit_calibrated,
            inputs.x[idx],
            succ,
            trials,
            init=init,
            config=fit_config(
                embedder, inputs.x.shape[1], state.settings.fit_threads, inputs.column_weights
            ),
            logprob=lp,
        )
    else:
        assert init is not None
        new = init
    prior = await asyncio.to_thread(_predict_all, new, inputs)
    blob: bytes | None = None
    if cfg.tracking:
        async with state.read_sessionmaker() as session:
            blob, report = await tracking.advance(
                state.predictor_cache,
                session,
                run_id,
                cfg,
                prev,
                dataset.id,
                inputs,
                target,
                _selection_base(cfg, prev, len(inputs.mask)),
            )
        calibration |= report
    version = (prev.version if prev is not None else 0) + 1
    async with state.sessionmaker() as session:
        session.add(
            PredictorVersion(
                run_id=run_id,
                version=version,
                trained_on=target,
                state=new.to_bytes(),
                priors=prior.tobytes(),
                tracking=blob,
                calibration={
                    **calibration,
                    "prior_strength": new.meta.get("calibration", {}).get("strength"),
                    "fit_seconds": round(time.perf_counter() - t0, 3),
                    "fitted_prompts": len(idx),
                },
            )
        )
        try:
            await session.flush()
            await _prune(session, run_id, version)
            await session.commit()
        except IntegrityError:  # another replica stored this version first
            return None
    log.info(
        "run %s: predictor v%d on %d outcomes (%d prompts) in %.2f s",
        run_id,
        version,
        target,
        len(idx),
        time.perf_counter() - t0,
    )
    return version


async def _prune(session: AsyncSession, run_id: int, newest: int) -> None:
    """Drop the model and prior blobs of versions nobody reads any more; keep their history.

    Only the newest version is served, and a sparse n-gram state is about 2 MB; a run that
    refits every 1,000 outcomes would otherwise store that again and again. The last
    KEEP_BLOBS versions stay whole, so a replica that just read one can still load it.
    """
    await session.execute(
        update(PredictorVersion)
        .where(
            PredictorVersion.run_id == run_id,
            PredictorVersion.version <= newest - KEEP_BLOBS,
            func.length(PredictorVersion.state) > 0,
        )
        .values(state=b"", priors=b"", tracking=None)
        .execution_options(synchronize_session=False)
    )


def _training_rows(
    stats: dict[int, PromptStats],
    mask: npt.NDArray[np.bool_],
    step: int,
    discount: float,
    logprobs: dict[int, float],
) -> tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64] | None,
]:
    """Embedded prompts with history, their counts discounted to `step`, their mean logprob."""
    idx = np.array([i for i in stats if i < len(mask) and mask[i]], dtype=np.int64)
    decay = np.array([discount ** max(step - stats[i].last_step, 0) for i in idx])
    succ = np.array([stats[i].disc_successes for i in idx]) * decay
    trials = np.array([stats[i].disc_successes + stats[i].disc_failures for i in idx]) * decay
    lp = None
    if logprobs:  # NaN where a prompt reported none
        lp = np.array([logprobs.get(int(i), np.nan) for i in idx], dtype=np.float64)
    return idx, succ, trials, lp


async def _mean_logprobs(session: AsyncSession, run_id: int) -> dict[int, float]:
    """Each prompt's mean reported `mean_logprob`: the target of DEPO's distillation head."""
    rows = await session.execute(
        select(Outcome.prompt_idx, func.avg(Outcome.mean_logprob))
        .where(Outcome.run_id == run_id, Outcome.mean_logprob.is_not(None))
        .group_by(Outcome.prompt_idx)
    )
    return {int(i): float(v) for i, v in rows.tuples() if v is not None}


def _selection_base(
    cfg: SelectionConfig, prev: PredictorVersion | None, size: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The Beta prior selection scored prompts with until now: the previous version's."""
    prior = None
    if prev is not None and prev.priors:
        prior = Prior(
            version=prev.version,
            rates=np.frombuffer(prev.priors, dtype=np.float32),
            drift=0.0,
            strength=prev.calibration.get("prior_strength"),
        )
    return prior_pseudo_counts(cfg, prior, np.arange(size, dtype=np.int64), selecting=True)


def _predict_all(st: PredictorState, inputs: DatasetInputs) -> F32:
    out = np.full(len(inputs.mask), np.nan, dtype=np.float32)
    if inputs.mask.any():
        out[inputs.mask] = predict_rates(st, inputs.x[np.flatnonzero(inputs.mask)])
    return out


async def _source_state(session: AsyncSession, name: str | None) -> PredictorState | None:
    src = (await session.execute(select(Run.id).where(Run.name == name))).scalar_one_or_none()
    if src is None:
        return None
    row = await latest(session, src)
    return PredictorState.from_bytes(row.state) if row is not None else None


async def _calibration(
    session: AsyncSession, run_id: int, prev: PredictorVersion
) -> dict[str, float]:
    """How the previous version's priors did on outcomes it had not seen when it was fitted."""
    rows = (
        await session.execute(
            select(Outcome.prompt_idx, func.sum(Outcome.n), func.sum(Outcome.successes))
            .where(Outcome.run_id == run_id, Outcome.seq > prev.trained_on)
            .group_by(Outcome.prompt_idx)
        )
    ).all()
    pri = np.frombuffer(prev.priors, dtype=np.float32)
    pairs = [(float(pri[i]), k / n) for i, n, k in rows if i < len(pri) and pri[i] == pri[i] and n]
    scored = {"scored_version": float(prev.version), "unseen_prompts": float(len(pairs))}
    if len(pairs) < 3:
        return scored
    pred, obs = np.array(pairs).T
    rho = spearmanr(pred, obs).statistic if pred.std() > 0 and obs.std() > 0 else 0.0
    return {
        **scored,
        "mae": float(np.mean(np.abs(pred - obs))),
        "spearman": float(rho) if rho == rho else 0.0,
        "mean_predicted": float(pred.mean()),
        "mean_observed": float(obs.mean()),
    }


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
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
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


@dataclass(frozen=True)
class Estimate:
    """Each prompt's Beta posterior: the predictor's prior, its own history, how far it moved."""

    alpha: npt.NDArray[np.float64]
    beta: npt.NDArray[np.float64]
    prior_mean: npt.NDArray[np.float64]
    stats: list[PromptStats | None]

    @property
    def seen(self) -> npt.NDArray[np.bool_]:
        return np.array([s is not None for s in self.stats], dtype=bool)


async def estimate(
    state: AppState,
    run_id: int,
    cfg: SelectionConfig,
    prior: Prior | None,
    idx: npt.NDArray[np.int64],
    step: int,
    *,
    selecting: bool = False,
) -> Estimate:
    """The one place a prompt's current pass-rate estimate is made (selection, predict, stats)."""
    stats = await state.hot.get_many(run_id, idx.tolist())
    a0, b0 = prior_pseudo_counts(cfg, prior, idx, selecting=selecting)
    alpha, beta = beta_posterior(stats, step, cfg.discount, a0, b0)
    seen = np.array([s is not None for s in stats], dtype=bool)
    if prior is not None and prior.tracked is not None and cfg.tracking and seen.any():
        evidence = alpha + beta - a0 - b0  # discounted rollouts of each prompt's own
        shift = tracking.shift_for(prior.tracked, idx, evidence, step, cfg.discount)
        alpha, beta = shift_logit(alpha, beta, shift * seen)
    elif prior is not None and prior.drift and seen.any():
        alpha, beta = shift_logit(alpha, beta, prior.drift * seen)
    return Estimate(alpha, beta, a0 / (a0 + b0), stats)
