"""A run's profile of its dataset, folded chunk by chunk from the export's own scoring.

The rows are `Exporter.chunks()`: the same estimate, counts and metadata an export writes, read
in idx chunks, so memory is the accumulators only: (values tracked + 2) x bins counts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.ext.asyncio import AsyncSession

from service import estimates
from service.exceptions import InvalidInput
from service.export.schemas import ExportQuery
from service.export.service import Chunk, Exporter
from service.models import Dataset
from service.policy import SelectionConfig
from service.profile.schemas import TRACKED_VALUES, ProfileGroup, ProfileQuery, ProfileResponse
from service.runs import service as runs
from service.scope import Scope
from service.state import AppState

I64 = npt.NDArray[np.int64]
MISSING, OVERFLOW = 0, 1  # group ids of prompts without the field, and of values past the cap
VALUE_CHARS = 200  # a value's text is cut to this: a long list does not make a long key


def estimate_bins(pass_rate: npt.NDArray[np.float64], bins: int) -> I64:
    """Bin i holds [i / bins, (i + 1) / bins); 1.0 falls in the last."""
    out: I64 = np.clip((pass_rate * bins).astype(np.int64), 0, bins - 1)
    return out


def observed_bins(successes: I64, rollouts: I64, bins: int) -> I64:
    """The same bins in integers (successes * bins // rollouts): 3 of 10 is in bin 3, exactly."""
    out: I64 = np.minimum(successes * bins // np.maximum(rollouts, 1), bins - 1)
    return out


def value_of(meta: Any, field: str) -> str | None:
    """The field's value as text (JSON for all but strings); None when the prompt lacks it."""
    if not isinstance(meta, dict) or field not in meta:
        return None
    v = meta[field]
    text = v if isinstance(v, str) else json.dumps(v, sort_keys=True, ensure_ascii=False)
    return text[:VALUE_CHARS]


class Profiler:
    """Counts per group id, grown as values are met; group ids are MISSING, OVERFLOW, values."""

    def __init__(self, bins: int, by: str | None) -> None:
        self.bins = bins
        self.by = by
        self.ids: dict[str, int] = {}
        size = 2 + min(TRACKED_VALUES, 64)
        self.counts = np.zeros((size, 6), dtype=np.float64)  # prompts, seen, pass, mixed, r, s
        self.est = np.zeros((size, bins), dtype=np.int64)
        self.obs = np.zeros((size, bins), dtype=np.int64)

    def _gid(self, meta: Any) -> int:
        if self.by is None:
            return MISSING
        v = value_of(meta, self.by)
        if v is None:
            return MISSING
        gid = self.ids.get(v)
        if gid is None:
            if len(self.ids) >= TRACKED_VALUES:
                return OVERFLOW
            gid = self.ids[v] = 2 + len(self.ids)
        return gid

    def add(self, c: Chunk) -> None:
        metas: Sequence[Any] = c.metadata if c.metadata is not None else [None] * len(c)
        gid = np.fromiter((self._gid(m) for m in metas), dtype=np.int64, count=len(c))
        size = 2 + len(self.ids)
        if size > len(self.counts):
            grow = max(size, 2 * len(self.counts))
            self.counts = _grown(self.counts, grow)
            self.est = _grown(self.est, grow)
            self.obs = _grown(self.obs, grow)
        n = len(self.counts)
        seen = c.observations > 0
        cols = (np.ones(len(c)), seen, c.pass_rate, c.p_informative, c.rollouts, c.successes)
        for j, w in enumerate(cols):
            self.counts[:, j] += np.bincount(gid, weights=w, minlength=n)
        b = self.bins
        flat = gid * b + estimate_bins(c.pass_rate, b)
        self.est += np.bincount(flat, minlength=n * b).reshape(n, b)
        has = c.rollouts > 0
        flat = gid[has] * b + observed_bins(c.successes[has], c.rollouts[has], b)
        self.obs += np.bincount(flat, minlength=n * b).reshape(n, b)

    def group(self, rows: Sequence[int] | slice, value: str | None) -> ProfileGroup:
        """The named group ids summed into one group."""
        k = self.counts[rows].sum(axis=0)
        prompts, seen, rates, mixed, rollouts, successes = (float(x) for x in k)
        return ProfileGroup(
            value=value,
            prompts=int(prompts),
            seen=int(seen),
            mean_pass_rate=rates / prompts if prompts else None,
            mean_p_mixed=mixed / prompts if prompts else None,
            observed_pass_rate=successes / rollouts if rollouts else None,
            estimated=[int(x) for x in self.est[rows].sum(axis=0)],
            observed=[int(x) for x in self.obs[rows].sum(axis=0)],
        )

    def result(
        self, max_groups: int
    ) -> tuple[ProfileGroup, list[ProfileGroup], ProfileGroup | None, ProfileGroup | None]:
        """Overall, the top `max_groups` values, `other` (the rest), `missing`."""
        overall = self.group(slice(None), None)
        if self.by is None:
            return overall, [], None, None
        ranked = sorted(self.ids.items(), key=lambda kv: (-self.counts[kv[1], 0], kv[0]))
        top, rest = ranked[:max_groups], [OVERFLOW, *(g for _, g in ranked[max_groups:])]
        groups = [self.group([g], v) for v, g in top]
        other = self.group(rest, None)
        missing = self.group([MISSING], None)
        return (
            overall,
            groups,
            other if other.prompts else None,
            missing if missing.prompts else None,
        )


def _grown(a: npt.NDArray[Any], rows: int) -> npt.NDArray[Any]:
    out = np.zeros((rows, a.shape[1]), dtype=a.dtype)
    out[: len(a)] = a
    return out


async def profile(exporter: Exporter, profiler: Profiler) -> Profiler:
    """Every chunk of the run's dataset folded in; a `by` no prompt has is a 422 naming it."""
    async for chunk in exporter.chunks():
        profiler.add(chunk)
    prompts = int(profiler.counts[:, 0].sum())
    if profiler.by is not None and prompts and not profiler.ids and not profiler.counts[1, 0]:
        raise InvalidInput(
            f"no prompt of this dataset has the metadata field {profiler.by!r}", field="by"
        )
    return profiler


async def build(
    session: AsyncSession, state: AppState, scope: Scope, run: str, q: ProfileQuery
) -> ProfileResponse:
    """The run's estimates fixed at the start, as an export's are; its dataset read in chunks."""
    r = await runs.get_by_name(session, scope, run)
    policy = SelectionConfig.model_validate(r.selection)
    dataset = await session.get_one(Dataset, r.dataset_id)
    view = await estimates.for_run(session, state.hot, state.predictor_cache, r, policy)
    rows = ExportQuery(include_metadata=q.by is not None, chunk=q.chunk)
    exporter = Exporter(
        state.read_sessionmaker, view, r.group_size, dataset.id, dataset.prompt_count, rows
    )
    profiler = await profile(exporter, Profiler(q.bins, q.by))
    overall, groups, other, missing = profiler.result(q.max_groups)
    return ProfileResponse(
        run=r.name,
        dataset=dataset.name,
        group_size=r.group_size,
        model_version=view.version,
        step=view.step,
        by=q.by,
        edges=[i / q.bins for i in range(q.bins + 1)],
        overall=overall,
        groups=groups,
        other=other,
        missing=missing,
        values=len(profiler.ids),
    )
