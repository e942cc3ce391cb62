"""Known difficulty at upload: stored, validated, the prior before any fit, then weighed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from scipy.stats import spearmanr

from service.state import AppState
from tests.fixtures.api import make_run

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "deepscaler_passrate_dev.jsonl"


async def _upload(client: httpx.AsyncClient, ds: str, prompts: list[dict[str, Any]]) -> Any:
    return await client.post(f"/v1/datasets/{ds}/prompts", json={"prompts": prompts})


async def test_upload_stores_updates_and_shows_the_label(
    client: httpx.AsyncClient, uid: str
) -> None:
    ds = f"ds-{uid}"
    assert (await client.post("/v1/datasets", json={"name": ds})).status_code == 201
    r = await _upload(
        client,
        ds,
        [
            {"id": "a", "text": "Compute 1 + 1.", "prior_pass_rate": 0.75},
            {"id": "b", "text": "Compute 2 + 2.", "prior_pass_rate": 1},
            {"id": "c", "text": "Compute 3 + 3."},
        ],
    )
    assert r.json()["inserted"] == 3, r.text
    got = (await client.get(f"/v1/datasets/{ds}/prompts/a")).json()
    assert got["prior_pass_rate"] == 0.75
    assert (await client.get(f"/v1/datasets/{ds}/prompts/c")).json()["prior_pass_rate"] is None
    info = (await client.get(f"/v1/datasets/{ds}")).json()
    assert info["labelled"] == 2 and info["difficulty_field"] is None
    # the same label is unchanged; another label, or none, rewrites the prompt
    same = await _upload(
        client, ds, [{"id": "a", "text": "Compute 1 + 1.", "prior_pass_rate": 0.75}]
    )
    assert (same.json()["unchanged"], same.json()["updated"]) == (1, 0)
    other = await _upload(
        client, ds, [{"id": "a", "text": "Compute 1 + 1.", "prior_pass_rate": 0.2}]
    )
    assert other.json()["updated"] == 1
    assert (await client.get(f"/v1/datasets/{ds}/prompts/a")).json()["prior_pass_rate"] == 0.2
    gone = await _upload(client, ds, [{"id": "b", "text": "Compute 2 + 2."}])
    assert gone.json()["updated"] == 1
    assert (await client.get(f"/v1/datasets/{ds}/prompts/b")).json()["prior_pass_rate"] is None
    assert (await client.get(f"/v1/datasets/{ds}")).json()["labelled"] == 1
    page = (await client.get(f"/admin/datasets/{ds}")).text
    assert "Known difficulty: 1 prompts labelled, from prior_pass_rate" in page


@pytest.mark.parametrize("bad", [1.5, -0.1, "0.5", True, None])
async def test_a_bad_label_is_a_422_naming_it(
    client: httpx.AsyncClient, uid: str, bad: Any
) -> None:
    ds = f"ds-{uid}"
    await client.post("/v1/datasets", json={"name": ds})
    prompts = [{"id": "ok", "text": "fine", "prior_pass_rate": 0.5}, {"id": "x", "text": "y"}]
    if bad is None:  # JSON has no NaN; Python's parser takes it, the schema must not
        body = json.dumps({"prompts": prompts}).replace('"y"}', '"y", "prior_pass_rate": NaN}')
        r = await client.post(
            f"/v1/datasets/{ds}/prompts",
            content=body,
            headers={"content-type": "application/json"},
        )
    else:
        prompts[1]["prior_pass_rate"] = bad
        r = await _upload(client, ds, prompts)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "prompts.1.prior_pass_rate"
    assert (await client.get(f"/v1/datasets/{ds}")).json()["prompt_count"] == 0


async def test_difficulty_field_maps_metadata_and_is_checked(
    client: httpx.AsyncClient, uid: str
) -> None:
    ds = f"ds-{uid}"
    spec = {"name": "level", "easiest": 1, "hardest": 5}
    r = await client.post("/v1/datasets", json={"name": ds, "difficulty_field": spec})
    assert r.status_code == 201 and r.json()["difficulty_field"] == spec
    again = await client.post("/v1/datasets", json={"name": ds})
    assert again.status_code == 200
    other = {"name": "level", "easiest": 5, "hardest": 1}
    clash = await client.post("/v1/datasets", json={"name": ds, "difficulty_field": other})
    assert clash.status_code == 409 and clash.json()["field"] == "difficulty_field"
    flat = await client.post(
        "/v1/datasets",
        json={"name": f"x-{uid}", "difficulty_field": {"name": "l", "easiest": 2, "hardest": 2}},
    )
    assert flat.status_code == 422 and flat.json()["field"].startswith("difficulty_field")
    nul = await client.post(
        "/v1/datasets",
        json={
            "name": f"y-{uid}",
            "difficulty_field": {"name": "a\u0000", "easiest": 1, "hardest": 2},
        },
    )
    assert nul.status_code == 422 and nul.json()["field"].startswith("difficulty_field.name")
    wrong = await _upload(
        client,
        ds,
        [
            {"id": "p1", "text": "t1", "metadata": {"level": 1}},
            {"id": "p2", "text": "t2", "metadata": {"level": "Level 5"}},
        ],
    )
    assert wrong.status_code == 422 and wrong.json()["field"] == "prompts.1.metadata.level"
    assert (await client.get(f"/v1/datasets/{ds}")).json()["prompt_count"] == 0
    ok = await _upload(
        client,
        ds,
        [
            {"id": "p1", "text": "t1", "metadata": {"level": 1}},
            {"id": "p3", "text": "t3", "metadata": {"level": 3.0}},
            {"id": "p5", "text": "t5", "metadata": {"level": 7}},  # beyond the hardest end
            {"id": "own", "text": "t", "metadata": {"level": 5}, "prior_pass_rate": 0.6},
            {"id": "none", "text": "t0", "metadata": {"type": "Algebra"}},
        ],
    )
    assert ok.status_code == 200, ok.text
    want = {"p1": 0.9, "p3": 0.5, "p5": 0.1, "own": 0.6, "none": None}
    for pid, rate in want.items():
        got = (await client.get(f"/v1/datasets/{ds}/prompts/{pid}")).json()["prior_pass_rate"]
        assert got == (None if rate is None else pytest.approx(rate)), pid
    # a new level for a prompt is a new label: the upload reports it updated
    moved = await _upload(client, ds, [{"id": "p1", "text": "t1", "metadata": {"level": 5}}])
    assert moved.json()["updated"] == 1
    got = (await client.get(f"/v1/datasets/{ds}/prompts/p1")).json()["prior_pass_rate"]
    assert got == pytest.approx(0.1)
    page = (await client.get(f"/admin/datasets/{ds}")).text
    assert "Known difficulty: 4 prompts labelled, from metadata level (1 easiest" in page


async def test_predict_reads_the_label_before_any_fit(
    client: httpx.AsyncClient, state: AppState, uid: str
) -> None:
    ds = f"ds-{uid}"
    await client.post("/v1/datasets", json={"name": ds})
    await _upload(
        client,
        ds,
        [
            {"id": "easy", "text": "Compute 1 + 1.", "prior_pass_rate": 0.9},
            {"id": "hard", "text": "Compute 2 + 2.", "prior_pass_rate": 0.1},
            {"id": "plain", "text": "Compute 3 + 3."},
        ],
    )
    run = f"run-{uid}"
    await make_run(client, run, ds)
    r = await client.post(f"/v1/runs/{run}/predict", json={"prompt_ids": ["easy", "hard", "plain"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] is None
    rates = {i["id"]: i["pass_rate"] for i in body["items"]}
    assert rates["easy"] == pytest.approx(0.9) and rates["hard"] == pytest.approx(0.1)
    assert rates["plain"] == pytest.approx(0.5)  # the run's flat Beta(1, 1)
    # a relabelled prompt is read again at once (the process cache follows label_rev)
    await _upload(client, ds, [{"id": "hard", "text": "Compute 2 + 2.", "prior_pass_rate": 0.7}])
    r = await client.post(f"/v1/runs/{run}/predict", json={"prompt_ids": ["hard"]})
    assert r.json()["items"][0]["pass_rate"] == pytest.approx(0.7)


def _problems(n: int) -> list[dict[str, Any]]:
    if not DATA.exists():
        pytest.fail(f"labelled data missing at {DATA}")
    rows = [json.loads(line) for line in DATA.read_text().splitlines()[:4000]]
    rng = np.random.default_rng(3)
    return [rows[i] for i in rng.permutation(len(rows))[:n]]


async def _labelled_fit(
    client: httpx.AsyncClient,
    state: AppState,
    name: str,
    rows: list[dict[str, Any]],
    labels: np.ndarray,
    train: int,
) -> tuple[dict[str, Any], np.ndarray]:
    """Fit on `train` prompts' outcomes; the newest calibration and the rest's estimates."""
    await client.post("/v1/datasets", json={"name": name, "embedder": "hashing"})
    prompts = [
        {"id": p["id"], "text": p["problem"], "prior_pass_rate": float(q)}
        for p, q in zip(rows, labels, strict=True)
    ]
    assert (await _upload(client, name, prompts)).status_code == 200
    await state.jobs.idle()
    await make_run(client, name, name, selection={"fit_min_outcomes": 50, "refit_every": 100_000})
    rng = np.random.default_rng(1)
    results = [
        {"prompt_id": p["id"], "rewards": (rng.random(8) < p["pass_rate"]).astype(float).tolist()}
        for p in rows[:train]
    ]
    await client.post(f"/v1/runs/{name}/outcomes", json={"step": 0, "results": results})
    await state.jobs.idle()
    info = (await client.get(f"/v1/runs/{name}/predictor")).json()
    assert info["version"] == 1, info
    r = await client.post(
        f"/v1/runs/{name}/predict", json={"prompt_ids": [p["id"] for p in rows[train:]]}
    )
    return info["calibration"], np.array([i["pass_rate"] for i in r.json()["items"]])


async def test_the_fit_learns_how_far_to_trust_the_label(
    client: httpx.AsyncClient, state: AppState, uid: str
) -> None:
    """A true label keeps its weight; a shuffled one loses it and stops ranking unseen prompts."""
    rows = _problems(900)
    truth = np.array([p["pass_rate"] for p in rows])
    shuffled = np.random.default_rng(7).permutation(truth)
    train = 700
    good, pred_good = await _labelled_fit(client, state, f"good-{uid}", rows, truth, train)
    bad, pred_bad = await _labelled_fit(client, state, f"bad-{uid}", rows, shuffled, train)
    assert good["labelled_prompts"] == bad["labelled_prompts"] == 900
    assert good["label_weight"] > 0.5, good
    assert abs(bad["label_weight"]) < 0.25, bad
    # unseen prompts: ranked by the true label; the shuffled one barely moves them (a rank test
    # would not do: with the label's weight at 0.05, the rest of the estimate can be flatter still)
    assert spearmanr(pred_good, truth[train:]).statistic > 0.6
    slope_good = np.polyfit(truth[train:], pred_good, 1)[0]
    slope_bad = np.polyfit(shuffled[train:], pred_bad, 1)[0]
    assert slope_bad < 0.25 * slope_good, (slope_bad, slope_good)
    page = (await client.get(f"/admin/runs/bad-{uid}")).text
    assert "<td>label_weight</td>" in page
