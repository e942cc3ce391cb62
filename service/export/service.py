"""Every prompt of a run's dataset with its estimate, read in idx chunks so memory stays flat.

Prompt idx is dense (0 .. prompt_count - 1) and stable, so a chunk is an idx range: a keyset
page on the (dataset_id, idx) index. Each chunk is read in its own short session, so a long
export holds no transaction open. The estimate is `service.estimates`' own (the same function
`/predict` calls), against the predictor version and step fixed when the export began.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import estimates
from service.db import one_of, session_scope
from service.estimates import RunEstimates
from service.estimator.beta import StatsColumns
from service.export.schemas import ExportQuery
from service.models import Prompt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Chunk:
    """Consecutive rows of an export, as columns."""

    idx: I64
    ids: list[str]
    metadata: list[dict[str, Any] | None] | None
    text: list[str] | None
    pass_rate: F64
    uncertainty: F64
    p_informative: F64
    prior: F64
    observations: I64
    rollouts: I64
    successes: I64
    last_step: I64  # -1: never seen
    model_version: int | None

    def __len__(self) -> int:
        return len(self.idx)


@dataclass(frozen=True)
class _Scored:
    """A chunk's estimates and counts, before the prompt rows are joined in."""

    idx: I64
    pass_rate: F64
    uncertainty: F64
    p_informative: F64
    prior: F64
    observations: I64
    rollouts: I64
    successes: I64
    last_step: I64

    def key(self, name: str) -> F64:
        if name == "idx":
            return self.idx.astype(np.float64)
        out: F64 = np.asarray(getattr(self, name), dtype=np.float64)
        return out

    def take(self, keep: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> _Scored:
        return _Scored(
            self.idx[keep],
            self.pass_rate[keep],
            self.uncertainty[keep],
            self.p_informative[keep],
            self.prior[keep],
            self.observations[keep],
            self.rollouts[keep],
            self.successes[keep],
            self.last_step[keep],
        )


class Exporter:
    """One export: the run's view of estimates fixed at the start, rows read chunk by chunk."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        view: RunEstimates,
        group_size: int,
        dataset_id: int,
        pool: int,
        query: ExportQuery,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.view = view
        self.group_size = group_size
        self.dataset_id = dataset_id
        self.pool = pool
        self.q = query

    async def chunks(self) -> AsyncIterator[Chunk]:
        ordered = self.q.order_by != "idx" or self.q.descending
        source = self._ordered() if ordered else self._in_idx_order()
        async for chunk in source:
            if len(chunk):
                yield chunk

    async def _score(self, idx: I64) -> _Scored:
        stats = await self.view.hot.get_many(self.view.run_id, idx.tolist())
        v = self.view
        est = estimates.estimate(
            v.policy, v.prior, idx, StatsColumns.of(stats), v.step, history=v.history
        )
        return _Scored(
            idx=idx,
            pass_rate=est.mean,
            uncertainty=est.std,
            p_informative=est.p_mixed(self.group_size),
            prior=est.prior_mean,
            observations=est.stats.groups,
            rollouts=np.array([s.rollouts if s else 0 for s in stats], dtype=np.int64),
            successes=np.array([s.successes if s else 0 for s in stats], dtype=np.int64),
            last_step=np.array([s.last_step if s else -1 for s in stats], dtype=np.int64),
        )

    def _mask(self, s: _Scored) -> npt.NDArray[np.bool_]:
        q = self.q
        keep = (s.pass_rate >= q.min_pass_rate) & (s.pass_rate <= q.max_pass_rate)
        if q.min_p_informative > 0:
            keep &= s.p_informative >= q.min_p_informative
        if q.seen is not None:
            keep &= (s.observations > 0) == q.seen
        return keep

    async def _in_idx_order(self) -> AsyncIterator[Chunk]:
        left = self.q.limit
        for start in range(0, self.pool, self.q.chunk):
            idx = np.arange(start, min(start + self.q.chunk, self.pool), dtype=np.int64)
            scored = await self._score(idx)
            scored = scored.take(self._mask(scored))
            if left is not None:
                scored = scored.take(np.arange(min(left, len(scored.idx))))
                left -= len(scored.idx)
            if len(scored.idx):
                yield await self._join(scored)
            if left == 0:
                return

    async def _ordered(self) -> AsyncIterator[Chunk]:
        """Two passes: the best `limit` keys in a bounded buffer, then those rows in order."""
        limit = self.q.limit or self.pool
        sign = -1.0 if self.q.descending else 1.0
        keys: list[F64] = []
        ids: list[I64] = []
        held = 0
        for start in range(0, self.pool, self.q.chunk):
            idx = np.arange(start, min(start + self.q.chunk, self.pool), dtype=np.int64)
            scored = await self._score(idx)
            scored = scored.take(self._mask(scored))
            keys.append(sign * scored.key(self.q.order_by))
            ids.append(scored.idx)
            held += len(scored.idx)
            if held > 2 * limit:
                k, i = _best(keys, ids, limit)
                keys, ids, held = [k], [i], len(i)
        _, chosen = _best(keys, ids, limit)
        for start in range(0, len(chosen), self.q.chunk):
            part = chosen[start : start + self.q.chunk]
            yield await self._join(await self._score(part))

    async def _join(self, s: _Scored) -> Chunk:
        rows = await self._rows(s.idx.tolist())
        missing = [i for i in s.idx.tolist() if i not in rows]
        if missing:  # idx is dense and never deleted: this is a broken database
            raise RuntimeError(f"prompts at idx {missing[:5]} are missing")
        ordered = [rows[i] for i in s.idx.tolist()]
        return Chunk(
            idx=s.idx,
            ids=[r[0] for r in ordered],
            metadata=[r[1] for r in ordered] if self.q.include_metadata else None,
            text=[r[2] or "" for r in ordered] if self.q.include_text else None,
            pass_rate=s.pass_rate,
            uncertainty=s.uncertainty,
            p_informative=s.p_informative,
            prior=s.prior,
            observations=s.observations,
            rollouts=s.rollouts,
            successes=s.successes,
            last_step=s.last_step,
            model_version=self.view.version,
        )

    async def _rows(self, idxs: Sequence[int]) -> dict[int, tuple[str, Any, str | None]]:
        """Client id, metadata and (if asked) text of these prompts, in one short session."""
        cols: list[Any] = [Prompt.idx, Prompt.client_id]
        cols += [Prompt.meta] if self.q.include_metadata else []
        cols += [Prompt.text] if self.q.include_text else []
        async with session_scope(self.sessionmaker) as session:
            stmt = select(*cols).where(Prompt.dataset_id == self.dataset_id)
            if _sorted(idxs) and idxs[-1] - idxs[0] < 4 * len(idxs):
                # dense (a scan chunk, lightly filtered): its idx range, the extra rows dropped
                stmt = stmt.where(Prompt.idx >= idxs[0], Prompt.idx <= idxs[-1])
            else:
                # padded to a power of two: a handful of SQL texts, where SQLite would prepare
                # and cache a statement per IN-list length (86 MB over a filtered 1M export)
                size = 1 << (len(idxs) - 1).bit_length()
                padded = [*idxs, *[idxs[-1]] * (size - len(idxs))]
                stmt = stmt.where(one_of(session, Prompt.idx, padded))
            result = await session.execute(stmt)
            out: dict[int, tuple[str, Any, str | None]] = {}
            wanted = set(idxs)
            for r in result:
                if r.idx not in wanted:
                    continue
                meta = r.meta if self.q.include_metadata else None
                text = r.text if self.q.include_text else None
                out[r.idx] = (r.client_id, meta, text)
            return out


def _sorted(xs: Sequence[int]) -> bool:
    return len(xs) > 0 and all(a < b for a, b in itertools.pairwise(xs))


def _best(keys: list[F64], ids: list[I64], limit: int) -> tuple[F64, I64]:
    """The `limit` smallest keys, ties broken by idx, in order."""
    k = np.concatenate(keys) if keys else np.empty(0)
    i = np.concatenate(ids) if ids else np.empty(0, dtype=np.int64)
    order = np.lexsort((i, k))[:limit]
    return k[order], i[order]
