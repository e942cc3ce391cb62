"""Sparse model inputs (CSR): the few operations the predictor needs, without densifying."""

from __future__ import annotations

import warnings
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import torch

Matrix: TypeAlias = "npt.NDArray[np.float32] | sp.csr_matrix"
"""Model inputs: dense rows, or CSR rows for sparse embedders (`ngrams`)."""


def is_sparse(x: Any) -> bool:
    """True for scipy sparse matrices, which need the paths below."""
    return bool(sp.issparse(x))


def as_inputs(x: Any) -> Any:
    """Dense input as contiguous float32, sparse as float32 CSR with sorted indices."""
    if is_sparse(x):
        m = sp.csr_matrix(x, dtype=np.float32)
        m.sort_indices()
        return m
    return np.asarray(x, dtype=np.float32)


def weighted_moments(x: Any, w: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], Any]:
    """Weighted column mean and variance of a CSR matrix, from two sparse mat-vecs."""
    wn = w.astype(np.float64) / float(w.sum())
    mean = np.asarray(x.T @ wn, dtype=np.float64).ravel()
    second = np.asarray(x.multiply(x).T @ wn, dtype=np.float64).ravel()
    return mean.astype(np.float32), np.maximum(second - mean * mean, 0.0)


def dense_columns(x: Any, cols: slice) -> npt.NDArray[np.float32]:
    """A few columns of a CSR matrix as a dense array (the text-feature block)."""
    return np.asarray(x[:, cols].toarray(), dtype=np.float32)


def document_frequency_weights(x: Any, cols: slice) -> npt.NDArray[np.float64]:
    """Smoothed idf of each column in `cols` over all rows (every prompt text is known)."""
    # a row holds each column once, so counting all indices counts rows per column; no slice
    df = np.bincount(x.indices, minlength=x.shape[1])[cols].astype(np.float64)
    out: npt.NDArray[np.float64] = np.log((1.0 + x.shape[0]) / (1.0 + df)) + 1.0
    return out


def torch_csr(x: Any) -> torch.Tensor:
    """A scipy CSR matrix as a torch CSR tensor (torch's kernels release the GIL)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(
            torch.from_numpy(x.indptr.astype(np.int64)),
            torch.from_numpy(x.indices.astype(np.int64)),
            torch.from_numpy(np.asarray(x.data, dtype=np.float32)),
            size=x.shape,
            check_invariants=False,
        )


class CsrMatMul(torch.autograd.Function):
    """X @ W with the gradient X^T @ G, both as forward CSR products.

    Autograd through torch's sparse matmul is too slow to converge within a fit's time budget
    (measured: about 30 s against 4 s on 32,000 prompts by 2^18 columns); a CSR copy of X^T
    makes the backward pass a forward product too. scipy's products would hold the GIL and
    stall request handling while a fit runs; torch's release it.
    """

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, x: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
        """W is (d, k); returns (n, k)."""
        ctx.xt = xt
        return x @ w.detach().contiguous()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        """Only W needs a gradient; X is data."""
        grad: torch.Tensor = ctx.xt @ g.contiguous()
        return grad, None, None


class ScaledCsr:
    """Standardised sparse inputs for training: (X - mean) / scale, kept sparse.

    Centring is folded into a per-output offset (mean / scale) @ W, so X keeps its zeros.
    """

    def __init__(
        self,
        x: Any,
        mean: npt.NDArray[np.float32],
        scale: npt.NDArray[np.float32],
        outputs: int | None = None,
    ):
        """Scale the columns once and keep the transpose for the backward pass.

        `outputs` limits the product to a layer's first outputs (the rest read as zero):
        without logprob data the second head is unused, and each head costs a full pass.
        """
        self.outputs = outputs
        inv = (1.0 / scale).astype(np.float32)
        scaled = sp.csr_matrix(x @ sp.diags(inv), dtype=np.float32)
        self.x = torch_csr(scaled)
        self.xt = torch_csr(scaled.T.tocsr())
        self.centre = torch.from_numpy((mean * inv).astype(np.float32))

    def linear(self, layer: torch.nn.Linear) -> torch.Tensor:
        """What `layer(standardised x)` would give, without materialising x densely."""
        k = layer.out_features if self.outputs is None else min(self.outputs, layer.out_features)
        w = layer.weight[:k].t()
        out: torch.Tensor = CsrMatMul.apply(w, self.x, self.xt)  # type: ignore[no-untyped-call]
        out = out - self.centre @ w + layer.bias[:k]
        if k < layer.out_features:
            out = torch.cat([out, out.new_zeros((out.shape[0], layer.out_features - k))], dim=1)
        return out
