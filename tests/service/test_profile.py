"""Profile: the export's rows binned, overall and per metadata value, in one JSON answer."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import httpx
import numpy as np
import pytest

from service.state import AppState
from tests.service.test_export import TRAIN, N, _setup


def _binned(rows: list[dict[str, Any]], bins: int, value: str | None) -> dict[str, Any]:
    """What the profile of these export rows must say, computed from the rows alone."""
    est = [0] * bins
    obs = [0] * bins
    for x in rows:
        est[min(int(x["pass_rate"] * bins), bins - 1)] += 1
        if x["rollouts"]:
            obs[min(x["successes"] * bins // x["rollouts"], bins - 1)] += 1
    seen = [x for x in rows if x["observations"] > 0]
    rollouts = sum(x["rollouts"] for x in seen)
    return {
        "value": value,
        "prompts": len(rows),
        "seen": len(seen),
        "mean_pass_rate": pytest.approx(np.mean([x["pass_rate"] for x in rows]), rel=1e-9),
        "mean_p_mixed": pytest.approx(np.mean([x["p_informative"] for x in rows]), rel=1e-9),
        "observed_pass_rate": pytest.approx(sum(x["successes"] for x in seen) / rollouts)
        if rollouts
        else None,
        "estimated": est,
        "observed": obs,
    }


async def _rows(client: httpx.AsyncClient, run: str) -> tuple[list[dict[str, Any]], httpx.Response]:
    r = await client.get(f"/v1/runs/{run}/export")
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines()], r


async def test_profile_is_the_export_binned(
    client: httpx.AsyncClient, state: AppState, uid: str
) -> None:
    run, _ = await _setup(client, state, uid)
    rows, exported = await _rows(client, run)
    for bins in (10, 7):
        r = await client.get(f"/v1/runs/{run}/profile", params={"bins": bins, "chunk": 100})
        assert r.status_code == 200, r.text
        p = r.json()
        assert p["model_version"] == int(exported.headers["x-depo-model-version"])
        assert p["step"] == int(exported.headers["x-depo-step"])
        assert p["edges"] == pytest.approx([i / bins for i in range(bins + 1)])
        assert p["overall"] == _binned(rows, bins, None)
        assert p["overall"]["prompts"] == N and p["overall"]["seen"] == TRAIN
        assert sum(p["overall"]["observed"]) == TRAIN
        assert p["groups"] == [] and p["other"] is None and p["missing"] is None
        # the observed rates land on bin edges (k of 8 or 16 rollouts): binned exactly
        assert sum(p["overall"]["observed"][::2]) and sum(p["overall"]["observed"][1::2])


async def test_profile_by_field(client: httpx.AsyncClient, state: AppState, uid: str) -> None:
    run, _ = await _setup(client, state, uid)
    rows, _ = await _rows(client, run)
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for x in rows:
        by[json.dumps(x["metadata"]["k"])].append(x)
    r = await client.get(f"/v1/runs/{run}/profile", params={"by": "k", "chunk": 100})
    assert r.status_code == 200, r.text
    p = r.json()
    ranked = sorted(by, key=lambda v: (-len(by[v]), v))
    assert [g["value"] for g in p["groups"]] == ranked == ["0", "1", "2"]
    for g in p["groups"]:
        assert g == _binned(by[g["value"]], 10, g["value"])
    assert p["overall"] == _binned(rows, 10, None)
    assert p["other"] is None and p["missing"] is None and p["values"] == 3
    # capped: the top two values, the third summed into `other`
    capped = (
        await client.get(f"/v1/runs/{run}/profile", params={"by": "k", "max_groups": 2})
    ).json()
    assert [g["value"] for g in capped["groups"]] == ranked[:2]
    assert capped["other"] == _binned(by[ranked[2]], 10, None)
    # a field no prompt has names `by`; a bad bin count names `bins`
    for params, field in (({"by": "nope"}, "by"), ({"bins": 0}, "bins"), ({"x": 1}, "x")):
        bad = await client.get(f"/v1/runs/{run}/profile", params=params)
        assert bad.status_code == 422 and bad.json()["field"] == field, bad.text
    assert (await client.get(f"/v1/runs/nope-{uid}/profile")).status_code == 404


async def test_profile_of_mixed_metadata(client: httpx.AsyncClient, uid: str) -> None:
    """Prompts without the field are `missing`; values of any JSON type are grouped by their
    text, so 1 and "1" are one group."""
    ds, run = f"ds-{uid}", f"run-{uid}"
    await client.post("/v1/datasets", json={"name": ds})
    metas: list[Any] = [{"level": 1}, {"level": "1"}, {"level": True}, {"level": None}, {}, None]
    prompts = [
        {"id": f"p{i}", "text": f"q{i}", **({"metadata": m} if m is not None else {})}
        for i, m in enumerate(metas * 3)
    ]
    assert (await client.post(f"/v1/datasets/{ds}/prompts", json={"prompts": prompts})).is_success
    await client.post("/v1/runs", json={"name": run, "dataset": ds, "group_size": 4})
    p = (await client.get(f"/v1/runs/{run}/profile", params={"by": "level"})).json()
    assert [(g["value"], g["prompts"]) for g in p["groups"]] == [("1", 6), ("null", 3), ("true", 3)]
    assert all(g["seen"] == 0 for g in p["groups"])
    assert p["missing"]["prompts"] == 6 and p["overall"]["prompts"] == 18
    assert p["overall"]["observed"] == [0] * 10 and p["overall"]["observed_pass_rate"] is None
    empty = f"empty-{uid}"
    await client.post("/v1/datasets", json={"name": empty})
    await client.post("/v1/runs", json={"name": empty, "dataset": empty, "group_size": 4})
    p = (await client.get(f"/v1/runs/{empty}/profile", params={"by": "level"})).json()
    assert p["overall"]["prompts"] == 0 and p["overall"]["mean_pass_rate"] is None
