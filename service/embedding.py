"""Embed uploaded prompts in the background, chunk by chunk, so upload returns at once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from sqlalchemy import Select, Table, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.background import Background
from service.db import vacuum
from service.estimator import N_FEATURES, Embedder, get_embedder
from service.estimator.embedders import SPARSE_EMBEDDERS
from service.estimator.inputs import model_inputs
from service.estimator.sparse import Matrix, is_sparse
from service.models import Dataset, Prompt

log = logging.getLogger(__name__)

CHUNK = 2_000


F16_MAX = float(np.finfo(np.float16).max)


def _f16(a: Any) -> npt.NDArray[np.float16]:
    """Clipped to float16's range: a count feature of a huge text must not become inf."""
    return np.clip(np.asarray(a, dtype=np.float32), -F16_MAX, F16_MAX).astype(np.float16)


def encode(vec: npt.NDArray[np.float32]) -> bytes:
    """float16 halves storage; the predictor standardises features, so precision is ample."""
    return _f16(vec).tobytes()


_SPARSE_ENTRY = np.dtype([("col", "<i4"), ("val", "<f2")])


def encode_rows(x: Any) -> list[bytes]:
    """One blob per row: dense float16, or (int32 column, float16 value) pairs for CSR rows."""
    if not is_sparse(x):
        return [encode(v) for v in x]
    out = []
    for i in range(x.shape[0]):
        lo, hi = x.indptr[i], x.indptr[i + 1]
        entries = np.empty(hi - lo, dtype=_SPARSE_ENTRY)
        entries["col"] = x.indices[lo:hi]
        entries["val"] = _f16(x.data[lo:hi])
        out.append(entries.tobytes())
    return out


def decode_sparse(blobs: list[bytes], width: int) -> Any:
    """Inverse of `encode_rows` for CSR rows: one join, no per-row parsing."""
    if any(len(b) % _SPARSE_ENTRY.itemsize for b in blobs):
        raise ValueError("stored sparse embedding has a partial entry")
    entries = np.frombuffer(b"".join(blobs), dtype=_SPARSE_ENTRY)
    if len(entries) and (entries["col"].min() < 0 or entries["col"].max() >= width):
        raise ValueError(f"stored sparse embedding has a column outside 0..{width - 1}")
    counts = np.fromiter((len(b) // _SPARSE_ENTRY.itemsize for b in blobs), np.int64, len(blobs))
    indptr = np.concatenate([[0], np.cumsum(counts)])
    data = entries["val"].astype(np.float32)
    return sp.csr_matrix((data, entries["col"].copy(), indptr), shape=(len(blobs), width))


def input_width(embedder: str) -> int | None:
    """Width of a sparse embedder's model inputs; None where stored rows are dense."""
    if embedder not in SPARSE_EMBEDDERS:
        return None
    return get_embedder(embedder).dim + N_FEATURES


def decode_inputs(embedder: str, blobs: list[bytes]) -> Any:
    """A dataset's stored rows as the model reads them: dense, or CSR for sparse embedders."""
    width = input_width(embedder)
    return decode(blobs) if width is None else decode_sparse(blobs, width)


def decode(blobs: list[bytes]) -> npt.NDArray[np.float32]:
    """One join and one reshape instead of a Python-level frombuffer per prompt."""
    if not blobs:
        return np.zeros((0, 0), dtype=np.float32)
    width = len(blobs[0])
    if any(len(b) != width for b in blobs):
        raise ValueError("stored embeddings of one dataset differ in width")
    flat = np.frombuffer(b"".join(blobs), dtype=np.float16)
    return flat.reshape(len(blobs), width // 2).astype(np.float32)


def embed_inputs(embedder: Embedder, texts: list[str]) -> Matrix:
    """What the predictor reads: the embedding with cheap text features appended."""
    out: Matrix = model_inputs(embedder.embed(texts), texts)
    return out


def embed_blobs(embedder: Embedder, texts: list[str]) -> list[bytes]:
    """Embed and encode in one worker-thread call: both are CPU work."""
    return encode_rows(embed_inputs(embedder, texts))


class Embedders:
    """One instance per embedder name, created on first use (MiniLM costs seconds to load)."""

    def __init__(self) -> None:
        self._made: dict[str, Embedder] = {}
        self._lock = asyncio.Lock()

    async def get(self, name: str) -> Embedder:
        async with self._lock:
            if name not in self._made:
                self._made[name] = await asyncio.to_thread(get_embedder, name)
            return self._made[name]


async def embedded_count(session: AsyncSession, dataset: Dataset) -> int:
    """All but the unembedded, which ix_prompts_unembedded counts without reading the rest."""
    stmt = select(func.count()).where(Prompt.dataset_id == dataset.id, Prompt.embedding.is_(None))
    return dataset.prompt_count - int((await session.execute(stmt)).scalar_one())


def next_chunk(dataset_id: int, after: int) -> Select[int, int, str, str]:
    """Unembedded prompts past `after`: ix_prompts_unembedded makes a chunk cost only its rows."""
    return (
        select(Prompt.id, Prompt.idx, Prompt.text, Prompt.content_hash)
        .where(Prompt.dataset_id == dataset_id, Prompt.embedding.is_(None), Prompt.idx > after)
        .order_by(Prompt.idx)
        .limit(CHUNK)
    )


VACUUM_MIN_ROWS = 10_000  # a pass that rewrote this many prompts ends with their VACUUM


class EmbeddingJobs:
    """Embed each dataset's pending prompts; replicas may overlap, their writes are idempotent."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        read_sessionmaker: async_sessionmaker[AsyncSession],
        embedders: Embedders,
        background: Background,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.read_sessionmaker = read_sessionmaker
        self.embedders = embedders
        self.background = background
        # after a pass embedded something: fits that were due while nothing was embedded
        self.on_embedded: Callable[[int], Awaitable[None]] | None = None

    def kick(self, dataset_id: int) -> None:
        """Start embedding a dataset's pending prompts, or go round again after the current pass."""
        self.background.submit("embed", dataset_id)

    async def resume_all(self) -> None:
        """After a restart, finish what earlier processes left unembedded."""
        async with self.read_sessionmaker() as session:
            rows = await session.execute(
                select(Prompt.dataset_id).where(Prompt.embedding.is_(None)).distinct()
            )
            for dataset_id in rows.scalars():
                self.kick(dataset_id)

    async def run(self, dataset_id: int) -> int:
        done, after = 0, -1
        t0 = time.perf_counter()
        # keyset on idx: each chunk starts past the last, so no chunk rereads earlier rows; a
        # prompt rewritten behind the pass kicks another pass, which starts from the front
        while chunk := await self._chunk(dataset_id, after):
            n, after = chunk
            done += n
        if done:
            log.info(
                "embedded %d prompts of dataset %s in %.1f s",
                done,
                dataset_id,
                time.perf_counter() - t0,
            )
            if done >= VACUUM_MIN_ROWS:
                await vacuum(self.sessionmaker.kw["bind"], Prompt.__tablename__)
            if self.on_embedded is not None:
                await self.on_embedded(dataset_id)
        return done

    async def _chunk(self, dataset_id: int, after: int) -> tuple[int, int] | None:
        """Embed the next unembedded prompts past idx `after`; their count and last idx."""
        async with self.read_sessionmaker() as session:
            dataset = await session.get_one(Dataset, dataset_id)
            if dataset.embedder == "client":
                return None
            rows = (await session.execute(next_chunk(dataset_id, after))).all()
            name = dataset.embedder
            await session.commit()
        if not rows:
            return None
        embedder = await self.embedders.get(name)
        blobs = await asyncio.to_thread(embed_blobs, embedder, [r.text for r in rows])
        async with self.sessionmaker() as session:
            # a prompt rewritten meanwhile keeps NULL and is embedded on the next pass
            table = Prompt.__table__
            assert isinstance(table, Table)
            stmt = (
                update(table)
                .where(table.c.id == bindparam("b_id"), table.c.content_hash == bindparam("b_h"))
                .values(embedding=bindparam("b_emb"))
            )
            await session.execute(
                stmt,
                [
                    {"b_id": r.id, "b_h": r.content_hash, "b_emb": blob}
                    for r, blob in zip(rows, blobs, strict=True)
                ],
            )
            await session.commit()
        return len(rows), int(rows[-1].idx)
