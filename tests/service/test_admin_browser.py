"""The admin pages in a real headless Chromium (Debian's `chromium` + `chromium-driver`).

A live `depo serve` holds runs seeded through the API; Selenium loads each page at 1280 px,
checks the charts' marks against the API's figures, follows run -> prompts -> prompt -> run,
and saves a screenshot of each page under DEPO_SCREENSHOTS (default .artifacts/screenshots).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.admin_seed import NASTY, Seeded, seed
from tests.fixtures.live import REPO_ROOT, LiveServer
from tests.service.test_admin_heatmap import check_cells, logged

pytestmark = pytest.mark.slow  # a server process and a browser: about 15-25 s

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if CHROMIUM is None or DRIVER is None:
    pytest.skip(
        "no chromium / chromedriver on PATH: `apt-get install -y chromium chromium-driver` "
        "(.ci/run installs them)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (dev extra)")
By = pytest.importorskip("selenium.webdriver.common.by").By

SHOTS = Path(os.environ.get("DEPO_SCREENSHOTS", REPO_ROOT / ".artifacts" / "screenshots"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Seeded, Seeded]]:
    server = LiveServer(tmp_path_factory.mktemp("browser"), HF_HUB_OFFLINE="1").start()

    async def go() -> tuple[Seeded, Seeded]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
            steps = (*range(0, 60), 400)  # a long stretch, a gap, one outlier step
            a = await seed(c, "b", n=60, steps=steps, per_step=16)
            b = await seed(c, "b", name="other", dataset=a.dataset, steps=tuple(range(30)))
            return a, b

    try:
        a, b = asyncio.run(go())
        yield server.url, a, b
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(pytestconfig: pytest.Config) -> Iterator[Any]:
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(arg)
    opts.add_argument("--window-size=1280,1000")
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()
        reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"admin page screenshots: {SHOTS}")


@pytest.fixture(scope="module")
def routed(site: tuple[str, Seeded, Seeded]) -> list[tuple[int, dict[str, Any]]]:
    """Three route calls on the first run, at steps 10, 20 and 30: (step, answer)."""
    url, a, _ = site
    tiers = [{"name": "small", "max_difficulty": 0.5}, {"name": "large"}]
    out = []
    for step, ids in ((10, range(0, 20)), (20, range(20, 50)), (30, range(5, 15))):
        body = {"prompt_ids": [f"p{i}" for i in ids], "tiers": tiers, "step": step}
        r = httpx.post(f"{url}/v1/runs/{a.run}/route", json=body, timeout=30)
        assert r.status_code == 200, r.text
        out.append((step, r.json()))
    return out


def check_curation(d: Any, url: str, a: Seeded, routed: list[tuple[int, dict[str, Any]]]) -> None:
    """Route shares against the route answers; the profile's cells against `/profile`."""
    legend = [t.text for t in marks(d, "route-shares", "text.legend")]
    assert legend and set(legend) <= {"small", "large"}
    for i, name in enumerate(legend):
        dots = marks(d, "route-shares", f"circle.s{i}")
        got = {
            int(c.get_attribute("data-step")): float(c.get_attribute("data-value")) for c in dots
        }
        want = {
            step: next(t["share"] for t in ans["tiers"] if t["name"] == name)
            for step, ans in routed
        }
        assert got == pytest.approx(want, rel=1e-5), name
    exports = d.find_elements(By.CSS_SELECTOR, "table.exports a[data-export]")
    assert len(exports) == 18 and all(e.is_displayed() for e in exports)
    d.find_element(By.CSS_SELECTOR, "a[data-field='source']").click()
    prof = api(url, f"/v1/runs/{a.run}/profile?by=source")
    for css, key in (("profile-estimated", "estimated"), ("profile-observed", "observed")):
        rows = d.find_elements(By.CSS_SELECTOR, f"table.{css} tr")[1:]
        got = {
            r.find_element(By.CSS_SELECTOR, "td").text: [
                int(c.get_attribute("data-count"))
                for c in r.find_elements(By.CSS_SELECTOR, "td[data-count]")
            ]
            for r in rows
        }
        assert got == {g["value"]: g[key] for g in prof["groups"]}, css
    assert d.find_element(By.CSS_SELECTOR, "table.profile").is_displayed()


def shoot(driver: Any, name: str) -> None:
    """A full-page screenshot, and the page fits 1280 px without sideways scrolling."""
    width = driver.execute_script("return document.documentElement.scrollWidth")
    assert width <= 1280, f"{name} is {width} px wide"
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(height + 120, 800), 6000))
    driver.save_screenshot(str(SHOTS / f"{name}.png"))
    driver.set_window_size(1280, 1000)


def api(url: str, path: str) -> Any:
    r = httpx.get(url + path, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def marks(driver: Any, chart: str, css: str) -> list[Any]:
    return driver.find_elements(By.CSS_SELECTOR, f"svg[data-chart='{chart}'] {css}:not(.key)")


ATTRS = """return Array.from(document.querySelectorAll(arguments[0])).map(
    e => Object.fromEntries(Array.from(e.attributes).map(x => [x.name, x.value])))"""


def check_heatmap(d: Any, a: Seeded, summary: dict[str, Any]) -> None:
    """Every cell against the groups sent; columns and all-fail/all-pass cells against the API."""
    chart = "svg[data-chart='pass-rate-by-step']"
    cells = d.execute_script(ATTRS, f"{chart} rect.cell")
    legend = [int(g["data-groups"]) for g in d.execute_script(ATTRS, f"{chart} g.band")]
    check_cells(a.steps, logged(a, 4), cells, legend)
    assert sum(legend) == summary["groups"]
    for x in summary["zero_variance_by_step"]:  # few steps here: one column each
        mine = [c for c in cells if c["data-from"] == c["data-to"] == str(x["step"])]
        assert sum(int(c["data-count"]) for c in mine) == x["groups"]
        edge = sum(int(c["data-count"]) for c in mine if c["data-lo"] in ("0", "0.9"))
        assert edge == round(x["zero_variance_share"] * x["groups"])
    assert len(marks(d, "pass-rate-by-step", "text.ytick")) == 5  # 0..4 of G = 4
    gap = marks(d, "pass-rate-by-step", "g.gap")
    assert [(g.get_attribute("data-from"), g.get_attribute("data-to")) for g in gap] == [
        ("59", "400")
    ]
    svg = d.find_element(By.CSS_SELECTOR, chart).rect
    last = d.find_element(By.CSS_SELECTOR, f"{chart} rect.cell[data-from='400']").rect
    first = d.find_element(By.CSS_SELECTOR, f"{chart} rect.cell[data-from='0']").rect
    assert first["width"] > 2 and last["width"] > 2  # drawn, not hairlines
    assert last["x"] - first["x"] > 0.6 * svg["width"]  # the outlier does not squeeze the rest


def test_pages_in_chromium(
    browser: Any, site: tuple[str, Seeded, Seeded], routed: list[tuple[int, dict[str, Any]]]
) -> None:
    url, a, b = site
    d = browser
    d.get(url + "/admin/")
    assert d.find_element(By.CSS_SELECTOR, f"a[data-run='{a.run}']").is_displayed()
    shoot(d, "index")

    d.find_element(By.CSS_SELECTOR, f"a[data-run='{a.run}']").click()
    assert d.find_element(By.TAG_NAME, "h1").text == f"Run {a.run}"
    summary = api(url, f"/v1/runs/{a.run}/summary")
    dots = marks(d, "zero-variance-by-step", "circle")
    got = {int(c.get_attribute("data-step")): float(c.get_attribute("data-value")) for c in dots}
    want = {s["step"]: s["zero_variance_share"] for s in summary["zero_variance_by_step"]}
    assert got.keys() == want.keys()
    assert all(abs(got[k] - want[k]) < 1e-5 for k in want)
    gap = marks(d, "zero-variance-by-step", "g.gap")
    assert [(g.get_attribute("data-from"), g.get_attribute("data-to")) for g in gap] == [
        ("59", "400")
    ]
    xs = {int(c.get_attribute("data-step")): c.rect["x"] for c in dots}
    svg = d.find_element(By.CSS_SELECTOR, "svg[data-chart='zero-variance-by-step']").rect
    assert xs[59] - svg["x"] > 0.6 * svg["width"]  # the outlier does not squeeze steps 0..59
    assert svg["width"] >= 560  # two charts side by side at 1280 px, each readable
    bars = marks(d, "observed-pass-rate", "rect.bar")
    assert [int(x.get_attribute("data-count")) for x in bars] == [
        h["prompts"] for h in summary["pass_rate_histogram"]
    ]
    assert len(marks(d, "observed-pass-rate", "text.xtick")) == 10
    assert len(marks(d, "estimated-pass-rate", "text.ytick")) == 5
    check_heatmap(d, a, summary)
    assert d.find_element(By.ID, "saved-uniform").text.replace(",", "").lstrip("-").isdigit()
    shoot(d, "run")
    check_curation(d, url, a, routed)
    shoot(d, "run-profile")
    d.get(f"{url}/admin/runs/{a.run}")

    d.find_element(By.ID, "browse").click()
    rows = d.find_elements(By.CSS_SELECTOR, "table.prompts a[data-prompt]")
    assert len(rows) == 50
    shoot(d, "prompts")
    first = rows[0].get_attribute("data-prompt")
    rows[0].click()
    assert d.find_element(By.ID, "prompt-id").text == first
    history = api(url, f"/v1/runs/{a.run}/prompts/{first}")["history"]
    cells = d.find_elements(By.CSS_SELECTOR, "table.groups tr td:nth-child(2)")
    assert [c.text for c in cells] == [f"{h['successes']} of {h['n']}" for h in history]
    shoot(d, "prompt")
    d.find_element(By.ID, "back").click()
    assert d.current_url.rstrip("/") == f"{url}/admin/runs/{a.run}"

    d.get(f"{url}/admin/runs/{a.run}/prompts/p0")
    assert d.find_element(By.ID, "prompt-text").text == NASTY  # shown as text, not run
    assert d.execute_script("return window.pwned === undefined")
    assert not d.find_elements(By.CSS_SELECTOR, "#prompt-text b")

    d.get(f"{url}/admin/datasets/{a.dataset}?field=source")
    assert d.find_element(By.ID, "size").text == "60"
    shoot(d, "dataset")
    d.get(f"{url}/admin/compare?run={a.run}&run={b.run}")
    legend = [t.text for t in marks(d, "compare-zero-variance", "text.legend")]
    assert legend == [a.run, b.run]
    shoot(d, "compare")
    assert {p.name for p in SHOTS.glob("*.png")} >= {
        f"{n}.png"
        for n in ("index", "run", "run-profile", "prompts", "prompt", "dataset", "compare")
    }
