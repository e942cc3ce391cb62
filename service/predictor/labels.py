"""A dataset's known difficulties by prompt idx, and the prior they give a run before any fit."""

from __future__ import annotations

import numpy as np
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.estimator.inputs import F32
from service.estimator.prior import Prior, label_prior
from service.models import Dataset, Prompt, Run
from service.policy import SelectionConfig
from service.predictor.cache import PredictorCache


async def dataset_labels(
    cache: PredictorCache, session: AsyncSession, dataset: Dataset
) -> F32 | None:
    """Each prompt's `prior_pass_rate` by dense idx (NaN: none); None when no upload wrote one.

    Read again only when an upload changed a label (`label_rev`) or added prompts.
    """
    if not dataset.label_rev:
        return None
    key = (dataset.label_rev, dataset.prompt_count)
    cached = cache.labels.get(dataset.id)
    if cached is not None and cached[0] == key:
        return cached[1]
    rows = (
        await session.execute(
            select(Prompt.idx, Prompt.prior_pass_rate).where(
                Prompt.dataset_id == dataset.id, Prompt.prior_pass_rate.is_not(None)
            )
        )
    ).all()
    out: F32 | None = None
    if rows:
        out = np.full(dataset.prompt_count, np.nan, dtype=np.float32)
        idx = np.array([r.idx for r in rows], dtype=np.int64)
        out[idx] = np.array([r.prior_pass_rate for r in rows], dtype=np.float32)
    cache.labels[dataset.id] = (key, out)
    return out


async def cold_prior(
    cache: PredictorCache, session: AsyncSession, run: Run, cfg: SelectionConfig
) -> Prior | None:
    """Before a run's first fit: its prompts' known difficulties, None when it has none."""
    dataset = await session.get_one(Dataset, run.dataset_id)
    labels = await dataset_labels(cache, session, dataset)
    return None if labels is None else label_prior(labels, cfg)
