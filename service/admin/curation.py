"""The run page's curation sections: difficulty profile by a metadata field, export downloads,
and the route log's tier shares over time; plus the download route the export links use.

Kept apart from run_page.py so the run page takes them as one block of markup.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from html import escape
from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from service.admin import charts, prompts
from service.admin.pages import fmt, link, pct, run_href, table
from service.deps import AdminScopeDep, ReadSessionDep, StateDep
from service.exceptions import InvalidInput
from service.export.router import export_run
from service.export.schemas import ExportQuery
from service.models import Dataset, Run
from service.profile.schemas import ProfileQuery, ProfileResponse
from service.profile.service import build
from service.routing.log import LoggedCall, recent
from service.scope import Scope
from service.state import AppState

router = APIRouter()

PAGE_GROUPS = 20  # values the page lists; the rest are summed into `other`
ROUTE_CALLS = 2_000  # newest route calls the chart draws
CACHED_PROFILES = 16
# (label, export filters) of the run page's download links
EXPORTS: tuple[tuple[str, dict[str, str]], ...] = (
    ("every prompt", {}),
    ("seen prompts", {"seen": "true"}),
    ("never seen", {"seen": "false"}),
    ("likely informative (P(mixed) \u2265 0.5)", {"min_p_informative": "0.5"}),
    ("solved (seen, pass rate \u2265 0.95)", {"seen": "true", "min_pass_rate": "0.95"}),
    (
        "top 1,000 by P(mixed)",
        {"order_by": "p_informative", "descending": "true", "limit": "1000"},
    ),
)
FORMATS = ("jsonl", "csv", "parquet")


class ProfileCache:
    """The last few profiles, keyed by run, field and what the estimates depend on; and each
    dataset's fields worth listing, until it grows."""

    def __init__(self) -> None:
        self._items: OrderedDict[tuple[object, ...], ProfileResponse] = OrderedDict()
        self.fields: dict[int, tuple[int, list[str]]] = {}  # dataset id: (its size, fields)

    def get(self, key: tuple[object, ...]) -> ProfileResponse | None:
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def put(self, key: tuple[object, ...], value: ProfileResponse) -> None:
        self._items[key] = value
        while len(self._items) > CACHED_PROFILES:
            self._items.popitem(last=False)


def profile_cache(request: Request) -> ProfileCache:
    cache = getattr(request.app.state, "depo_admin_profiles", None)
    if cache is None:
        cache = request.app.state.depo_admin_profiles = ProfileCache()
    return cache


ProfileCacheDep = Annotated[ProfileCache, Depends(profile_cache)]


@router.get("/runs/{run}/export", response_class=StreamingResponse)
async def download(
    run: str,
    request: Request,
    session: ReadSessionDep,
    scope: AdminScopeDep,
    state: StateDep,
) -> StreamingResponse:
    """The API's export behind the admin login, so a browser's link downloads it.

    The filters are read by hand: `ns` (the pages' namespace) is not one of the export's.
    """
    params = {k: v for k, v in request.query_params.items() if k != "ns"}
    try:
        query = ExportQuery.model_validate(params)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("query", *e["loc"])} for e in exc.errors()]
        ) from None
    return await export_run(run, query, session, scope, state)


async def sections(
    session: AsyncSession,
    state: AppState,
    scope: Scope,
    cache: ProfileCache,
    run: Run,
    ds: Dataset,
    version: int | None,
    by: str | None,
) -> str:
    """The three sections' markup, in page order; `version`: the run's newest predictor's."""
    size, fields = cache.fields.get(ds.id, (-1, []))
    if size != ds.prompt_count:  # a 5,000-prompt sample's metadata: read once per dataset size
        fields = (await prompts.profile(session, ds.id, ds.prompt_count, None, None, None)).fields
        cache.fields[ds.id] = (ds.prompt_count, fields)
    prof, problem = None, None
    if by is not None:
        key = (run.id, run.created_at, run.outcome_seq, version, by, ds.prompt_count)
        prof = cache.get(key)
        if prof is None:
            try:
                q = ProfileQuery(by=by, max_groups=PAGE_GROUPS)
                prof = await build(session, state, scope, run.name, q)
            except InvalidInput as exc:
                problem = exc.message
            else:
                cache.put(key, prof)
    calls = await recent(session, run.id, ROUTE_CALLS)
    return (
        '<h2 id="profile">Difficulty by metadata field</h2>'
        + profile_section(run.name, fields, by, prof, problem)
        + '<h2 id="export">Export</h2>'
        + export_section(run.name)
        + '<h2 id="routing">Routing</h2>'
        + route_section(run.name, calls)
    )


def profile_section(
    run: str,
    fields: Sequence[str],
    by: str | None,
    prof: ProfileResponse | None,
    problem: str | None,
) -> str:
    here = run_href(run)
    picks = " ".join(
        f"<b>{escape(f)}</b>"
        if f == by
        else link(f"{here}?by={quote(f, safe='')}#profile", f, data_field=f)
        for f in fields
    )
    intro = (
        f"<p>by: {picks or '<span class=empty>no field with 2 to 30 values in a sample</span>'}"
        f" &middot; any field: <code>?by=&lt;field&gt;</code></p>"
    )
    if problem is not None:
        return intro + f'<p class="empty" id="profile-problem">{escape(problem)}</p>'
    if prof is None:
        return intro + (
            '<p class="note">Pick a field to profile every prompt of the dataset by it: '
            "histograms of this run's estimated pass rate and of the observed pass rate of the "
            "prompts it has seen, per value. It reads the whole dataset (as an export does), so "
            "it is only computed when asked.</p>"
        )
    groups = [*prof.groups, *([prof.other] if prof.other else [])]
    groups += [prof.missing] if prof.missing else []
    names = [escape(g.value) if g.value is not None else "" for g in prof.groups]
    names += ["<i>other values</i>"] if prof.other else []
    names += ["<i>without the field</i>"] if prof.missing else []
    rows = [
        [
            n,
            fmt(g.prompts),
            fmt(g.seen),
            fmt(g.mean_pass_rate),
            fmt(g.mean_p_mixed),
            fmt(g.observed_pass_rate),
        ]
        for n, g in zip(names, groups, strict=True)
    ]
    o = prof.overall
    rows.append(
        [
            "<b>all</b>",
            fmt(o.prompts),
            fmt(o.seen),
            fmt(o.mean_pass_rate),
            fmt(o.mean_p_mixed),
            fmt(o.observed_pass_rate),
        ]
    )
    head = ["prompts", "seen", "mean estimate", "mean P(mixed)", "observed pass rate"]
    summary = table([prof.by or "", *head], rows, css="profile")
    est = _bins_table("profile-estimated", prof.edges, names, [g.estimated for g in groups])
    obs = _bins_table("profile-observed", prof.edges, names, [g.observed for g in groups])
    api = f"/v1/runs/{quote(run, safe='')}/profile?by={quote(prof.by or '', safe='')}"
    return (
        intro
        + summary
        + "<h3>estimated pass rate (prompts per bin)</h3>"
        + est
        + "<h3>observed pass rate of seen prompts (prompts per bin)</h3>"
        + obs
        + f'<p class="note">Every prompt of the dataset, {prof.values:,} values of '
        f"<b>{escape(prof.by or '')}</b> (the {PAGE_GROUPS} with most prompts listed); "
        f"estimates at predictor version {fmt(prof.model_version)}. A cell is shaded by its "
        f"share of its row. The same as JSON: <code>GET {escape(api)}</code>.</p>"
    )


def _bins_table(
    css: str, edges: Sequence[float], names: Sequence[str], counts: Sequence[Sequence[int]]
) -> str:
    th = "".join(f"<th>{edges[i]:.2g}&ndash;{edges[i + 1]:.2g}</th>" for i in range(len(edges) - 1))
    body = []
    for name, row in zip(names, counts, strict=True):
        total = sum(row) or 1
        cells = "".join(
            f'<td data-lo="{edges[i]:g}" data-count="{c}" style="background:'
            f'rgba(74,123,208,{0.85 * c / total:.2f})">{c:,}</td>'
            for i, c in enumerate(row)
        )
        body.append(f"<tr><td>{name}</td>{cells}</tr>")
    return f'<table class="{css} bins"><tr><th></th>{th}</tr>{"".join(body)}</table>'


def export_section(run: str) -> str:
    base = f"{run_href(run)}/export"
    rows = []
    for label, params in EXPORTS:
        links = " ".join(
            link(f"{base}?{urlencode({'format': f, **params})}", f, data_export=f) for f in FORMATS
        )
        flags = " ".join(_flag(k, v) for k, v in params.items())
        rows.append([escape(label), links, f"<code>{escape(flags)}</code>"])
    return table(["prompts", "download", "filters"], rows, css="exports") + (
        '<p class="note">Each link streams the run\'s export (estimate, counts and metadata of '
        "each prompt; see docs/curation.md); <code>depo export "
        f"{escape(run)} -o file.parquet</code> takes the same filters.</p>"
    )


def _flag(key: str, value: str) -> str:
    """The `depo export` option of a filter."""
    if key == "seen":
        return "--seen" if value == "true" else "--unseen"
    if value == "true":
        return f"--{key.replace('_', '-')}"
    return f"--{key.replace('_', '-')} {value}"


def route_section(run: str, calls: Sequence[LoggedCall]) -> str:
    if not calls:
        return (
            '<p class="empty" id="no-routes">no route calls logged: each answered '
            f"<code>POST /v1/runs/{escape(run)}/route</code> is logged here</p>"
        )
    series, x_label = route_shares(calls)
    chart = charts.steps(
        series,
        chart_id="route-shares",
        title=f"share of routed queries per tier, {len(calls):,} calls",
        y_label="% of the call's queries",
        fmt=charts.pct,
        y_max=1.0,
        x_label=x_label,
    )
    last = [
        [
            escape(c.at.isoformat(timespec="seconds")),
            fmt(c.step),
            fmt(c.items),
            " &middot; ".join(
                f"{escape(n)} {pct(k / c.items if c.items else None)}" for n, k in c.tiers
            ),
            fmt(c.unrouted),
        ]
        for c in calls[-10:][::-1]
    ]
    shown = f"the newest {ROUTE_CALLS:,}" if len(calls) >= ROUTE_CALLS else "every"
    return (
        f'<div class="grid2">{chart}</div>'
        + table(["time", "step", "queries", "tiers", "unrouted"], last, css="routes")
        + f'<p class="note">The chart draws {shown} logged call; a point is the queries of the '
        "calls at that x (summed) routed to each tier. Tiers beyond the three busiest are summed "
        "as \u201cother\u201d.</p>"
    )


def route_shares(calls: Sequence[LoggedCall]) -> tuple[list[charts.Series], str]:
    """Shares per tier (and unrouted) by step when every call sent one, else by time."""
    if all(c.step is not None for c in calls):
        xs = [int(c.step or 0) for c in calls]
        x_label = "training step"
    else:
        xs, x_label = _time_axis([c.at for c in calls])
    totals: dict[str, int] = {}
    for c in calls:
        for name, k in [*c.tiers, ("unrouted", c.unrouted)]:
            totals[name] = totals.get(name, 0) + k
    ranked = [n for n, k in sorted(totals.items(), key=lambda kv: -kv[1]) if k]
    named = ranked if len(ranked) <= 4 else ranked[:3]
    keys = named + (["other"] if len(ranked) > len(named) else [])
    per_x: dict[int, dict[str, int]] = {}
    for x, c in zip(xs, calls, strict=True):
        row = per_x.setdefault(x, {"": 0})
        row[""] += c.items
        for name, k in [*c.tiers, ("unrouted", c.unrouted)]:
            key = name if name in named else "other"
            row[key] = row.get(key, 0) + k
    series = [
        charts.Series(
            name,
            [(x, row.get(name, 0) / row[""]) for x, row in sorted(per_x.items()) if row[""]],
            f"s{i}",
        )
        for i, name in enumerate(keys)
    ]
    return series, x_label


def _time_axis(times: Sequence[datetime]) -> tuple[list[int], str]:
    """Whole seconds, minutes or hours since the first call, whichever keeps the span readable."""
    first = times[0]
    span = (times[-1] - first).total_seconds()
    unit, name = (
        (1, "seconds")
        if span <= 600
        else (60, "minutes")
        if span <= 2 * 86400
        else (
            3600,
            "hours",
        )
    )
    xs = [int((t - first).total_seconds() // unit) for t in times]
    return xs, f"{name} since {first.isoformat(timespec='seconds')}"
