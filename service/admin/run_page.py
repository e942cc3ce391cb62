"""The run page: what selection saved, by step, and how far to trust the predictor."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import numpy as np

from service.admin import charts, heatmap
from service.admin.pages import dataset_href, fmt, link, page, pct, run_href, table
from service.admin.predictor import Reliability, VersionRow
from service.admin.runlog import BINS, GROUPS, HIST, ROLLOUTS, ZERO, RunTotals
from service.admin.service import PoolView, Savings
from service.estimator.history import DEFAULT_STRENGTH, MIN_PROMPTS, weight
from service.models import Run

LAST_STEPS = 1000  # steps the by-step charts draw: the newest ones

# what each calibration figure of a predictor version means
CALIBRATION = {
    "spearman": "rank correlation of the previous version's priors with outcomes it had not seen",
    "mae": "mean absolute error of those priors against the observed rates",
    "mean_predicted": "mean prior of those prompts",
    "mean_observed": "their mean observed pass rate",
    "unseen_prompts": "prompts those figures are over",
    "mixed_auc": "AUC of the previous version's P(mixed) on whose new outcomes were mixed",
    "scored_version": "the version those figures score",
    "prior_strength": "pseudo-count the prior is worth, estimated on held-out prompts",
    "label_weight": "weight of the known difficulty (logit per logit; 1 as given, 0 ignored)",
    "labelled_prompts": "prompts of the dataset with a known difficulty",
    "served_drift_logit": "how far served prompts came out above their estimate (logit)",
    "tracking_gain_own": "logit gain per unit of a prompt's own training (reward sd of a group)",
    "tracking_gain_neighbours": "logit gain per unit of its nearest neighbours' training",
    "tracking_gain_global": "logit gain per unit of the whole run's training",
    "tracking_rows": "re-served groups the gains are fitted on",
    "fitted_prompts": "prompts this version was fitted on",
    "fit_seconds": "time the fit took",
}
VS_UNIFORM = (
    "A uniform pick spending this run's rollouts would waste the pool's estimated "
    "zero-variance share of them; this is that waste less the rollouts this run spent on its "
    "own zero-variance groups."
)
VS_DAPO = (
    "DAPO-style filtering samples uniformly and drops zero-variance groups, so it generates "
    "G / (1 &minus; estimated zero-variance share) rollouts per informative group it keeps; "
    "this is that cost for this run's informative groups less the rollouts this run spent."
)
GAINS = ("tracking_gain_own", "tracking_gain_neighbours", "tracking_gain_global")


def window(n: int) -> int:
    """Rolling-mean width: about a twentieth of the steps shown, 3 to 50."""
    return int(min(50, max(3, n // 20)))


def step_series(t: RunTotals, last: int = LAST_STEPS) -> tuple[list[tuple[int, float]], ...]:
    """(step, zero-variance share) and (step, rollouts per informative group) of the last steps."""
    steps, tab = t.steps[-last:], t.table[-last:]
    zv = [(int(s), float(r[ZERO] / r[GROUPS])) for s, r in zip(steps, tab, strict=True)]
    inf = tab[:, GROUPS] - tab[:, ZERO]
    per = [
        (int(s), float(r[ROLLOUTS] / i)) for s, r, i in zip(steps, tab, inf, strict=True) if i > 0
    ]
    return zv, per


def render(
    run: Run,
    dataset: str,
    t: RunTotals,
    view: PoolView,
    saved: Savings,
    versions: Sequence[VersionRow],
    rel: Reliability | None,
    siblings: Sequence[str],
    refresh: int,
    *,
    extra: str = "",
) -> str:
    prompts_seen = int((t.prompt_groups > 0).sum())
    head = table(
        [
            "groups",
            "rollouts",
            "zero-variance share",
            "prompts seen",
            "pool",
            "batches",
            "last step",
            "predictor version",
        ],
        [
            [
                fmt(run.groups),
                fmt(run.rollouts),
                pct(run.zero_variance_groups / run.groups if run.groups else None),
                fmt(prompts_seen),
                fmt(view.pool),
                fmt(run.batch_seq),
                fmt(run.max_step if run.max_step >= 0 else None),
                fmt(versions[-1].version if versions else None),
            ]
        ],
        css="head",
    )
    name = run.name
    links = [
        link(f"{run_href(name)}/prompts", "browse its prompts", id="browse"),
        link(dataset_href(dataset), f"dataset {dataset}"),
    ] + [link(f"/admin/compare?run={_q(name)}&run={_q(s)}", f"compare with {s}") for s in siblings]
    body = (
        f"<h1>Run {escape(name)}</h1>"
        f"<p>strategy {escape(run.strategy)}, G = {run.group_size}, epoch {run.epoch} · "
        + " · ".join(links)
        + f"</p>{_history_line(run, versions)}{head}"
        + "<h2>By step</h2>"
        + _by_step(run, t, view, saved)
        + "<h2>Rollouts saved</h2>"
        + _savings(saved)
        + "<h2>Difficulty</h2>"
        + _difficulty(t, view, prompts_seen)
        + _moved(t, run.group_size)
        + "<h2>Predictor</h2>"
        + _predictor(versions, rel)
        + extra  # profile by metadata field, export links, route shares (curation.py)
    )
    return page(f"run {name}", body, refresh=refresh, here=run_href(name))


def _history_line(run: Run, versions: Sequence[VersionRow]) -> str:
    """A `history_from` run: its source and the weight the source's counts have now."""
    if run.history_from is None:
        return ""
    cal = versions[-1].calibration if versions else {}
    k, used = cal.get("history_strength"), int(cal.get("history_prompts", 0))
    learned = k is not None and used >= MIN_PROMPTS
    kappa = float(k) if k is not None else DEFAULT_STRENGTH
    how = f"learned on {fmt(used)} prompts both runs rolled out" if learned else "the default"
    src = run.history_from
    return (
        f'<p id="history">starts from the per-prompt history of run '
        f"{link(run_href(src), src)}: weight {float(weight(kappa, run.group_size)):.2f} a group "
        f"(at most {kappa:.3g} rollouts a prompt; {how})</p>"
    )


def _q(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def _by_step(run: Run, t: RunTotals, view: PoolView, saved: Savings) -> str:
    zv, per = step_series(t)
    w = window(len(zv))
    uz = saved.uniform_zero_variance
    skipped = len(zv) - len(per)
    shown = f"the last {LAST_STEPS:,} steps" if len(t.steps) > LAST_STEPS else "every step"
    zv_chart = charts.steps(
        [charts.Series("per step", zv, "s0", rolling=w)],
        chart_id="zero-variance-by-step",
        title="zero-variance groups by step",
        y_label="% of the step's groups",
        fmt=charts.pct,
        y_max=1.0,
        reference=(uz, "uniform pick") if uz is not None else None,
    )
    per_chart = charts.steps(
        [charts.Series("per step", per, "s0", rolling=w)],
        chart_id="per-informative-by-step",
        title="rollouts per informative group by step",
        y_label="rollouts per informative group",
        reference=(saved.uniform_per_informative, "uniform pick")
        if saved.uniform_per_informative is not None
        else None,
    )
    note = (
        f'<p class="note">Charts show {shown}; a "//" on the step axis marks steps with no '
        "groups, which take no room. The dashed line is what a uniform pick of the pool would "
        f"give by today's estimates ({view.sampled:,} prompts sampled). "
        + (
            f"{skipped:,} steps had no informative group and are left out of the second chart. "
            if skipped
            else ""
        )
        + "Orange dots sit above the scale: hover for the value.</p>"
    )
    return f'<div class="grid2">{zv_chart}{per_chart}</div>{note}'


def _savings(s: Savings) -> str:
    rows = [
        [
            "rollouts per informative group",
            fmt(s.per_informative, 1),
            fmt(s.uniform_per_informative, 1),
        ],
        [
            "zero-variance share of groups",
            pct(1 - s.informative_groups / s.groups if s.groups else None),
            pct(s.uniform_zero_variance),
        ],
    ]
    return (
        table(["", "this run", "uniform pick (estimated)"], rows)
        + table(
            ["rollouts saved", "estimate", "how it is estimated"],
            [
                [
                    "against uniform sampling",
                    f'<span id="saved-uniform">{fmt(s.vs_uniform, 0)}</span>',
                    VS_UNIFORM,
                ],
                [
                    "against DAPO-style filtering",
                    f'<span id="saved-dapo">{fmt(s.vs_dapo, 0)}</span>',
                    VS_DAPO,
                ],
            ],
            css="savings",
        )
        + '<p class="note">Both use today\'s estimates of the pool (predicted, for prompts never '
        "served), not the policy that made each rollout. A negative value means this run did "
        "worse than that baseline by this estimate: its groups came out zero-variance more "
        "often than a uniform pick's would, for instance early on while the estimates are only "
        "priors, or once training has made most of the pool easy for today's policy.</p>"
    )


def _difficulty(t: RunTotals, view: PoolView, seen: int) -> str:
    rates = t.observed_rates()
    counts, edges = np.histogram(rates, bins=10, range=(0.0, 1.0))
    observed = charts.histogram(
        [int(c) for c in counts],
        [float(e) for e in edges],
        chart_id="observed-pass-rate",
        title=f"observed pass rate, {seen:,} prompts seen",
        x_label="pass rate so far (successes / rollouts)",
    )
    counts, edges = np.histogram(view.pass_rates, bins=10, range=(0.0, 1.0))
    estimated = charts.histogram(
        [int(c) for c in counts],
        [float(e) for e in edges],
        chart_id="estimated-pass-rate",
        title=f"estimated pass rate, {view.sampled:,} prompts of the pool",
        x_label="estimated pass rate (prior plus history)",
    )
    return f'<div class="grid2">{observed}{estimated}</div>'


def _moved(t: RunTotals, group_size: int) -> str:
    chart = heatmap.heatmap(
        [int(s) for s in t.steps],
        t.table[:, HIST : HIST + BINS].tolist(),
        chart_id="pass-rate-by-step",
        title="groups by pass rate and step (colour: share of the column's groups)",
        group_size=group_size,
    )
    return (
        f'<div class="grid2">{chart}</div><p class="note">How the difficulty of what was '
        "served moved over the run: each column is a range of steps (every step of the run, "
        "summed into ranges at least 4 px wide), each row a pass-rate bin of the groups "
        "(successes / G); a cell's colour is its share of that column's groups, the legend "
        "counts the groups in each colour and the tooltip gives each cell's count. Rows no k of "
        "G can land in are left out. These are the groups' observed pass rates, not the "
        "estimates of the whole pool at the time (those are not kept per step).</p>"
    )


def _predictor(versions: Sequence[VersionRow], rel: Reliability | None) -> str:
    if not versions:
        return '<p class="empty">not fitted yet: selection uses each prompt\'s history alone</p>'
    newest = versions[-1]
    if rel is None or not rel.bins:
        diagram = '<p class="empty">reliability: no scored version yet (it needs two fits)</p>'
    else:
        diagram = charts.reliability(
            rel.bins,
            chart_id="reliability",
            title=f"reliability of version {rel.scored} on {rel.prompts:,} prompts it had not seen",
        )
    quality = [
        charts.Series(
            k,
            [
                (v.trained_on, float(v.calibration[k]))
                for v in versions
                if isinstance(v.calibration.get(k), int | float)
            ],
            css,
        )
        for k, css in (("spearman", "s0"), ("mae", "s1"))
    ]
    gains = [
        charts.Series(
            k.removeprefix("tracking_gain_"),
            [
                (v.trained_on, float(v.calibration[k]))
                for v in versions
                if isinstance(v.calibration.get(k), int | float)
            ],
            css,
        )
        for k, css in zip(GAINS, ("s0", "s1", "s2"), strict=True)
    ]
    over_time = charts.steps(
        [s for s in quality if s.points],
        chart_id="versions",
        title="predictor versions: calibration on unseen prompts",
        y_label="spearman / MAE",
        x_label="outcome groups logged at fit",
    )
    gain_chart = (
        charts.steps(
            [s for s in gains if s.points],
            chart_id="tracking-gains",
            title="tracking gains",
            y_label="logit per unit of training",
            x_label="outcome groups logged at fit",
        )
        if any(s.points for s in gains)
        else '<p class="empty">tracking gains: not fitted</p>'
    )
    cal = newest.calibration
    rows = [
        [escape(k), fmt(cal[k]), escape(CALIBRATION.get(k, ""))]
        for k in [k for k in CALIBRATION if k in cal] + sorted(set(cal) - set(CALIBRATION))
    ]
    recent = [
        [
            fmt(v.version),
            fmt(v.trained_on),
            escape(v.fitted_at.isoformat(timespec="seconds")),
            fmt(v.calibration.get("spearman")),
            fmt(v.calibration.get("mae")),
        ]
        for v in versions[-10:][::-1]
    ]
    return (
        f'<div class="grid2">{diagram}{over_time}{gain_chart}</div>'
        '<p class="note">Reliability: prompts binned by the scored version\'s predicted pass '
        "rate; each dot is a bin's mean prediction against the observed rate of its groups "
        "logged after that version was fitted, sized and labelled by its prompt count. On the "
        "diagonal is perfectly calibrated.</p>"
        + table(["version", "trained on (groups)", "fitted at", "spearman", "mae"], recent)
        + f"<h3>Version {newest.version}</h3>"
        + table(["calibration", "value", "meaning"], rows, css="cal")
    )
