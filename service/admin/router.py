"""Admin pages, outside /v1: HTML for people, the same API key (or HTTP Basic) to get in."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncSession

from service import estimates
from service.admin import charts, curation, pages, predictor, prompt_pages, prompts
from service.admin import run_page as run_page_html
from service.admin import service as admin
from service.admin.prompts import Sort
from service.admin.runlog import ZERO_ROLLOUTS, RunTotals
from service.datasets import service as datasets
from service.deps import AdminScopeDep, ReadSessionDep, StateDep, authenticate_admin
from service.exceptions import InvalidInput
from service.models import Dataset, Run
from service.policy import SelectionConfig
from service.runs import service as runs

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(authenticate_admin)],
    include_in_schema=False,
)


def admin_cache(request: Request) -> admin.AdminCache:
    """The pages' per-process cache, made on first use beside the app's state."""
    cache = getattr(request.app.state, "depo_admin", None)
    if cache is None:
        cache = request.app.state.depo_admin = admin.AdminCache()
    return cache


CacheDep = Annotated[admin.AdminCache, Depends(admin_cache)]
Refresh = Annotated[int, Query(ge=0, le=3600, description="reload every this many seconds")]


@router.get("/", response_class=HTMLResponse)
async def index(
    session: ReadSessionDep, scope: AdminScopeDep, refresh: Refresh = 0
) -> HTMLResponse:
    """Only the namespaces the key sees; an admin key sees them all."""
    listed_runs = await admin.list_runs(session, scope)
    listed = await admin.list_datasets(session, scope)
    return HTMLResponse(pages.index(listed_runs, listed, refresh))


async def _context(
    session: AsyncSession, cache: admin.AdminCache, r: Run
) -> tuple[Run, Dataset, SelectionConfig, RunTotals]:
    ds = await session.get_one(Dataset, r.dataset_id)
    totals = await cache.logs.totals(session, r, ds.prompt_count)
    return r, ds, SelectionConfig.model_validate(r.selection), totals


@router.get("/runs/{run}", response_class=HTMLResponse)
async def run_page(
    run: str,
    session: ReadSessionDep,
    scope: AdminScopeDep,
    state: StateDep,
    cache: CacheDep,
    profiles: curation.ProfileCacheDep,
    refresh: Refresh = 0,
    by: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> HTMLResponse:
    r, ds, policy, totals = await _context(
        session, cache, await runs.get_by_name(session, scope, run)
    )
    view = await admin.pool_view(
        session, state.hot, state.predictor_cache, r, policy, ds.prompt_count
    )
    history = await predictor.history(session, r.id)
    rel = (
        await predictor.reliability(session, r.id, history[-1], cache.reliability)
        if history
        else None
    )
    zero_rollouts = int(totals.table[:, ZERO_ROLLOUTS].sum())
    siblings = [x.name for x in await admin.list_runs(session, scope, ds.id) if x.name != r.name]
    return HTMLResponse(
        run_page_html.render(
            r,
            ds.name,
            totals,
            view,
            admin.savings(r, view, zero_rollouts),
            history,
            rel,
            siblings[:3],
            refresh,
            extra=await curation.sections(
                session, state, scope, profiles, r, ds, history[-1].version if history else None, by
            ),
        )
    )


@router.get("/runs/{run}/prompts", response_class=HTMLResponse)
async def prompt_browser(
    run: str,
    session: ReadSessionDep,
    scope: AdminScopeDep,
    state: StateDep,
    cache: CacheDep,
    q: Annotated[str, Query(max_length=200)] = "",
    sort: Sort = "p_mixed",
    order: Literal["asc", "desc"] = "desc",
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> HTMLResponse:
    r, ds, policy, totals = await _context(
        session, cache, await runs.get_by_name(session, scope, run)
    )
    view = await estimates.for_run(session, state.hot, state.predictor_cache, r, policy)
    found = await prompts.browse(
        session,
        ds.id,
        ds.prompt_count,
        view,
        totals,
        r.group_size,
        q=q.strip(),
        sort=sort,
        ascending=order == "asc",
        offset=offset,
    )
    return HTMLResponse(prompt_pages.browser(r, found, q, sort, order == "asc", offset))


@router.get("/runs/{run}/prompts/{prompt_id:path}", response_class=HTMLResponse)
async def prompt_page(
    run: str,
    prompt_id: str,
    session: ReadSessionDep,
    scope: AdminScopeDep,
    state: StateDep,
    cache: CacheDep,
) -> HTMLResponse:
    r, ds, policy, totals = await _context(
        session, cache, await runs.get_by_name(session, scope, run)
    )
    prompt = await datasets.get_prompt(session, ds, prompt_id)
    view = await estimates.for_run(session, state.hot, state.predictor_cache, r, policy)
    idx = np.array([prompt.idx], dtype=np.int64)
    [row] = await prompts.rows(session, ds.id, idx, view, totals, r.group_size)
    est = await view.at(idx)
    prior = float(est.prior_mean[0]) if view.prior is not None else None
    groups = await prompts.groups_of(session, r.id, prompt.id)
    return HTMLResponse(prompt_pages.prompt_page(r, prompt, row, groups, prior))


@router.get("/datasets/{name}", response_class=HTMLResponse)
async def dataset_page(
    name: str,
    session: ReadSessionDep,
    scope: AdminScopeDep,
    state: StateDep,
    cache: CacheDep,
    field: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    ds = await datasets.get_by_name(session, scope, name)
    embedded = await admin.embedded_count(session, ds.id)
    on_it = await admin.list_runs(session, scope, ds.id)
    view = totals = None
    if on_it:
        first = await session.get_one(Run, on_it[0].id)
        r, _, policy, totals = await _context(session, cache, first)
        view = await estimates.for_run(session, state.hot, state.predictor_cache, r, policy)
    prof = await prompts.profile(session, ds.id, ds.prompt_count, field, view, totals)
    profiled = on_it[0].name if on_it else None
    labelled = await datasets.labelled_count(session, ds)
    return HTMLResponse(pages.dataset_page(ds, embedded, on_it, prof, profiled, labelled))


@router.get("/compare", response_class=HTMLResponse)
async def compare(
    session: ReadSessionDep,
    scope: AdminScopeDep,
    cache: CacheDep,
    run: Annotated[list[str], Query(min_length=2, max_length=4)],
) -> HTMLResponse:
    found = [await runs.get_by_name(session, scope, name) for name in dict.fromkeys(run)]
    loaded = [await _context(session, cache, r) for r in found]
    if len(loaded) < 2:
        raise InvalidInput("name two different runs to compare", field="run")
    datasets_of = {ds.name for _, ds, _, _ in loaded}
    if len({ds.id for _, ds, _, _ in loaded}) > 1:
        raise InvalidInput(
            f"runs to compare must share a dataset; these use {sorted(datasets_of)}", field="run"
        )
    zv, per, rows = [], [], []
    for i, (r, _, _, totals) in enumerate(loaded):
        z, p = run_page_html.step_series(totals)
        css = f"s{i}"
        zv.append(charts.Series(r.name, charts.rolling_mean(z, 20), css, dots=False))
        per.append(charts.Series(r.name, charts.rolling_mean(p, 20), css, dots=False))
        informative = r.groups - r.zero_variance_groups
        rows.append(
            [
                pages.link(pages.run_href(r.name), r.name),
                pages.fmt(r.strategy),
                pages.fmt(r.groups),
                pages.fmt(r.rollouts),
                pages.pct(r.zero_variance_groups / r.groups if r.groups else None),
                pages.fmt(r.rollouts / informative if informative else None, 1),
            ]
        )
    names = [r.name for r, _, _, _ in loaded]
    return HTMLResponse(pages.compare_page(datasets_of.pop(), names, zv, per, rows))


router.include_router(curation.router)  # the export download the run page links to
