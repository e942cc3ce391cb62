"""HTML of the admin pages: plain markup, every value from the database escaped."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from service.admin import charts
from service.admin.prompts import Profile
from service.admin.service import RunRow
from service.models import Dataset
from service.scope import DEFAULT_NAMESPACE

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:1em auto;max-width:1240px;padding:0 1em;color:#222}
nav{display:flex;gap:1.2em;align-items:center;border-bottom:1px solid #ddd;padding:.4em 0;
margin-bottom:.8em}nav .right{margin-left:auto;color:#666;font-size:12px}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{padding:.25em .8em;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}
tr:nth-child(even){background:#fafafa}table.savings td:last-child,table.cal td:last-child{
text-align:left;max-width:50em}td.text{text-align:left;max-width:40em;color:#444}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(600px,1fr));gap:.5em 1.5em}
figure.chart{margin:.3em 0}svg{background:#fcfcfc;border:1px solid #ddd;max-width:100%;height:auto}
rect.bar{fill:#4a7bd0}text{font-size:11px;fill:#555}text.chart-title{font-size:13px;fill:#222}
text.axis-label{font-size:11px;fill:#333}text.count{font-size:10px;fill:#333}
line.grid{stroke:#eee}line.axis{stroke:#999}polyline{fill:none;stroke-width:1.2}
polyline.rolling{stroke-width:2.4}line.ref{stroke:#888;stroke-dasharray:5 4;stroke-width:1.5}
.s0{stroke:#4a7bd0;fill:#4a7bd0}.s1{stroke:#c0392b;fill:#c0392b}.s2{stroke:#27ae60;fill:#27ae60}
.s3{stroke:#8e44ad;fill:#8e44ad}polyline.s0,polyline.s1,polyline.s2,polyline.s3{fill:none}
circle.dot{opacity:.55}circle.clipped{fill:#e67e22;stroke:none}circle.cal{fill:#4a7bd0;opacity:.7}
polyline.rolling.s0{stroke:#1a3f8a}line.key{stroke-width:3}line.key.rolling{stroke-width:5}
.empty{color:#888}.note{color:#555;max-width:75em}.big{font-size:20px;font-weight:600}
pre.text{white-space:pre-wrap;background:#f7f7f7;border:1px solid #e3e3e3;padding:.8em;
max-width:75em}.bar-out{background:#eee;width:20em;height:.8em;display:inline-block}
.bar-in{background:#4a7bd0;height:.8em}form{margin:.6em 0}input,select{font:inherit}
"""

FIG = "{:,.0f}"


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "-" if value != value else f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return escape(str(value))


def pct(value: float | None) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}%"


def table(head: Sequence[str], rows: Sequence[Sequence[str]], *, css: str = "") -> str:
    """Cells are markup already escaped by the caller; headers are escaped here."""
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    cls = f' class="{css}"' if css else ""
    return f"<table{cls}><tr>{th}</tr>{body}</table>"


def link(href: str, text: str, **attrs: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{escape(v)}"' for k, v in attrs.items())
    return f'<a href="{escape(href)}"{extra}>{escape(text)}</a>'


def run_href(name: str) -> str:
    return f"/admin/runs/{quote(name, safe='')}"


def prompt_href(run: str, prompt_id: str) -> str:
    return f"{run_href(run)}/prompts/{quote(prompt_id, safe='')}"


def dataset_href(name: str) -> str:
    return f"/admin/datasets/{quote(name, safe='')}"


def page(title: str, body: str, *, refresh: int = 0, here: str = "") -> str:
    """A page with the nav bar; `refresh` > 0 reloads it every that many seconds."""
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh > 0 else ""
    if here:
        toggle = (
            link(here, "auto-refresh: on (stop)")
            if refresh
            else link(f"{here}{'&' if '?' in here else '?'}refresh=30", "auto-refresh: off")
        )
    else:
        toggle = ""
    nav = (
        f"<nav>{link('/admin/', 'depo-service')}{link('/admin/#runs', 'runs')}"
        f'{link("/admin/#datasets", "datasets")}<span class="right">{toggle}</span></nav>'
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"{meta}<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{nav}{body}</body></html>"
    )


def _in(href: str, namespace: str) -> str:
    """Outside the default namespace a link names its namespace, so a same name elsewhere
    never answers in its place."""
    return href if namespace == DEFAULT_NAMESPACE else f"{href}?ns={quote(namespace, safe='')}"


def _shown(name: str, namespace: str) -> str:
    return name if namespace == DEFAULT_NAMESPACE else f"{namespace}/{name}"


def index(runs: Sequence[RunRow], datasets: Sequence[tuple[Dataset, int]], refresh: int) -> str:
    run_rows = [
        [
            link(_in(run_href(r.name), r.namespace), _shown(r.name, r.namespace), data_run=r.name),
            link(_in(dataset_href(r.dataset), r.namespace), _shown(r.dataset, r.namespace)),
            escape(r.strategy),
            fmt(r.group_size),
            fmt(r.groups),
            fmt(r.rollouts),
            pct(r.zero_variance_share),
            fmt(r.predictor_version),
            escape(r.created_at.isoformat(timespec="seconds")),
        ]
        for r in runs
    ]
    ds_rows = [
        [
            link(_in(dataset_href(d.name), d.namespace), _shown(d.name, d.namespace)),
            escape(d.embedder),
            fmt(d.prompt_count),
            fmt(embedded),
        ]
        for d, embedded in datasets
    ]
    head = ["run", "dataset", "strategy", "G", "groups", "rollouts", "zero-variance"]
    body = (
        "<h1>depo-service</h1><h2 id=runs>Runs</h2>"
        + table([*head, "predictor", "created"], run_rows)
        + "<h2 id=datasets>Datasets</h2>"
        + table(["dataset", "embedder", "prompts", "embedded"], ds_rows)
    )
    return page("depo-service admin", body, refresh=refresh, here="/admin/")


def dataset_page(
    ds: Dataset,
    embedded: int,
    runs: Sequence[RunRow],
    prof: Profile,
    profiled_run: str | None,
    labelled: int = 0,
) -> str:
    done = embedded / ds.prompt_count if ds.prompt_count else 0.0
    if ds.embedder == "client":
        progress = f"{fmt(embedded)} of {fmt(ds.prompt_count)} sent with an embedding"
    else:
        progress = f"{fmt(embedded)} of {fmt(ds.prompt_count)} embedded by {escape(ds.embedder)}"
    run_rows = [
        [
            link(run_href(r.name), r.name),
            escape(r.strategy),
            fmt(r.groups),
            pct(r.zero_variance_share),
        ]
        for r in runs
    ]
    compare = ""
    if len(runs) >= 2:
        href = "/admin/compare?" + urlencode([("run", r.name) for r in runs[:4]])
        compare = f"<p>{link(href, 'compare these runs on one chart')}</p>"
    body = (
        f"<h1>Dataset {escape(ds.name)}</h1>"
        f'<p><span class="big" id="size">{fmt(ds.prompt_count)}</span> prompts; {progress} '
        f'<span class="bar-out" title="{pct(done)}"><span class="bar-in" style="width:'
        f'{100 * done:.1f}%"></span></span> <span id="embedded">{pct(done)}</span></p>'
        + _known(ds, labelled)
        + "<h2>Runs on it</h2>"
        + (
            table(["run", "strategy", "groups", "zero-variance"], run_rows)
            if runs
            else '<p class="empty">no run yet</p>'
        )
        + compare
        + "<h2>Difficulty profile</h2>"
        + _profile(ds, prof, profiled_run)
    )
    return page(f"dataset {ds.name}", body)


def _known(ds: Dataset, labelled: int) -> str:
    """One line: how many prompts carry a known difficulty, and where it is read from."""
    spec = ds.difficulty_field
    if not labelled and not spec:
        return ""
    source = (
        f"metadata {escape(str(spec['name']))} ({float(spec['easiest']):g} easiest, "
        f"{float(spec['hardest']):g} hardest)"
        if spec
        else "prior_pass_rate"
    )
    return (
        f'<p id="known">Known difficulty: {fmt(labelled)} prompts labelled, from {source}; '
        "each run's predictor page shows the weight its fits learned for it.</p>"
    )


def _profile(ds: Dataset, prof: Profile, run: str | None) -> str:
    if prof.field is None:
        return (
            '<p class="empty">no metadata field with 2 to 30 values on these prompts; send '
            '`metadata` (e.g. {"source": "gsm8k"}) with them to see difficulty by it</p>'
        )
    picks = " ".join(
        link(f"{dataset_href(ds.name)}?field={quote(f)}", f)
        if f != prof.field
        else f"<b>{escape(f)}</b>"
        for f in prof.fields
    )
    if run is None:
        return f"<p>by <b>{escape(prof.field)}</b>: no run on this dataset to estimate with</p>"
    rows = [[escape(v), fmt(n), fmt(est), fmt(obs)] for v, n, est, obs in prof.groups]
    return (
        f"<p>fields: {picks}</p><p class=note>Every {fmt(prof.sampled)}-prompt stride sample "
        f"grouped by <b>{escape(prof.field)}</b>; estimates are run {link(run_href(run), run)}'s "
        "(prior plus history); observed is its successes over rollouts so far.</p>"
        + table([prof.field, "prompts", "mean estimated pass rate", "observed pass rate"], rows)
    )


def compare_page(
    dataset: str,
    names: Sequence[str],
    zv: list[charts.Series],
    per_inf: list[charts.Series],
    rows: Sequence[Sequence[str]],
) -> str:
    body = (
        f"<h1>Compare runs on {link(dataset_href(dataset), dataset)}</h1>"
        + table(
            [
                "run",
                "strategy",
                "groups",
                "rollouts",
                "zero-variance",
                "rollouts per informative group",
            ],
            rows,
        )
        + charts.steps(
            zv,
            chart_id="compare-zero-variance",
            title="zero-variance share by step (20-step mean)",
            y_label="% of the step's groups",
            fmt=charts.pct,
            y_max=1.0,
        )
        + charts.steps(
            per_inf,
            chart_id="compare-per-informative",
            title="rollouts per informative group by step (20-step mean)",
            y_label="rollouts",
        )
    )
    return page("compare " + ", ".join(names), body)
