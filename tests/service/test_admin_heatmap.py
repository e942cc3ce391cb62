"""The run page's heatmap of groups by step and pass rate, cell by cell against its totals."""

from __future__ import annotations

import itertools
import re

import httpx
import numpy as np

from service.admin import charts, heatmap
from tests.fixtures.admin_seed import Seeded, seed
from tests.service.test_admin import Marks, chart


def cells(html: str) -> list[dict[str, str]]:
    return [a for a, _ in Marks(html).find("rect", "cell")]


def check_against(steps: list[int], counts: np.ndarray, html: str) -> list[dict[str, str]]:
    legend = [int(a["data-groups"]) for a, _ in Marks(html).find("g", "band")]
    return check_cells(steps, counts, cells(html), legend)


def check_cells(
    steps: list[int], counts: np.ndarray, got: list[dict[str, str]], legend: list[int]
) -> list[dict[str, str]]:
    """Every cell is the sum of its step range's groups in its bin; nothing else is drawn."""
    bins = counts.shape[1]
    seen: dict[tuple[int, int], int] = {}
    for a in got:
        lo, hi = int(a["data-from"]), int(a["data-to"])
        rows = [i for i, s in enumerate(steps) if lo <= s <= hi]
        assert int(a["data-steps"]) == len(rows)
        b = round(float(a["data-lo"]) * bins)
        assert int(a["data-count"]) == counts[rows, b].sum() > 0
        share = int(a["data-count"]) / counts[rows].sum()
        assert abs(float(a["data-share"]) - share) < 1e-5
        band = max(i for i, lo_ in enumerate(heatmap.BANDS) if share >= lo_)
        assert a["fill"] == heatmap.COLOURS[band]
        seen[(lo, b)] = int(a["data-count"])
    columns = sorted({(int(a["data-from"]), int(a["data-to"])) for a in got})
    assert all(p[1] < q[0] for p, q in itertools.pairwise(columns))  # disjoint
    assert sum(seen.values()) == counts.sum()  # every group in exactly one cell
    assert len(got) == len(seen)
    assert sum(legend) == counts.sum()
    return got


def logged(s: Seeded, g: int) -> np.ndarray:
    """Groups per (step, pass-rate bin) of a seeded run, from what was sent."""
    want = np.zeros((len(s.steps), 10))
    for groups in s.per_prompt.values():
        for step, k in groups:
            want[s.steps.index(step), min(k * 10 // g, 9)] += 1
    return want


def test_heatmap_cells_sum_the_step_totals_across_a_gap() -> None:
    rng = np.random.default_rng(0)
    steps = [*range(1, 301), 5_000]
    counts = rng.integers(0, 30, size=(len(steps), 10)).astype(float)
    counts[:, 4] = 0  # G = 8: nothing lands in 0.4-0.5
    html = heatmap.heatmap(steps, counts.tolist(), chart_id="h", title="t", group_size=8)
    got = check_against(steps, counts, html)
    m = Marks(html)
    assert [(a["data-from"], a["data-to"]) for a, _ in m.find("g", "gap")] == [("300", "5000")]
    columns = {(a["data-from"], a["data-to"]) for a in got}
    assert ("5000", "5000") in columns  # the outlier step has its own column
    assert 60 <= len(columns) <= charts.PW / heatmap.CELL_MIN + 1  # long run summed in ranges
    labels = [t for _, t in m.find("text", "ytick")]
    assert len(labels) == 9 and "0.4\u20130.5" not in labels and labels[0] == "0\u20130.1"
    ticks = [t for _, t in m.find("text", "xtick")]
    assert ticks[0] == "1" and "5,000" in ticks


def test_heatmap_of_one_step_and_of_nothing() -> None:
    counts = np.array([[5.0, 0, 3, 0, 0, 0, 0, 0, 0, 2]])
    html = heatmap.heatmap([7], counts.tolist(), chart_id="h", title="t")
    got = check_against([7], counts, html)
    assert len(got) == 3 and {a["data-from"] for a in got} == {"7"}
    assert abs(float(got[0]["x"]) - charts.LEFT) < 0.01  # one column fills the axis
    assert abs(float(got[0]["width"]) - charts.PW) < 0.5
    assert len(Marks(html).find("text", "ytick")) == 10  # no G: every bin shown
    assert heatmap.heatmap([], [], chart_id="h", title="t") == charts.empty("t")
    zeros = [[0.0] * 10]
    assert heatmap.heatmap([3], zeros, chart_id="h", title="t") == charts.empty("t")


def test_heatmap_keeps_a_bin_that_groups_of_another_size_reached() -> None:
    counts = np.zeros((2, 10))
    counts[:, [0, 2, 5, 7, 9]] = 4
    counts[1, 3] = 1  # 1 of 3, in a G = 4 run
    html = heatmap.heatmap([0, 1], counts.tolist(), chart_id="h", title="t", group_size=4)
    check_against([0, 1], counts, html)
    assert len(Marks(html).find("text", "ytick")) == 6


async def test_run_page_heatmap_matches_the_groups_logged(
    client: httpx.AsyncClient, uid: str
) -> None:
    s = await seed(client, uid)  # G = 4, steps 0..7 and 20,003
    page = (await client.get(f"/admin/runs/{s.run}")).text
    want = logged(s, 4)
    m = chart(page, "pass-rate-by-step")
    fig = re.search(r'<figure class="chart" id="pass-rate-by-step">.*?</figure>', page, re.S)
    assert fig is not None
    got = check_against(s.steps, want, fig.group(0))
    assert len({a["data-from"] for a in got}) == len(s.steps)  # few steps: one column each
    assert len(m.find("text", "ytick")) == 5  # 0..4 of 4
    summary = (await client.get(f"/v1/runs/{s.run}/summary")).json()
    for x in summary["zero_variance_by_step"]:  # all-fail and all-pass cells are the API's
        mine = [a for a in got if a["data-from"] == str(x["step"])]
        assert sum(int(a["data-count"]) for a in mine) == x["groups"]
        edge = sum(int(a["data-count"]) for a in mine if a["data-lo"] in ("0", "0.9"))
        assert edge == round(x["zero_variance_share"] * x["groups"])
