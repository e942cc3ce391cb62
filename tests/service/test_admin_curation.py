"""The run page's curation sections: profile by a field, export downloads, route shares."""

from __future__ import annotations

import argparse
import json
import re
from html import unescape
from urllib.parse import parse_qsl

import httpx
import pytest

from service.export import command
from tests.fixtures.admin_seed import seed
from tests.service.test_admin import Marks, chart

TIERS = [{"name": "small", "max_difficulty": 0.4}, {"name": "large", "max_difficulty": 0.9}]


def _bins(page: str, css: str) -> dict[str, list[int]]:
    """Rows of a bins table: first cell's text -> its cells' counts."""
    m = re.search(rf'<table class="{css} bins">.*?</table>', page, re.S)
    assert m is not None, css
    out = {}
    for row in re.findall(r"<tr><td>(.*?)</td>(.*?)</tr>", m.group(0), re.S):
        out[unescape(re.sub(r"<.*?>", "", row[0]))] = [
            int(c) for c in re.findall(r'data-count="(\d+)"', row[1])
        ]
    return out


async def test_run_page_profile_matches_the_api(client: httpx.AsyncClient, uid: str) -> None:
    s = await seed(client, uid, n=45)
    page = (await client.get(f"/admin/runs/{s.run}")).text
    assert '<h2 id="profile">' in page and 'data-field="source"' in page
    assert 'data-field="level"' in page and "profile-estimated" not in page  # only when asked
    page = (await client.get(f"/admin/runs/{s.run}", params={"by": "source"})).text
    api = (await client.get(f"/v1/runs/{s.run}/profile", params={"by": "source"})).json()
    est, obs = _bins(page, "profile-estimated"), _bins(page, "profile-observed")
    assert list(est) == [g["value"] for g in api["groups"]]
    for g in api["groups"]:
        assert est[g["value"]] == g["estimated"] and obs[g["value"]] == g["observed"]
    assert sum(map(sum, est.values())) == 45 and "<i>evil</i>" in est  # escaped, and counted
    assert "<i>evil</i>" not in page  # the markup in a value is shown, not run
    # a field no prompt has: said on the page, not an error page
    r = await client.get(f"/admin/runs/{s.run}", params={"by": "nope"})
    assert (
        r.status_code == 200 and 'id="profile-problem"' in r.text and "'nope'" in unescape(r.text)
    )


async def test_run_page_export_links_download(client: httpx.AsyncClient, uid: str) -> None:
    s = await seed(client, uid, n=30)
    page = (await client.get(f"/admin/runs/{s.run}")).text
    links = [unescape(a["href"]) for a, _ in Marks(page).find("a") if "data-export" in a]
    assert len(links) == 18 and {h.split("?")[0] for h in links} == {f"/admin/runs/{s.run}/export"}
    for href in links:
        got = await client.get(href)
        assert got.status_code == 200, (href, got.text)
        api = await client.get(href.replace(f"/admin/runs/{s.run}", f"/v1/runs/{s.run}"))
        if "parquet" not in href:
            assert got.text == api.text, href
    # each row's filters, as printed, are `depo export` options giving the same query
    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers())
    table = re.search(r'<table class="exports">.*?</table>', page, re.S)
    assert table is not None
    rows = re.findall(r"<tr><td>.*?</td><td>(.*?)</td><td><code>(.*?)</code></td></tr>", table[0])
    assert len(rows) == 6
    for cells, flags in rows:
        href = unescape(re.findall(r'href="([^"]+)"', cells)[0])
        args = parser.parse_args(["export", s.run, "-o", "x.jsonl", *unescape(flags).split()])
        assert command._params(args, "jsonl") == dict(parse_qsl(href.split("?")[1])), flags
    seen = [json.loads(x) for x in (await client.get(links[3])).text.splitlines()]
    assert links[3].endswith("format=jsonl&seen=true") and len(seen) == len(s.per_prompt)
    bad = await client.get(f"/admin/runs/{s.run}/export", params={"min_pass_rate": 2})
    assert bad.status_code == 422 and bad.json()["field"] == "min_pass_rate"
    ns = await client.get(f"/admin/runs/{s.run}/export", params={"ns": "default"})
    assert ns.status_code == 200


async def test_run_page_route_shares(client: httpx.AsyncClient, uid: str) -> None:
    s = await seed(client, uid, n=30)
    page = (await client.get(f"/admin/runs/{s.run}")).text
    assert 'id="no-routes"' in page
    url = f"/v1/runs/{s.run}/route"
    answers = []
    for step, ids in ((3, ["p1", "p2", "p3"]), (8, ["p4", "p28", "p29", "p5"])):
        body = {"prompt_ids": ids, "tiers": TIERS, "step": step}
        answers.append((step, (await client.post(url, json=body)).json()))
    page = (await client.get(f"/admin/runs/{s.run}")).text
    shares = chart(page, "route-shares")
    legend = [t for _, t in shares.find("text", "legend")]
    assert set(legend) <= {"small", "large", "unrouted"} and legend
    for i, name in enumerate(legend):
        got = {
            int(a["data-step"]): float(a["data-value"]) for a, _ in shares.find("circle", f"s{i}")
        }
        want = {}
        for step, a in answers:
            count = (
                a["unrouted"]
                if name == "unrouted"
                else next(t["count"] for t in a["tiers"] if t["name"] == name)
            )
            want[step] = count / len(a["items"])
        assert got == pytest.approx(want, rel=1e-5), name
    assert len(re.findall(r"<table class=\"routes\">.*?</table>", page, re.S)) == 1
