"""The prompt browser of a run and one prompt's page: its text, metadata and every group."""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from urllib.parse import urlencode

from service.admin import charts
from service.admin.pages import fmt, link, page, prompt_href, run_href, table
from service.admin.prompts import PAGE, SORTS, Found, Group, PromptRow
from service.models import Prompt, Run

SORT_NAMES = {
    "p_mixed": "P(mixed)",
    "estimate": "estimate",
    "uncertainty": "uncertainty",
    "observations": "observations",
    "id": "dataset order",
}


def browser(run: Run, found: Found, q: str, sort: str, ascending: bool, offset: int) -> str:
    base = f"{run_href(run.name)}/prompts"

    def href(**kw: object) -> str:
        args: dict[str, object] = {
            "q": q,
            "sort": sort,
            "order": "asc" if ascending else "desc",
            "offset": offset,
        }
        args.update(kw)
        return base + "?" + urlencode({k: v for k, v in args.items() if v not in ("", 0)})

    options = "".join(
        f'<option value="{s}"{" selected" if s == sort else ""}>{SORT_NAMES[s]}</option>'
        for s in SORTS
    )
    form = (
        f'<form method="get" action="{escape(base)}"><input name="q" value="{escape(q)}" '
        'placeholder="id or text" size="40" aria-label="search by id or text"> sort by '
        f'<select name="sort" aria-label="sort by">{options}</select> '
        '<select name="order" aria-label="order">'
        f'<option value="desc"{"" if ascending else " selected"}>highest first</option>'
        f'<option value="asc"{" selected" if ascending else ""}>lowest first</option></select> '
        "<button>show</button></form>"
    )
    head = ["prompt", "text", "estimate", "uncertainty", "P(mixed)", "observations", "observed"]
    rows = [_row(run.name, r) for r in found.rows]
    pager = []
    if offset > 0:
        pager.append(link(href(offset=max(0, offset - PAGE)), "« previous"))
    if offset + PAGE < found.matched:
        pager.append(link(href(offset=offset + PAGE), "next »"))
    shown = (
        f"{offset + 1:,}&ndash;{offset + len(found.rows):,} of {found.matched:,}"
        if found.rows
        else "none"
    )
    capped = f" (the first {found.matched:,} matches; refine the search)" if found.capped else ""
    body = (
        f"<h1>Prompts of run {link(run_href(run.name), run.name, id='back')}</h1>{form}"
        f'<p id="shown">{shown} prompts{capped}, sorted by {SORT_NAMES[sort]}, '
        f"{'lowest' if ascending else 'highest'} first. P(mixed): the chance a group of "
        f"G = {run.group_size} comes out with both passes and fails.</p>"
        + table(head, rows, css="prompts")
        + " · ".join(pager)
    )
    return page(f"prompts of {run.name}", body)


def _row(run: str, r: PromptRow) -> list[str]:
    return [
        link(prompt_href(run, r.client_id), r.client_id, data_prompt=r.client_id),
        f'<span class="text">{escape(r.text)}</span>',
        fmt(r.estimate),
        fmt(r.uncertainty),
        fmt(r.p_mixed),
        fmt(r.observations),
        fmt(r.observed),
    ]


def prompt_page(
    run: Run, prompt: Prompt, row: PromptRow, groups: Sequence[Group], prior: float | None
) -> str:
    meta = (
        f'<pre class="text" id="metadata">{escape(json.dumps(prompt.meta, indent=2))}</pre>'
        if prompt.meta
        else '<p class="empty">no metadata</p>'
    )
    est = table(
        ["estimate", "uncertainty", "P(mixed)", "prior", "observations", "observed pass rate"],
        [
            [
                fmt(row.estimate),
                fmt(row.uncertainty),
                fmt(row.p_mixed),
                fmt(prior),
                fmt(row.observations),
                fmt(row.observed),
            ]
        ],
        css="estimate",
    )
    cum, k, n = [], 0, 0
    for g in groups:
        k, n = k + g.successes, n + g.n
        cum.append((g.step, k / n))
    history = charts.steps(
        [
            charts.Series("each group", [(g.step, g.successes / g.n) for g in groups], "s0"),
            charts.Series("running rate", cum, "s1", dots=False),
        ],
        chart_id="prompt-history",
        title="its groups by step",
        y_label="pass rate",
        y_max=1.0,
        reference=(row.estimate, "estimate now"),
    )
    rows = [
        [fmt(g.step), f"{g.successes} of {g.n}", fmt(g.reward_mean), fmt(g.batch_id)]
        for g in groups
    ]
    body = (
        f"<p>{link(run_href(run.name), f'run {run.name}', id='back')} · "
        f"{link(run_href(run.name) + '/prompts', 'all prompts')}</p>"
        f'<h1>Prompt <span id="prompt-id">{escape(prompt.client_id)}</span></h1>'
        f'<pre class="text" id="prompt-text">{escape(prompt.text)}</pre>'
        f"<h2>Metadata</h2>{meta}<h2>Estimate in run {escape(run.name)}</h2>{est}"
        f"<h2>Groups ({len(groups):,})</h2>{history}"
        + table(["step", "successes", "reward mean", "batch"], rows, css="groups")
    )
    return page(f"prompt {prompt.client_id}", body)
