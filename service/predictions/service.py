"""Predictions for stored prompts (prior plus history) or raw texts (the prior alone)."""

from __future__ import annotations

import asyncio

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from service import estimates
from service.datasets import service as datasets
from service.embedding import Embedders, embed_inputs
from service.estimator.beta import beta_std, p_mixed
from service.estimator.calibrate import predict_rates
from service.estimator.embedders import ENCODER_EMBEDDERS
from service.estimator.prior import strength
from service.exceptions import InvalidInput
from service.hotstats.store import HotStore
from service.models import Dataset, Run
from service.policy import SelectionConfig
from service.predictions.schemas import Prediction, PredictorRead, PredictResponse
from service.predictor import versions
from service.predictor.cache import PredictorCache
from service.predictor.cadence import next_fit_at

MAX_ENCODER_TEXTS = 256
"""Raw texts per /predict on a transformer embedder: about 5 s of embedding, inside the request."""


async def for_prompts(
    session: AsyncSession,
    hot: HotStore,
    cache: PredictorCache,
    run: Run,
    policy: SelectionConfig,
    prompt_ids: list[str],
) -> PredictResponse:
    """Stored prompts: the same estimate selection uses, without selection's prior floor."""
    ids = await datasets.resolve_ids(session, run.dataset_id, prompt_ids)
    missing = [p for p in prompt_ids if p not in ids]
    if missing:
        raise InvalidInput(
            f"{len(missing)} prompt_id(s) not in the run's dataset, e.g. {missing[:5]}",
            field="prompt_ids",
            missing=missing[:100],
        )
    idx = np.array([ids[p][1] for p in prompt_ids], dtype=np.int64)
    view = await estimates.for_run(session, hot, cache, run, policy)
    est = await view.at(idx)
    mean, std, mixed = est.mean, est.std, est.p_mixed(run.group_size)
    return PredictResponse(
        model_version=view.version,
        items=[
            Prediction(
                id=pid,
                pass_rate=float(mean[i]),
                uncertainty=float(std[i]),
                p_informative=float(mixed[i]),
                prior=float(est.prior_mean[i]),
                observations=int(est.stats.groups[i]),
                model_version=view.version,
            )
            for i, pid in enumerate(prompt_ids)
        ],
    )


async def for_texts(
    session: AsyncSession,
    cache: PredictorCache,
    embedders: Embedders,
    run: Run,
    policy: SelectionConfig,
    texts: list[str],
) -> PredictResponse:
    """Raw texts (routing queries): the newest version's prediction as a Beta prior."""
    dataset = await session.get_one(Dataset, run.dataset_id)
    if dataset.embedder == "client":
        raise InvalidInput(
            "this run's dataset embeds on the client: send prompt_ids", field="texts"
        )
    if dataset.embedder in ENCODER_EMBEDDERS and len(texts) > MAX_ENCODER_TEXTS:
        raise InvalidInput(
            f"{len(texts)} texts sent; this run's dataset embeds with {dataset.embedder!r}, "
            f"a transformer at about 50 texts/s on CPU, so send at most {MAX_ENCODER_TEXTS} "
            "texts per request",
            field="texts",
        )
    fitted = await versions.model(cache, session, run.id)
    if fitted is None:
        m = np.full(len(texts), policy.prior_alpha / (policy.prior_alpha + policy.prior_beta))
        version = None
    else:
        version, model = fitted
        embedder = await embedders.get(dataset.embedder)
        x = await asyncio.to_thread(embed_inputs, embedder, texts)
        m = np.clip(predict_rates(model, x).astype(np.float64), 0.01, 0.99)
    k = strength(policy, await versions.priors(cache, session, run.id))
    a, b = m * k, (1 - m) * k
    mixed, std = p_mixed(a, b, run.group_size), beta_std(a, b)
    return PredictResponse(
        model_version=version,
        items=[
            Prediction(
                pass_rate=float(m[i]),
                uncertainty=float(std[i]),
                p_informative=float(mixed[i]),
                prior=float(m[i]),
                model_version=version,
            )
            for i in range(len(texts))
        ],
    )


async def current(session: AsyncSession, run: Run) -> PredictorRead:
    row = await versions.latest(session, run.id, blobs=False)
    return PredictorRead(
        version=row.version if row else None,
        trained_on=row.trained_on if row else 0,
        fitted_at=row.fitted_at if row else None,
        calibration=row.calibration if row else {},
        outcomes_since=run.outcome_seq - (row.trained_on if row else 0),
        next_fit_at=next_fit_at(
            SelectionConfig.model_validate(run.selection), run, row.trained_on if row else None
        ),
        init_from=run.init_from,
        history_from=run.history_from,
    )
