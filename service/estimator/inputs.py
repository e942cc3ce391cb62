"""Glue from embeddings + prompt texts to the model's input matrix and block layout."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from .embedders import SPARSE_EMBEDDERS, HashingEmbedder, MiniLMEmbedder, NgramsEmbedder
from .features import N_FEATURES, text_features
from .model import FitConfig
from .sparse import Matrix, as_inputs, is_sparse

F32 = npt.NDArray[np.float32]


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


@dataclass
class DatasetInputs:
    """A dataset's model inputs by dense idx; rows not embedded yet are absent from `mask`.

    `x` is CSR for sparse embedders; `column_weights` then holds their idf over the dataset.
    """

    x: Matrix
    mask: npt.NDArray[np.bool_]
    column_weights: F32 | None = None

    @functools.cached_property
    def embedding(self) -> Matrix:
        """The embedding block without the text features, sliced once per load."""
        # 1.5-4.5 s at 1,000,000 n-gram rows: shared by the neighbour graph and the classifier
        dim = self.x.shape[1] - N_FEATURES
        if dim <= 0:
            return self.x[:, :0]
        out: Matrix = self.x[:, :dim]
        return out


# MiniLM's block beside sparse n-grams, in total standard deviation against theirs: 5-fold
# DeepScaleR cold start is flat from 0.25 to 0.5 (0.471-0.472) and lower at 0.7 and 1.0
MINILM_GAIN = 0.35


def fit_config(
    embedder: str, dim: int, threads: int, column_weights: F32 | None = None
) -> FitConfig:
    """Each embedder's block keeps its own scale; client vectors are one block.

    Few threads: a fit shares the machine with request handling and must not starve it.
    Sparse n-grams need far less shrinkage than dense blocks, each weight seeing few prompts,
    and the ranking hinge does not help them. On DeepScaleR cold start
    (`benchmarks/cold_start_features.py --torch`), the binomial loss alone at l2 1e-5 reaches
    Spearman 0.457 fitted on true rates and 0.452 on one group of 8; with the hinge at
    weight 3 (l2 3e-4), 0.454 and 0.451.
    """
    blocks: tuple[int, ...]
    if embedder == "client" or dim <= N_FEATURES:
        blocks = (dim - N_FEATURES, N_FEATURES) if dim > N_FEATURES else (dim,)
    else:
        blocks = input_blocks(embedder, dim - N_FEATURES)
    if embedder in SPARSE_EMBEDDERS:
        gains = None
        if len(blocks) == 3:  # n-grams, MiniLM, text features
            gains = (1.0, MINILM_GAIN, FitConfig.feature_gain)
        return FitConfig(
            blocks=blocks,
            block_gains=gains,
            num_threads=threads,
            column_weights=column_weights,
            l2=1e-5,
            ranking_weight=0.0,
        )
    return FitConfig(blocks=blocks, num_threads=threads)
