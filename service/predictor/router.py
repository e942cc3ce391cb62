"""Predict pass rates for stored prompts or raw texts, and show the current predictor."""

from __future__ import annotations

import asyncio

import numpy as np
from fastapi import APIRouter

from service.datasets import service as datasets
from service.datasets.embedding import embed_inputs
from service.datasets.models import Dataset
from service.deps import ReadSessionDep, StateDep
from service.estimator.embedders import ENCODER_EMBEDDERS
from service.exceptions import InvalidInput
from service.predictor import service
from service.predictor.calibrate import predict_rates
from service.predictor.schemas import Prediction, PredictorRead, PredictRequest, PredictResponse
from service.runs import service as runs
from service.runs.schemas import SelectionConfig
from service.stats.math import PromptStats, p_informative
from service.stats.service import catch_up

router = APIRouter(prefix="/runs", tags=["predictor"])

MAX_ENCODER_TEXTS = 256
"""Raw texts per /predict on a transformer embedder: about 5 s of embedding, inside the request."""


def _groups(s: PromptStats | None) -> int:
    return s.groups if s is not None else 0


def _beta_std(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    return out


@router.post("/{run}/predict", response_model=PredictResponse)
async def predict_pass_rates(
    run: str, body: PredictRequest, session: ReadSessionDep, state: StateDep
) -> PredictResponse:
    """Stored prompts get prior plus history; raw texts (routing queries) get the prior alone."""
    r = await runs.get_by_name(session, run)
    cfg = SelectionConfig.model_validate(r.selection)
    if body.prompt_ids is not None:
        ids = await datasets.resolve_ids(session, r.dataset_id, body.prompt_ids)
        missing = [p for p in body.prompt_ids if p not in ids]
        if missing:
            raise InvalidInput(
                f"{len(missing)} prompt_id(s) not in the run's dataset, e.g. {missing[:5]}",
                field="prompt_ids",
                missing=missing[:100],
            )
        idx = np.array([ids[p][1] for p in body.prompt_ids], dtype=np.int64)
        prior = await service.priors(state, session, r.id)
        version = prior.version if prior is not None else None
        await catch_up(session, state.hot, r.id, r.outcome_seq, cfg.discount)
        est = await service.estimate(state, r.id, cfg, prior, idx, max(r.max_step, 0))
        a, b, stats = est.alpha, est.beta, est.stats
        mixed = p_informative(a, b, r.group_size)
        std = _beta_std(a, b)
        return PredictResponse(
            model_version=version,
            items=[
                Prediction(
                    id=pid,
                    pass_rate=float(a[i] / (a[i] + b[i])),
                    uncertainty=float(std[i]),
                    p_informative=float(mixed[i]),
                    prior=float(est.prior_mean[i]),
                    observations=_groups(stats[i]),
                    model_version=version,
                )
                for i, pid in enumerate(body.prompt_ids)
            ],
        )
    texts = body.texts or []
    dataset = await session.get_one(Dataset, r.dataset_id)
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
    fitted = await service.model(state, session, r.id)
    if fitted is None:
        m = np.full(len(texts), cfg.prior_alpha / (cfg.prior_alpha + cfg.prior_beta))
        version = None
    else:
        version, model = fitted
        embedder = await state.embedders.get(dataset.embedder)
        x = await asyncio.to_thread(embed_inputs, embedder, texts)
        m = np.clip(predict_rates(model, x).astype(np.float64), 0.01, 0.99)
    k = service.strength(cfg, await service.priors(state, session, r.id))
    a, b = m * k, (1 - m) * k
    mixed, std = p_informative(a, b, r.group_size), _beta_std(a, b)
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


@router.get("/{run}/predictor", response_model=PredictorRead)
async def get_predictor(run: str, session: ReadSessionDep) -> PredictorRead:
    r = await runs.get_by_name(session, run)
    row = await service.latest(session, r.id, blobs=False)
    return PredictorRead(
        version=row.version if row else None,
        trained_on=row.trained_on if row else 0,
        fitted_at=row.fitted_at if row else None,
        calibration=row.calibration if row else {},
        outcomes_since=r.outcome_seq - (row.trained_on if row else 0),
        init_from=r.init_from,
    )
