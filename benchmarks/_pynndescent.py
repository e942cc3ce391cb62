"""pynndescent's approximate k nearest neighbours, the service's graph past 30,000 prompts until
2026-12-02: kept for benchmarks/neighbours.py's comparison (the service now finds rows among
rare-column candidates, `Graph.pruned_of` in service/estimator/exposure.py, on demand).

pynndescent's NN-descent works on the sparse n-gram rows as they are, by their own cosine.
The libraries for dense vectors (faiss, hnswlib) need a dense sketch first, and on `ngrams`
prompts a 512-wide sketch with 200 candidates re-ranked exactly still found only 0.88 of the
exact neighbours at 30,000 prompts (`benchmarks/neighbours.py`, docs/benchmarks.md): the
neighbours' cosines are close together, and a sketch's error is as large as their gaps.

A pure function of the rows, so it can run in a worker process. Its numba kernels hold the
GIL while they run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

# NN-descent keeps this many more per row than asked for: at 30,000 `ngrams` prompts,
# recall@10 is 0.90 with 11 kept and 0.96 with 16
EXTRA = 6


def unit_rows(x: Any) -> Any:
    """Rows scaled to unit norm (zero rows stay zero): CSR float32 or dense float32."""
    if sp.issparse(x):
        m: Any = sp.csr_matrix(x, dtype=np.float32)
        norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
        return sp.csr_matrix(sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ m, dtype=np.float32)
    d = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(d, axis=1)
    out: F32 = (d / np.where(norms > 0, norms, 1.0)[:, None]).astype(np.float32)
    return out


def nearest(x: Any, k: int, *, threads: int = 1, seed: int = 0) -> tuple[I64, F32]:
    """Each row's k nearest other non-zero rows (n, k) and their cosines, approximately.

    Zero rows (not embedded yet) get no neighbours and are no one's: similarity 0, which
    passes nothing on. A row with fewer than k found is padded the same way.
    """
    n = x.shape[0]
    nb = np.zeros((n, k), np.int64)
    sim = np.zeros((n, k), np.float32)
    unit = unit_rows(x)
    if sp.issparse(unit):
        unit.eliminate_zeros()
        present = np.flatnonzero(np.diff(unit.indptr) > 0)
    else:
        present = np.flatnonzero(np.any(unit != 0, axis=1))
    m = len(present)
    if k == 0 or m < 2:
        return nb, sim
    keep = min(k + EXTRA, m)
    rows = unit[present]
    if m <= 4 * keep:  # too few for NN-descent: all pairs
        dense = rows @ rows.T
        dense = np.asarray(dense.toarray() if sp.issparse(dense) else dense, np.float32)
        np.fill_diagonal(dense, -np.inf)
        found = np.argsort(-dense, axis=1)[:, :keep]
        dist = 1.0 - np.take_along_axis(dense, found, axis=1)
    else:
        from pynndescent import NNDescent

        index = NNDescent(
            rows,
            metric="cosine",
            n_neighbors=keep,
            random_state=seed,
            n_jobs=threads,
            low_memory=True,
            compressed=True,
        )
        found, dist = index.neighbor_graph
    found = np.asarray(found, dtype=np.int64)
    cos = 1.0 - np.asarray(dist, dtype=np.float32)
    # itself, and slots NN-descent left empty (-1), sort last
    bad = (found < 0) | (found == np.arange(m)[:, None]) | ~np.isfinite(cos)
    order = np.argsort(np.where(bad, np.inf, -cos), axis=1, kind="stable")[:, :k]
    found = np.take_along_axis(found, order, axis=1)
    cos = np.take_along_axis(cos, order, axis=1)
    bad = np.take_along_axis(bad, order, axis=1)
    width = found.shape[1]
    nb[present, :width] = present[np.where(bad, 0, found)]
    sim[present, :width] = np.where(bad, 0.0, np.clip(cos, 0.0, 1.0))
    return nb, sim
