"""Glue from embeddings + prompt texts to the model's input matrix and block layout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from .embedders import HashingEmbedder, MiniLMEmbedder
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


def input_blocks(embedder: str, embedding_dim: int) -> tuple[int, ...]:
    """Block layout for FitConfig.blocks, so each embedder keeps its own scale."""
    if embedder == "hybrid":
        minilm = MiniLMEmbedder().dim
        if embedding_dim != HashingEmbedder().dim + minilm:
            raise ValueError(f"hybrid embeddings must have width {HashingEmbedder().dim + minilm}")
        return (embedding_dim - minilm, minilm, N_FEATURES)
    return (embedding_dim, N_FEATURES)
