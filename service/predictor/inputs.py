"""A dataset's stored embeddings as the predictor reads them, and the fit settings they need."""

from __future__ import annotations

import asyncio

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.embedding import decode_inputs
from service.estimator import N_FEATURES
from service.estimator.inputs import DatasetInputs, input_blocks
from service.estimator.sparse import document_frequency_weights, is_sparse
from service.models import Dataset, Prompt
from service.predictor.cache import PredictorCache


async def dataset_inputs(
    cache: PredictorCache, session: AsyncSession, dataset: Dataset
) -> DatasetInputs:
    """Load the stored inputs, again only when embeddings were added or prompts rewritten."""
    count, changed = (
        await session.execute(
            select(func.count(Prompt.embedding), func.max(Prompt.updated_at)).where(
                Prompt.dataset_id == dataset.id
            )
        )
    ).one()
    dataset_id, size = dataset.id, dataset.prompt_count
    embedded = (int(count), str(changed))
    cached = cache.inputs.get(dataset_id)
    if cached is not None and cached[0] == embedded and len(cached[1].mask) == size:
        return cached[1]
    rows = (
        await session.execute(
            select(Prompt.idx, Prompt.embedding).where(
                Prompt.dataset_id == dataset_id, Prompt.embedding.is_not(None)
            )
        )
    ).all()
    if not rows:
        inputs = DatasetInputs(np.zeros((size, 0), dtype=np.float32), np.zeros(size, dtype=bool))
    else:
        idx = np.array([r.idx for r in rows], dtype=np.int64)
        blobs = [r.embedding for r in rows]
        inputs = await asyncio.to_thread(_place_rows, dataset.embedder, blobs, idx, size)
    cache.inputs[dataset_id] = (embedded, inputs)
    return inputs


def _place_rows(
    embedder: str, blobs: list[bytes], idx: npt.NDArray[np.int64], size: int
) -> DatasetInputs:
    """Decode stored rows into a matrix indexed by prompt idx (absent rows stay zero)."""
    vecs = decode_inputs(embedder, blobs)
    mask = np.zeros(size, dtype=bool)
    mask[idx] = True
    if not is_sparse(vecs):
        x = np.zeros((size, vecs.shape[1]), dtype=np.float32)
        x[idx] = vecs
        return DatasetInputs(x, mask)
    if np.any(np.diff(idx) <= 0):  # rows come in idx order as stored; copy only if not
        order = np.argsort(idx)
        vecs, idx = vecs[order], idx[order]
    counts = np.zeros(size, dtype=np.int64)
    counts[idx] = np.diff(vecs.indptr)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    x = sp.csr_matrix((vecs.data, vecs.indices, indptr), shape=(size, vecs.shape[1]))
    # idf for the n-gram block only: MiniLM's dense block beside it (`ngrams-minilm`) keeps 1
    grams = input_blocks(embedder, x.shape[1] - N_FEATURES)[0]
    weights = np.ones(x.shape[1])
    weights[:grams] = document_frequency_weights(vecs, slice(0, grams))
    return DatasetInputs(x, mask, weights.astype(np.float32))
