"""Embed uploaded prompts in the background, chunk by chunk, so upload returns at once."""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import numpy.typing as npt
from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.datasets.models import Dataset, Prompt
from service.estimator import Embedder, get_embedder
from service.estimator.inputs import model_inputs
from service.jobs import Jobs

log = logging.getLogger(__name__)

CHUNK = 2_000


def encode(vec: npt.NDArray[np.float32]) -> bytes:
    """float16 halves storage; the predictor standardises features, so precision is ample."""
    return np.asarray(vec, dtype=np.float16).tobytes()


def decode(blobs: list[bytes]) -> npt.NDArray[np.float32]:
    """One join and one reshape instead of a Python-level frombuffer per prompt."""
    if not blobs:
        return np.zeros((0, 0), dtype=np.float32)
    width = len(blobs[0])
    if any(len(b) != width for b in blobs):
        raise ValueError("stored embeddings of one dataset differ in width")
    flat = np.frombuffer(b"".join(blobs), dtype=np.float16)
    return flat.reshape(len(blobs), width // 2).astype(np.float32)


def embed_inputs(embedder: Embedder, texts: list[str]) -> npt.NDArray[np.float32]:
    """What the predictor reads: the embedding with cheap text features appended."""
    out: npt.NDArray[np.float32] = model_inputs(embedder.embed(texts), texts)
    return out


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


async def embedded_count(session: AsyncSession, dataset_id: int) -> int:
    stmt = select(func.count()).where(
        Prompt.dataset_id == dataset_id, Prompt.embedding.is_not(None)
    )
    return int((await session.execute(stmt)).scalar_one())


class EmbeddingJobs:
    """Embed each dataset's pending prompts; replicas may overlap, their writes are idempotent."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        read_sessionmaker: async_sessionmaker[AsyncSession],
        embedders: Embedders,
        jobs: Jobs,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.read_sessionmaker = read_sessionmaker
        self.embedders = embedders
        self.jobs = jobs

    def kick(self, dataset_id: int) -> None:
        """Start embedding a dataset's pending prompts, or go round again after the current pass."""
        self.jobs.spawn(f"embed:{dataset_id}", lambda: self._run(dataset_id))

    async def resume_all(self) -> None:
        """After a restart, finish what earlier processes left unembedded."""
        async with self.read_sessionmaker() as session:
            rows = await session.execute(
                select(Prompt.dataset_id).where(Prompt.embedding.is_(None)).distinct()
            )
            for dataset_id in rows.scalars():
                self.kick(dataset_id)

    async def _run(self, dataset_id: int) -> int:
        done = 0
        t0 = time.perf_counter()
        while n := await self._chunk(dataset_id):
            done += n
        if done:
            log.info(
                "embedded %d prompts of dataset %s in %.1f s",
                done,
                dataset_id,
                time.perf_counter() - t0,
            )
        return done

    async def _chunk(self, dataset_id: int) -> int:
        async with self.read_sessionmaker() as session:
            dataset = await session.get_one(Dataset, dataset_id)
            if dataset.embedder == "client":
                return 0
            rows = (
                await session.execute(
                    select(Prompt.id, Prompt.text, Prompt.content_hash)
                    .where(Prompt.dataset_id == dataset_id, Prompt.embedding.is_(None))
                    .order_by(Prompt.idx)
                    .limit(CHUNK)
                )
            ).all()
            name = dataset.embedder
            await session.commit()
        if not rows:
            return 0
        embedder = await self.embedders.get(name)
        vecs = await asyncio.to_thread(embed_inputs, embedder, [r.text for r in rows])
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
                    {"b_id": r.id, "b_h": r.content_hash, "b_emb": encode(v)}
                    for r, v in zip(rows, vecs, strict=True)
                ],
            )
            await session.commit()
        return len(rows)
