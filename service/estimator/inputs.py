"""Glue from embeddings + prompt texts to the model's input matrix and block layout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from .embedders import HashingEmbedder, MiniLMEmbedder, NgramsEmbedder
from .features import N_FEATURES, text_features
from .sparse import as_inputs, is_sparse


def model_inputs(embeddings: Any, texts: Sequence[str] | None) -> Any:
    """Return [embedding || text features]; without texts the feature block is zero.

    Zero columns are harmless: standardisation leaves constant columns at weight ~0.
    Sparse embeddings give a CSR result, dense ones a dense array.
    """
    emb = as_inputs(embeddings)
    if texts is None:
        feats = np.zeros((emb.shape[0], N_FEATURES), dtype=np.float32)
    else:
        if len(texts) != emb.shape[0]:
            raise ValueError("need one text per embedding row")
        feats = text_features(texts)
    if is_sparse(emb):
        return as_inputs(sp.hstack([emb, sp.csr_matrix(feats)], format="csr"))
    return np.hstack([emb, feats])


# embedders that put MiniLM's columns beside another block: the first block's embedder
_WITH_MINILM: dict[str, type[HashingEmbedder | NgramsEmbedder]] = {
    "hybrid": HashingEmbedder,
    "ngrams-minilm": NgramsEmbedder,
}


def input_blocks(embedder: str, embedding_dim: int) -> tuple[int, ...]:
    """Block layout for FitConfig.blocks, so each embedder keeps its own scale."""
    if embedder in _WITH_MINILM:
        first, minilm = _WITH_MINILM[embedder]().dim, MiniLMEmbedder().dim
        if embedding_dim != first + minilm:
            raise ValueError(f"{embedder} embeddings must have width {first + minilm}")
        return (first, minilm, N_FEATURES)
    return (embedding_dim, N_FEATURES)
