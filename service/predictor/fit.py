"""Fit each run's predictor in the background and store it as a new version.

Fitting loads the dataset's stored model inputs, learns from the run's discounted per-prompt
counts (recent outcomes weigh more, so the fit follows the improving policy), warm-starts from
the previous version, and stores the new version with its calibration on the outcomes that
arrived since the previous one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.background import Background
from service.db import utcnow
from service.estimator import PredictorState, mixed
from service.estimator.beta import RunStats
from service.estimator.calibrate import fit_calibrated, label_logits, label_offset, predict_rates
from service.estimator.history import DEFAULT_STRENGTH, History, learn_strength, weight
from service.estimator.inputs import F32, DatasetInputs, fit_config
from service.estimator.prior import Prior, prior_pseudo_counts
from service.history import snapshot
from service.hotstats.catch_up import catch_up
from service.hotstats.store import HotStore, held
from service.metrics import Metrics
from service.models import Dataset, Outcome, PredictorVersion, Run
from service.policy import SelectionConfig
from service.predictor import tracking, versions
from service.predictor.cache import PredictorCache
from service.predictor.cadence import next_fit_at
from service.predictor.drift import served_drift
from service.predictor.inputs import dataset_inputs
from service.predictor.labels import dataset_labels

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]


@dataclass
class _Job:
    """What a due fit read from the database, before any CPU-heavy step."""

    run_id: int
    cfg: SelectionConfig
    prev: PredictorVersion | None
    dataset_id: int
    embedder: str
    inputs: DatasetInputs
    init: PredictorState | None
    target: int  # the log position the fit covers
    stats: RunStats
    calibration: dict[str, float]
    logprobs: dict[int, float]
    step: int
    group_size: int
    labels: F32 | None = None  # known difficulties by idx (NaN: none)
    history: tuple[F64, F64] | None = None  # `history_from` counts by prompt idx


@dataclass(frozen=True)
class FitJobs:
    """Each run's background fit: one job per run here, one fitter per run across replicas."""

    sessionmaker: async_sessionmaker[AsyncSession]
    read_sessionmaker: async_sessionmaker[AsyncSession]
    hot: HotStore
    cache: PredictorCache
    background: Background
    refit_min_seconds: float
    threads: int
    metrics: Metrics
    lock_seconds: float = 30.0

    def schedule(self, run_id: int) -> None:
        """Start the run's fit job; a request while it runs makes it check once more."""
        self.background.submit("fit", run_id)

    async def fit_runs_of(self, dataset_id: int) -> None:
        """Newly embedded prompts: a fit that was due with nothing embedded runs now."""
        async with self.read_sessionmaker() as session:
            ids = await session.execute(select(Run.id).where(Run.dataset_id == dataset_id))
            run_ids = list(ids.scalars())
        for run_id in run_ids:
            self.schedule(run_id)

    async def maybe_fit(self, run_id: int, *, force: bool = False) -> int | None:
        """Fit a new version when enough outcomes are new; the new version, or None."""
        # renewed while the fit runs: a replica or worker killed mid-fit frees the run soon
        async with held(self.hot, f"fit:{run_id}", self.lock_seconds) as mine:
            return await self._fit(run_id, force) if mine else None

    async def _fit(self, run_id: int, force: bool) -> int | None:
        t0 = time.perf_counter()
        async with self.read_sessionmaker() as session:
            job = await self._prepare(session, run_id, force)
        if job is None:
            return None
        # per-prompt loops over the whole run and the fit itself: off the event loop
        trained = await asyncio.to_thread(_train, job, self.threads)
        if trained is None:
            return None
        state, prior, p_mixed, fitted_prompts = trained
        if job.history is not None:  # cheap (at most 20,000 prompts x 42 strengths), off the loop
            kappa, overlap = await asyncio.to_thread(_history_strength, job)
            job.calibration |= {
                "history_strength": kappa,
                "history_weight": float(weight(kappa, job.group_size)),
                "history_prompts": overlap,
            }
        blob: bytes | None = None
        shifts: bytes | None = None
        if job.cfg.tracking:
            async with self.read_sessionmaker() as session:
                blob, shifts, report = await tracking.advance(
                    self.cache,
                    session,
                    run_id,
                    job.cfg,
                    job.prev,
                    job.dataset_id,
                    job.inputs,
                    job.target,
                    _selection_base(job.cfg, job.prev, len(job.inputs.mask), job.history),
                )
            job.calibration |= report
        cal = state.meta.get("calibration", {})
        if job.labels is not None:
            job.calibration["labelled_prompts"] = int(np.isfinite(job.labels).sum())
            if "label_weight" in cal:
                job.calibration["label_weight"] = cal["label_weight"]
        job.calibration |= {
            "prior_strength": state.meta.get("calibration", {}).get("strength"),
            "fit_seconds": round(time.perf_counter() - t0, 3),
            "fitted_prompts": fitted_prompts,
        }
        version = await self._store(job, state, prior, p_mixed, (blob, shifts))
        if version is not None:
            await self._observe(job, version, time.perf_counter() - t0)
            log.info(
                "run %s: predictor v%d on %d outcomes (%d prompts) in %.2f s",
                run_id,
                version,
                job.target,
                fitted_prompts,
                time.perf_counter() - t0,
            )
        return version

    async def _prepare(self, session: AsyncSession, run_id: int, force: bool) -> _Job | None:
        """Read what a due fit needs; None when no fit is due (or due later: a timer is set)."""
        run = await session.get_one(Run, run_id)
        cfg = SelectionConfig.model_validate(run.selection)
        prev = await versions.latest(session, run_id)
        due = next_fit_at(cfg, run, prev.trained_on if prev is not None else None)
        warm = prev is None and run.init_from is not None
        if not force and not warm and run.outcome_seq < due:
            return None
        wait = self.refit_min_seconds - (
            (utcnow() - prev.fitted_at).total_seconds() if prev is not None else math.inf
        )
        if wait > 0 and not force:
            # due but too soon after the last fit: retry then, even if no outcome arrives
            self.background.submit("fit", run_id, delay=wait)
            return None
        dataset = await session.get_one(Dataset, run.dataset_id)
        inputs = await dataset_inputs(self.cache, session, dataset)
        if not inputs.mask.any():
            return None
        init = PredictorState.from_bytes(prev.state) if prev is not None else None
        if warm:
            init = await versions.source_state(session, run)
        if init is not None and init.dim != inputs.x.shape[1]:
            init = None  # another width (client vectors resized): learn afresh
        target = run.outcome_seq
        # a fresh snapshot: this one predates the embeddings' load, and the store may have
        # folded rows committed since, which this one would take for a log that lost them
        async with self.read_sessionmaker() as fresh:
            await catch_up(fresh, self.hot, run.id, target, cfg.discount)
        calibration = await _calibration(session, run.id, prev) if prev is not None else {}
        calibration["served_drift_logit"] = await served_drift(session, run.id, cfg)
        return _Job(
            run_id=run_id,
            cfg=cfg,
            prev=prev,
            dataset_id=dataset.id,
            embedder=dataset.embedder,
            inputs=inputs,
            init=init,
            target=target,
            stats=await self.hot.get_table(run.id),
            calibration=calibration,
            logprobs=await _mean_logprobs(session, run.id),
            step=max(run.max_step, 0),
            labels=await dataset_labels(self.cache, session, dataset),
            group_size=run.group_size,
            history=(
                await snapshot.load(self.cache.histories, session, run.id)
                if run.history_from
                else None
            ),
        )

    async def _observe(self, job: _Job, version: int, seconds: float) -> None:
        """Fit time, and how far the log moved on while it ran, for the dashboards."""
        async with self.read_sessionmaker() as session:
            run = await session.get_one(Run, job.run_id)
        self.metrics.fit_duration.observe(seconds)
        self.metrics.fit_lag_groups.observe(max(run.outcome_seq - job.target, 0))
        self.metrics.predictor_version.labels(run=run.name).set(version)

    async def _store(
        self,
        job: _Job,
        state: PredictorState,
        prior: F32,
        p_mixed: F32 | None,
        tracked: tuple[bytes | None, bytes | None],
    ) -> int | None:
        version = (job.prev.version if job.prev is not None else 0) + 1
        async with self.sessionmaker() as session:
            session.add(
                PredictorVersion(
                    run_id=job.run_id,
                    version=version,
                    trained_on=job.target,
                    state=state.to_bytes(),
                    priors=prior.tobytes(),
                    mixed=p_mixed.tobytes() if p_mixed is not None else None,
                    tracking=tracked[0],
                    shifts=tracked[1],
                    calibration=job.calibration,
                )
            )
            try:
                await session.flush()
                await versions.prune(session, job.run_id, version)
                await session.commit()
            except IntegrityError:  # another replica stored this version first
                return None
        return version


def _train(job: _Job, threads: int) -> tuple[PredictorState, F32, F32 | None, int] | None:
    """The new state, its rate and P(mixed) for every prompt, how many prompts it learned from."""
    rows, succ, trials, lp = _training_rows(
        job.stats, job.inputs.mask, job.step, job.cfg.discount, job.logprobs
    )
    idx = job.stats.idx[rows]
    if len(idx) < 2 and job.init is None:
        return None
    label = _label_logits(job.labels, len(job.inputs.mask))
    if len(idx) >= 2:
        x = job.inputs.x
        config = fit_config(job.embedder, x.shape[1], threads, job.inputs.column_weights)
        new = fit_calibrated(
            x[idx],
            succ,
            trials,
            init=job.init,
            config=config,
            logprob=lp,
            label=None if label is None else label[idx],
        )
    else:
        assert job.init is not None
        new = job.init
    p_mixed = _mixed_all(job, rows, label)
    return new, _predict_all(new, job.inputs, label), p_mixed, len(idx)


def _label_logits(labels: F32 | None, size: int) -> F64 | None:
    """Label logits by idx, NaN where a prompt has none (or was added after the labels read)."""
    if labels is None:
        return None
    out = np.full(size, np.nan)
    n = min(size, len(labels))
    out[:n] = label_logits(labels[:n])
    return out


def _mixed_all(job: _Job, rows: npt.NDArray[np.int64], label: F64 | None) -> F32 | None:
    """The mixed-group classifier's P(mixed) for every embedded prompt; None until it can learn.

    `rows`: the training rows' positions in `job.stats`."""
    block = job.inputs.embedding
    if len(rows) == 0 or block.shape[1] == 0:
        return None
    idx = job.stats.idx[rows]
    y = mixed.mixed_targets(job.stats.successes[rows], job.stats.rollouts[rows])
    if not mixed.enough(y):
        return None
    pick = mixed.sample(len(idx))  # only the sampled rows are copied, never all with history
    embedded = np.flatnonzero(job.inputs.mask)
    every = len(embedded) == block.shape[0]
    got = mixed.predict(
        block[idx[pick]],
        y[pick],
        block if every else block[embedded],
        None if label is None else label[idx[pick]],
        None if label is None else label[embedded],
    )
    out = np.full(len(job.inputs.mask), np.nan, dtype=np.float32)
    out[embedded] = got
    return out


def _training_rows(
    stats: RunStats,
    mask: npt.NDArray[np.bool_],
    step: int,
    discount: float,
    logprobs: dict[int, float],
) -> tuple[npt.NDArray[np.int64], F64, F64, F64 | None]:
    """Embedded prompts with history (positions in `stats`), their counts discounted to `step`,
    their mean logprob."""
    inside = stats.idx < len(mask)
    inside[inside] = mask[stats.idx[inside]]
    rows = np.flatnonzero(inside)
    decay = stats.decay(step, discount)[rows]
    succ = stats.disc_successes[rows] * decay
    trials = (stats.disc_successes[rows] + stats.disc_failures[rows]) * decay
    lp = None
    if logprobs:  # NaN where a prompt reported none
        lp = np.array([logprobs.get(int(i), np.nan) for i in stats.idx[rows]], dtype=np.float64)
    return rows, succ, trials, lp


async def _mean_logprobs(session: AsyncSession, run_id: int) -> dict[int, float]:
    """Each prompt's mean reported `mean_logprob`: the target of DEPO's distillation head."""
    rows = await session.execute(
        select(Outcome.prompt_idx, func.avg(Outcome.mean_logprob))
        .where(Outcome.run_id == run_id, Outcome.mean_logprob.is_not(None))
        .group_by(Outcome.prompt_idx)
    )
    return {int(i): float(v) for i, v in rows.tuples() if v is not None}


def _mixed_auc(p_mixed: F32, rows: Sequence[Any]) -> dict[str, float]:
    """How well the previous version's P(mixed) told which prompts' new outcomes were mixed."""
    got = [(float(p_mixed[i]), 0 < k < n) for i, n, k in rows if i < len(p_mixed) and n]
    got = [(p, y) for p, y in got if p == p]
    labels = {y for _, y in got}
    if len(labels) < 2:
        return {}
    score, truth = zip(*got, strict=True)
    return {"mixed_auc": float(roc_auc_score(truth, score))}


def _history_strength(job: _Job) -> tuple[float, int]:
    """The `history_from` strength this run's own counts (discounted to now) favour."""
    assert job.history is not None
    src_s, src_f = job.history
    own_s, own_f = np.zeros(len(src_s)), np.zeros(len(src_s))
    stats = job.stats
    rows = np.flatnonzero(stats.idx < len(src_s))
    decay = stats.decay(job.step, job.cfg.discount)[rows]
    own_s[stats.idx[rows]] = stats.disc_successes[rows] * decay
    own_f[stats.idx[rows]] = stats.disc_failures[rows] * decay
    return learn_strength(src_s, src_f, own_s, own_f, job.cfg.prior_alpha, job.cfg.prior_beta)


def _selection_base(
    cfg: SelectionConfig,
    prev: PredictorVersion | None,
    size: int,
    history: tuple[F64, F64] | None = None,
) -> tuple[F64, F64]:
    """The Beta prior selection scored prompts with until now: the previous version's.

    With `history_from`, the source's counts at the previous version's strength join it.
    """
    prior = None
    if prev is not None and prev.priors:
        prior = Prior(
            version=prev.version,
            rates=np.frombuffer(prev.priors, dtype=np.float32),
            drift=0.0,
            strength=prev.calibration.get("prior_strength"),
        )
    a0, b0 = prior_pseudo_counts(cfg, prior, np.arange(size, dtype=np.int64), selecting=True)
    if history is not None:
        k = prev.calibration.get("history_strength") if prev is not None else None
        n = min(size, len(history[0]))
        past = History(history[0], history[1], DEFAULT_STRENGTH if k is None else float(k))
        hs, hf = past.pseudo_counts(np.arange(n, dtype=np.int64))
        a0[:n] += hs
        b0[:n] += hf
    return a0, b0


def _predict_all(st: PredictorState, inputs: DatasetInputs, label: F64 | None = None) -> F32:
    """Every embedded prompt's calibrated rate; a labelled one not embedded yet gets its label's."""
    out = np.full(len(inputs.mask), np.nan, dtype=np.float32)
    rows = np.flatnonzero(inputs.mask)
    if len(rows):
        out[rows] = predict_rates(st, inputs.x[rows], None if label is None else label[rows])
    cal = st.meta.get("calibration")
    if label is not None and cal and "label_weight" in cal:
        bare = ~inputs.mask & np.isfinite(label)
        z = cal["centre"] + label_offset(cal, label[bare])
        out[bare] = 1.0 / (1.0 + np.exp(-z))
    return out


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
    if prev.mixed:
        scored |= _mixed_auc(np.frombuffer(prev.mixed, dtype=np.float32), rows)
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
