"""Admin pages: runs, a run's charts and savings, prompts, datasets, comparison, behind the key."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser

import httpx
import pytest

from service.admin import charts
from service.app import create_app
from service.config import Settings
from service.state import AppState
from tests.fixtures.admin_seed import NASTY, seed


class Marks(HTMLParser):
    """Every element's tag, attributes and direct text, in document order."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.items: list[tuple[str, dict[str, str], list[str]]] = []
        self._open: list[int] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.items.append((tag, {k: v or "" for k, v in attrs}, []))
        self._open.append(len(self.items) - 1)

    def handle_endtag(self, tag: str) -> None:
        while self._open and self.items[self._open.pop()][0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        for i in self._open:  # an element's text includes its children's (a <title> tooltip)
            self.items[i][2].append(data)

    def find(self, tag: str, css: str | None = None) -> list[tuple[dict[str, str], str]]:
        """Marks of a tag (with a class), legend keys left out."""
        return [
            (a, "".join(t))
            for g, a, t in self.items
            if g == tag
            and (css is None or css in a.get("class", "").split())
            and "key" not in a.get("class", "").split()
        ]


def chart(html: str, chart_id: str) -> Marks:
    m = re.search(rf'<figure class="chart" id="{chart_id}">.*?</figure>', html, re.S)
    assert m is not None, f"no chart {chart_id}"
    return Marks(m.group(0))


# --------------------------------------------------------------------------- charts alone


def test_histogram_labels_every_bin_and_has_a_y_axis() -> None:
    counts = [3, 0, 7, 1, 0, 0, 12, 4, 0, 9]
    edges = [i / 10 for i in range(11)]
    m = Marks(charts.histogram(counts, edges, chart_id="h", title="t", x_label="pass rate"))
    xt = [t for _, t in m.find("text", "xtick")]
    assert xt == [f"{edges[i]:.2g}\u2013{edges[i + 1]:.2g}" for i in range(10)]
    yt = [t for _, t in m.find("text", "ytick")]
    assert yt[0] == "0" and yt[-1] == "20"  # a readable top above the largest bar (12)
    assert [int(a["data-count"]) for a, _ in m.find("rect", "bar")] == counts
    assert [t for _, t in m.find("text", "count")] == [str(c) for c in counts]
    assert "prompts" in [t for _, t in m.find("text", "axis-label")]


def test_step_chart_breaks_at_a_gap_and_keeps_an_outlier_from_squeezing_the_rest() -> None:
    pts = [(s, 0.5 if s % 2 else 0.25) for s in range(1, 501)] + [(20_003, 0.9)]
    m = Marks(charts.steps([charts.Series("zv", pts)], chart_id="z", title="t", y_label="%"))
    gaps = m.find("g", "gap")
    assert [(a["data-from"], a["data-to"]) for a, _ in gaps] == [("500", "20003")]
    xs = {int(a["data-step"]): float(a["cx"]) for a, _ in m.find("circle")}
    plot_right = charts.LEFT + charts.PW
    assert xs[500] > charts.LEFT + 0.9 * charts.PW  # steps 1..500 fill the axis
    assert xs[500] < xs[20_003] <= plot_right
    for a, _ in m.find("polyline"):  # no line reaches the outlier step
        line_xs = [float(p.split(",")[0]) for p in a["points"].split()]
        assert max(line_xs) <= xs[500] + 0.01
    ticks = [t for _, t in m.find("text", "xtick")]
    assert ticks[:2] == ["1", "20,003"] and "500" not in ticks  # too close to 20,003's label
    assert {"200", "400"} <= set(ticks)  # and round ones inside the long segment


def test_step_chart_draws_rolling_mean_reference_and_clips_one_huge_value() -> None:
    pts = [(s, 10.0) for s in range(100)] + [(100, 5000.0)]
    m = Marks(
        charts.steps(
            [charts.Series("per step", pts, rolling=10)],
            chart_id="r",
            title="t",
            y_label="rollouts",
            reference=(12.0, "uniform pick"),
        )
    )
    assert len(m.find("polyline", "rolling")) == 1
    [(ref, _)] = m.find("line", "ref")
    assert float(ref["data-value"]) == 12.0
    [(clipped, tip)] = m.find("circle", "clipped")
    assert clipped["data-step"] == "100" and "off the scale" in tip
    top = max(float(t.replace(",", "")) for _, t in m.find("text", "ytick"))
    assert 12 < top < 100  # the scale follows the typical steps, not the one outlier


def test_rolling_mean_is_a_trailing_mean() -> None:
    assert charts.rolling_mean([(0, 1.0), (1, 3.0), (2, 5.0), (3, 7.0)], 2) == [
        (0, 1.0),
        (1, 2.0),
        (2, 4.0),
        (3, 6.0),
    ]


# --------------------------------------------------------------------------- pages


async def test_index_lists_runs_and_datasets(client: httpx.AsyncClient, uid: str) -> None:
    s = await seed(client, uid, n=30)
    r = await client.get("/admin/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    row = re.search(
        rf'<a href="/admin/runs/{s.run}" data-run="{s.run}">{s.run}</a>.*?</tr>', r.text
    )
    assert row is not None
    assert f">{s.dataset}</a></td>" in row.group(0)
    assert f"<td>{100 * s.zero / s.groups:.1f}%</td>" in row.group(0)
    assert "<td>ngrams</td><td>30</td>" in r.text
    assert '<meta http-equiv="refresh"' not in r.text
    assert (
        '<meta http-equiv="refresh" content="30">' in (await client.get("/admin/?refresh=30")).text
    )


async def test_run_page_charts_and_savings_match_the_api(
    client: httpx.AsyncClient, uid: str
) -> None:
    s = await seed(client, uid)
    r = await client.get(f"/admin/runs/{s.run}")
    assert r.status_code == 200, r.text
    page = r.text
    assert f"<h1>Run {s.run}</h1>" in page
    summary = (await client.get(f"/v1/runs/{s.run}/summary")).json()
    head = f"<td>{s.groups}</td><td>{s.rollouts}</td><td>{100 * s.zero / s.groups:.1f}%</td>"
    assert head + f"<td>{summary['prompts_seen']}</td><td>40</td>" in page
    zv = chart(page, "zero-variance-by-step")
    got = {int(a["data-step"]): float(a["data-value"]) for a, _ in zv.find("circle")}
    want = {x["step"]: x["zero_variance_share"] for x in summary["zero_variance_by_step"]}
    assert got.keys() == want.keys() and all(abs(got[k] - want[k]) < 1e-5 for k in want)
    assert len(zv.find("g", "gap")) == 1  # steps 8..20,002 are missing
    assert len(zv.find("polyline", "rolling")) == 1 and len(zv.find("line", "ref")) == 1
    per = chart(page, "per-informative-by-step")
    assert all(float(a["data-value"]) >= 4 for a, _ in per.find("circle"))
    observed = chart(page, "observed-pass-rate")
    bars = [int(a["data-count"]) for a, _ in observed.find("rect", "bar")]
    assert bars == [b["prompts"] for b in summary["pass_rate_histogram"]]
    assert len(observed.find("text", "xtick")) == 10
    # savings: both baselines, each with how it is estimated and what a negative value means
    uniform = float(
        re.search(r'<span id="saved-uniform">([-\d,]+)</span>', page)[1].replace(",", "")
    )
    dapo = float(re.search(r'<span id="saved-dapo">([-\d,]+)</span>', page)[1].replace(",", ""))
    zv_u = float(zv.find("line", "ref")[0][0]["data-value"])
    zero_rollouts = s.zero * 4
    assert abs(uniform - (zv_u * s.rollouts - zero_rollouts)) <= 1
    assert abs(dapo - ((s.groups - s.zero) * 4 / (1 - zv_u) - s.rollouts)) <= 1
    assert "A negative value means this run did worse than that baseline" in page
    assert "DAPO-style filtering samples uniformly and drops zero-variance groups" in page
    assert f'href="/admin/runs/{s.run}/prompts"' in page


async def test_run_page_shows_the_predictor_and_its_reliability(
    settings: Settings, uid: str
) -> None:
    app = create_app(settings.model_copy(update={"refit_min_seconds": 0.0}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        state: AppState = app.state.depo
        sel = {"fit_min_outcomes": 20, "refit_every": 20}
        s = await seed(client, uid, steps=(0, 1), per_step=12, selection=sel)
        await state.jobs.idle()  # the first fit, on prompts 0..23
        for step in (2, 3):
            results = [{"prompt_id": f"p{i}", "rewards": [1.0, 0, 0, 0]} for i in range(24, 36)]
            body = {"step": step, "results": results}
            assert (await client.post(f"/v1/runs/{s.run}/outcomes", json=body)).status_code == 200
        await state.jobs.idle()  # the second fit scores the first on prompts 24..35
        predictor = (await client.get(f"/v1/runs/{s.run}/predictor")).json()
        page = (await client.get(f"/admin/runs/{s.run}")).text
    assert predictor["version"] == 2 and predictor["calibration"]["unseen_prompts"] == 12
    assert f"<h3>Version {predictor['version']}</h3>" in page
    rel = chart(page, "reliability")
    cal = [a for a, _ in rel.find("circle", "cal")]
    assert sum(int(a["data-count"]) for a in cal) == 12
    assert all(abs(float(a["data-observed"]) - 0.25) < 1e-6 for a in cal)  # each 1 of 4
    mean_pred = sum(float(a["data-predicted"]) * int(a["data-count"]) for a in cal) / 12
    assert abs(mean_pred - predictor["calibration"]["mean_predicted"]) < 1e-3
    assert "<th>trained on (groups)</th>" in page and "<td>fitted_prompts</td>" in page
    assert len(chart(page, "versions").find("circle")) >= 2  # spearman and mae of version 2


async def test_prompt_browser_searches_and_sorts(client: httpx.AsyncClient, uid: str) -> None:
    s = await seed(client, uid)
    base = f"/admin/runs/{s.run}/prompts"
    page = (await client.get(base, params={"q": "problem 1"})).text
    ids = re.findall(r'data-prompt="([^"]+)"', page)
    assert sorted(ids) == sorted(f"p{i}" for i in [1, *range(10, 20)])
    page = (await client.get(base, params={"q": "P7"})).text
    assert re.findall(r'data-prompt="([^"]+)"', page) == ["p7"]
    page = (await client.get(base, params={"sort": "observations"})).text
    ids = re.findall(r'data-prompt="([^"]+)"', page)
    seen = {p: len(v) for p, v in s.per_prompt.items()}
    counts = [seen.get(p, 0) for p in ids]
    assert counts == sorted(counts, reverse=True) and counts[0] == max(seen.values())
    page = (await client.get(base, params={"sort": "estimate", "order": "asc"})).text
    ids = re.findall(r'data-prompt="([^"]+)"', page)
    pred = await client.post(f"/v1/runs/{s.run}/predict", json={"prompt_ids": ids})
    rates = [x["pass_rate"] for x in pred.json()["items"]]
    assert rates == sorted(rates) and len(ids) == 40
    assert NASTY not in page and "&lt;script&gt;" in page
    r = await client.get(base, params={"sort": "nonsense"})
    assert r.status_code == 422 and "sort" in r.text


async def test_prompt_page_has_text_metadata_groups_and_links(
    client: httpx.AsyncClient, uid: str
) -> None:
    s = await seed(client, uid)
    page = (await client.get(f"/admin/runs/{s.run}/prompts/p0")).text
    assert NASTY not in page and "<i>evil</i>" not in page
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in page and "&lt;i&gt;evil" in page
    api = (await client.get(f"/v1/runs/{s.run}/prompts/p0")).json()
    rows = re.findall(r"<tr><td>([\d,]+)</td><td>(\d+) of (\d+)</td>", page)
    assert [(int(a.replace(",", "")), int(k)) for a, k, _ in rows] == [
        (h["step"], h["successes"]) for h in api["history"]
    ]
    assert f'<a href="/admin/runs/{s.run}" id="back">' in page
    assert f"<td>{api['estimate']['pass_rate']:,.3f}</td>" in page
    r = await client.get(f"/admin/runs/{s.run}/prompts/nope")
    assert r.status_code == 404 and r.json()["type"] == "not_found"


async def test_dataset_page_and_compare(client: httpx.AsyncClient, uid: str) -> None:
    a = await seed(client, uid, name="a")
    b = await seed(client, uid, name="b", dataset=a.dataset, steps=(0, 1, 2))
    page = (await client.get(f"/admin/datasets/{a.dataset}")).text
    assert '<span class="big" id="size">40</span>' in page
    assert "<b>level</b>" in page or "<b>source</b>" in page
    page = (await client.get(f"/admin/datasets/{a.dataset}", params={"field": "source"})).text
    rows = dict(re.findall(r"<tr><td>([^<]+)</td><td>(\d+)</td>", page))
    assert {k: int(v) for k, v in rows.items() if k in ("gsm8k", "math", "aime")} == {
        "gsm8k": 13,
        "math": 13,
        "aime": 13,
    }
    assert "&lt;i&gt;evil&lt;/i&gt;" in page and "<i>evil</i>" not in page
    r = await client.get("/admin/compare", params={"run": [a.run, b.run]})
    assert r.status_code == 200, r.text
    for cid in ("compare-zero-variance", "compare-per-informative"):
        names = [t for _, t in chart(r.text, cid).find("text", "legend")]
        assert names == [a.run, b.run]
    await client.post("/v1/datasets", json={"name": f"other-{uid}"})
    await client.post(
        f"/v1/datasets/other-{uid}/prompts", json={"prompts": [{"id": "x", "text": "x"}]}
    )
    await client.post(
        "/v1/runs", json={"name": f"o-{uid}", "dataset": f"other-{uid}", "group_size": 4}
    )
    r = await client.get("/admin/compare", params={"run": [a.run, f"o-{uid}"]})
    assert r.status_code == 422 and r.json()["field"] == "run"
    assert (await client.get("/admin/compare", params={"run": [a.run]})).status_code == 422


async def test_unknown_run_is_404(client: httpx.AsyncClient, uid: str) -> None:
    r = await client.get(f"/admin/runs/missing-{uid}")
    assert r.status_code == 404 and r.json()["type"] == "not_found"


@pytest.fixture
async def keyed(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"api_keys": ["k1"]}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://depo.test") as c:
            yield c


async def test_admin_takes_the_key_as_basic_password_or_bearer(
    keyed: httpx.AsyncClient,
) -> None:
    r = await keyed.get("/admin/")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
    wrong = base64.b64encode(b"admin:nope").decode()
    assert (
        await keyed.get("/admin/", headers={"Authorization": f"Basic {wrong}"})
    ).status_code == 401
    assert (await keyed.get("/admin/", headers={"Authorization": "Basic !!"})).status_code == 401
    good = base64.b64encode(b"anyone:k1").decode()
    assert (
        await keyed.get("/admin/", headers={"Authorization": f"Basic {good}"})
    ).status_code == 200
    assert (await keyed.get("/admin/", headers={"Authorization": "Bearer k1"})).status_code == 200
    assert (await keyed.get("/admin/compare?run=a&run=b")).status_code == 401
    # the API itself still asks for a bearer token
    r = await keyed.get("/v1/runs/x", headers={"Authorization": f"Basic {good}"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


async def test_pages_of_a_run_without_groups(client: httpx.AsyncClient, uid: str) -> None:
    s = await seed(client, uid, steps=())
    page = (await client.get(f"/admin/runs/{s.run}", params={"refresh": 15})).text
    assert "zero-variance groups by step: no data yet" in page
    assert "observed pass rate, 0 prompts seen: no data yet" in page
    assert '<span id="saved-uniform">-</span>' in page
    assert '<meta http-equiv="refresh" content="15">' in page
    prompt = await client.get(f"/admin/runs/{s.run}/prompts/p3")
    assert prompt.status_code == 200 and "Groups (0)" in prompt.text
    assert (await client.get(f"/admin/runs/{s.run}/prompts")).status_code == 200
