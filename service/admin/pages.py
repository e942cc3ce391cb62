"""HTML of the admin pages: plain markup, every value from the database escaped."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any
from urllib.parse import quote

import numpy as np

from service.admin import charts
from service.admin.service import PoolView, RunRow, Savings
from service.models import Dataset, PredictorVersion, Run
from service.stats.schemas import RunSummary

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{padding:.25em .8em;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}tr:nth-child(even){background:#fafafa}
svg{background:#fcfcfc;border:1px solid #ddd;margin:.3em 0}rect{fill:#4a7bd0}
polyline{stroke:#c0392b}text{font-size:11px;fill:#555}.empty{color:#888}.note{color:#666;max-width:70em}
"""

# what each calibration figure of a predictor version means
CALIBRATION = {
    "spearman": "rank correlation of the previous version's priors with outcomes it had not seen",
    "mae": "mean absolute error of those priors against the observed rates",
    "mean_predicted": "mean prior of those prompts",
    "mean_observed": "their mean observed pass rate",
    "unseen_prompts": "prompts those figures are over",
    "scored_version": "the version those figures score",
    "prior_strength": "pseudo-count the prior is worth, estimated on held-out prompts",
    "served_drift_logit": "how far served prompts came out above their estimate (logit)",
    "tracking_gain_own": "logit gain per unit of a prompt's own training (reward sd of a group)",
    "tracking_gain_neighbours": "logit gain per unit of its nearest neighbours' training",
    "tracking_gain_global": "logit gain per unit of the whole run's training",
    "tracking_rows": "re-served groups the gains are fitted on",
    "fitted_prompts": "prompts this version was fitted on",
    "fit_seconds": "time the fit took",
}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if value != value else f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return escape(str(value))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


def index(runs: Sequence[RunRow], datasets: Sequence[tuple[Dataset, int]]) -> str:
    run_rows = [
        [
            f'<a href="runs/{quote(r.name, safe="")}">{escape(r.name)}</a>',
            escape(r.dataset),
            escape(r.strategy),
            _fmt(r.group_size),
            _fmt(r.groups),
            _fmt(r.rollouts),
            _pct(r.zero_variance_share),
            _fmt(r.predictor_version),
            escape(r.created_at.isoformat(timespec="seconds")),
        ]
        for r in runs
    ]
    ds_rows = [
        [escape(d.name), escape(d.embedder), _fmt(d.prompt_count), _fmt(embedded)]
        for d, embedded in datasets
    ]
    body = (
        "<h1>depo-service</h1><h2>Runs</h2>"
        + _table(
            [
                "run",
                "dataset",
                "strategy",
                "G",
                "groups",
                "rollouts",
                "zero-variance",
                "predictor",
                "created",
            ],
            run_rows,
        )
        + "<h2>Datasets</h2>"
        + _table(["dataset", "embedder", "prompts", "embedded"], ds_rows)
    )
    return page("depo-service admin", body)


def run_page(
    run: Run,
    summary: RunSummary,
    view: PoolView,
    saved: Savings,
    version: PredictorVersion | None,
) -> str:
    head = _table(
        ["groups", "rollouts", "zero-variance share", "prompts seen", "pool", "batches"],
        [
            [
                _fmt(summary.groups),
                _fmt(summary.rollouts),
                _pct(summary.zero_variance_share),
                _fmt(summary.prompts_seen),
                _fmt(summary.pool),
                _fmt(run.batch_seq),
            ]
        ],
    )
    uniform_zv = view.uniform_zero_variance
    savings = _table(
        ["", "this run", "uniform sampling (estimated)"],
        [
            [
                "rollouts per informative group",
                _fmt(saved.per_informative, 1),
                _fmt(saved.uniform_per_informative, 1),
            ],
            ["zero-variance share", _pct(summary.zero_variance_share), _pct(uniform_zv)],
            ["rollouts saved so far", _fmt(saved.saved_rollouts, 0), ""],
        ],
    )
    hist = summary.pass_rate_histogram
    observed = charts.bars(
        [b.prompts for b in hist],
        [f"{b.lo:.1f}-{b.hi:.1f}" for b in hist],
        title=f"observed pass rate, {summary.prompts_seen:,} prompts seen",
    )
    counts, edges = np.histogram(view.pass_rates, bins=len(hist) or 10, range=(0.0, 1.0))
    estimated = charts.bars(
        [int(c) for c in counts],
        [f"{edges[i]:.1f}-{edges[i + 1]:.1f}" for i in range(len(counts))],
        title=f"estimated pass rate, {view.sampled:,} prompts of the pool",
    )
    steps = summary.zero_variance_by_step
    zv_line = charts.line(
        [s.step for s in steps],
        [s.zero_variance_share for s in steps],
        title="zero-variance share of each step's groups",
    )
    body = (
        f'<p><a href="../">all runs</a></p><h1>Run {escape(run.name)}</h1>'
        f"<p>strategy {escape(run.strategy)}, G = {run.group_size}, "
        f"epoch {run.epoch}</p>{head}"
        "<h2>Savings</h2>"
        '<p class="note">Uniform figures apply the run\'s current estimates to a uniform pick '
        "of its pool: P(a group of G is mixed), averaged. They are estimates (predicted, for "
        "prompts never served), and of today's policy, not the one that made each rollout.</p>"
        f"{savings}<h2>Difficulty</h2>{observed}{estimated}"
        f"<h2>Zero-variance groups by step</h2>{zv_line}"
        f"<h2>Predictor</h2>{_predictor(version)}"
    )
    return page(f"run {run.name}", body)


def _predictor(version: PredictorVersion | None) -> str:
    if version is None:
        return '<p class="empty">not fitted yet: selection uses each prompt\'s history alone</p>'
    meta = _table(
        ["version", "trained on (groups)", "fitted at"],
        [
            [
                _fmt(version.version),
                _fmt(version.trained_on),
                escape(version.fitted_at.isoformat(timespec="seconds")),
            ]
        ],
    )
    cal = version.calibration or {}
    rows = [
        [escape(key), _fmt(cal[key]), escape(CALIBRATION.get(key, ""))]
        for key in [k for k in CALIBRATION if k in cal] + sorted(set(cal) - set(CALIBRATION))
    ]
    return meta + _table(["calibration", "value", "meaning"], rows)
