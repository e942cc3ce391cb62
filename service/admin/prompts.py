"""Prompts for the browser and the dataset page: found by SQL, ranked by the run's estimates."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.admin.runlog import RunTotals
from service.estimates import RunEstimates
from service.models import Outcome, Prompt

Sort = Literal["estimate", "uncertainty", "p_mixed", "observations", "id"]
SORTS: tuple[Sort, ...] = ("p_mixed", "estimate", "uncertainty", "observations", "id")
MATCH_LIMIT = 20_000  # prompts a text search ranks; more matches say "refine the search"
PAGE = 50


@dataclass(frozen=True)
class PromptRow:
    idx: int
    client_id: str
    text: str
    estimate: float
    uncertainty: float
    p_mixed: float
    observations: int
    observed: float | None


@dataclass(frozen=True)
class Found:
    rows: list[PromptRow]
    matched: int
    capped: bool


async def browse(
    session: AsyncSession,
    dataset_id: int,
    pool: int,
    view: RunEstimates,
    totals: RunTotals,
    group_size: int,
    *,
    q: str,
    sort: Sort,
    ascending: bool,
    offset: int,
) -> Found:
    """Prompts whose id or text contains `q` (all when empty), one page of them, sorted."""
    capped = False
    if q:
        needle = q.lower()
        stmt = (
            select(Prompt.idx)
            .where(
                Prompt.dataset_id == dataset_id,
                or_(
                    func.lower(Prompt.client_id).contains(needle, autoescape=True),
                    func.lower(Prompt.text).contains(needle, autoescape=True),
                ),
            )
            .order_by(Prompt.idx)
            .limit(MATCH_LIMIT + 1)
        )
        idx = np.array((await session.execute(stmt)).scalars().all(), dtype=np.int64)
        capped = len(idx) > MATCH_LIMIT
        idx = idx[:MATCH_LIMIT]
    else:
        idx = np.arange(pool, dtype=np.int64)
    if sort == "id":
        order = np.arange(len(idx))
        est = None
    elif sort == "observations":
        obs = _observations(totals, idx)
        order = np.argsort(obs if ascending else -obs, kind="stable")
        est = None
    else:
        est = await view.at(idx)
        key = {"estimate": est.mean, "uncertainty": est.std}.get(sort)
        key = est.p_mixed(group_size) if key is None else key
        order = np.argsort(key if ascending else -key, kind="stable")
    page = idx[order[offset : offset + PAGE]]
    return Found(await rows(session, dataset_id, page, view, totals, group_size), len(idx), capped)


def _observations(totals: RunTotals, idx: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    g = totals.prompt_groups
    out = np.zeros(len(idx))
    inside = idx < len(g)
    out[inside] = g[idx[inside]]
    return out


async def rows(
    session: AsyncSession,
    dataset_id: int,
    idx: np.ndarray[Any, Any],
    view: RunEstimates,
    totals: RunTotals,
    group_size: int,
) -> list[PromptRow]:
    """Ids, a text snippet and the estimate of these prompts, in this order."""
    if not len(idx):
        return []
    found = await session.execute(
        select(Prompt.idx, Prompt.client_id, func.substr(Prompt.text, 1, 160)).where(
            Prompt.dataset_id == dataset_id, Prompt.idx.in_([int(i) for i in idx])
        )
    )
    names = {i: (c, t) for i, c, t in found.tuples()}
    est = await view.at(idx)
    mixed, obs = est.p_mixed(group_size), _observations(totals, idx)
    out = []
    for j, i in enumerate(idx.tolist()):
        roll = totals.prompt_rollouts[i] if i < len(totals.prompt_rollouts) else 0.0
        out.append(
            PromptRow(
                idx=i,
                client_id=names[i][0],
                text=names[i][1],
                estimate=float(est.mean[j]),
                uncertainty=float(est.std[j]),
                p_mixed=float(mixed[j]),
                observations=int(obs[j]),
                observed=float(totals.prompt_successes[i] / roll) if roll else None,
            )
        )
    return out


@dataclass(frozen=True)
class Group:
    step: int
    n: int
    successes: int
    reward_mean: float
    batch_id: str | None


async def groups_of(session: AsyncSession, run_id: int, prompt_pk: int) -> list[Group]:
    """Every group the prompt had in the run, in step order.

    Sorted here, not in SQL: an ORDER BY step leads SQLite to walk (run_id, step) over the
    whole run instead of looking the prompt up on (run_id, prompt_id).
    """
    rows = await session.execute(
        select(
            Outcome.seq,
            Outcome.step,
            Outcome.n,
            Outcome.successes,
            Outcome.reward_mean,
            Outcome.batch_id,
        ).where(Outcome.run_id == run_id, Outcome.prompt_id == prompt_pk)
    )
    ordered = sorted(rows.tuples(), key=lambda r: (r[1], r[0]))
    return [Group(*r[1:]) for r in ordered]


@dataclass(frozen=True)
class Profile:
    """Prompts of a stride sample grouped by one metadata field's value."""

    field: str | None
    fields: list[str]
    sampled: int
    groups: list[tuple[str, int, float, float | None]]  # value, prompts, mean estimate, observed


PROFILE_SAMPLE = 5_000
MAX_VALUES = 30


async def profile(
    session: AsyncSession,
    dataset_id: int,
    pool: int,
    wanted: str | None,
    view: RunEstimates | None,
    totals: RunTotals | None,
) -> Profile:
    """Difficulty by a metadata field with at most MAX_VALUES values, over every k-th prompt."""
    stride = max(1, -(-pool // PROFILE_SAMPLE))
    found = await session.execute(
        select(Prompt.idx, Prompt.meta)
        .where(Prompt.dataset_id == dataset_id, Prompt.idx % stride == 0)
        .order_by(Prompt.idx)
    )
    sample = [(i, m) for i, m in found.tuples() if isinstance(m, dict)]
    values: dict[str, Counter[str]] = {}
    for _, m in sample:
        for k, v in m.items():
            if isinstance(v, str | int | bool) or v is None:
                values.setdefault(k, Counter())[str(v)] += 1
    fields = sorted(k for k, c in values.items() if 1 < len(c) <= MAX_VALUES)
    field = wanted if wanted in values else (fields[0] if fields else None)
    if field is None or view is None or totals is None:
        return Profile(field, fields, len(sample), [])
    keyed = [(i, str(m.get(field))) for i, m in sample if field in m]
    idx = np.array([i for i, _ in keyed], dtype=np.int64)
    est = (await view.at(idx)).mean if len(idx) else np.zeros(0)
    by: dict[str, list[int]] = {}
    for j, (_, v) in enumerate(keyed):
        by.setdefault(v, []).append(j)
    out = []
    for v, js in sorted(by.items(), key=lambda kv: -len(kv[1]))[:MAX_VALUES]:
        ii = idx[js]
        inside = ii[ii < len(totals.prompt_rollouts)]
        n = totals.prompt_rollouts[inside].sum()
        obs = float(totals.prompt_successes[inside].sum() / n) if n else None
        out.append((v, len(js), float(est[js].mean()), obs))
    return Profile(field, fields, len(sample), out)
