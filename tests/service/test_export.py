"""Export: every prompt with the estimate `/predict` gives it, filtered, in three formats."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from service.state import AppState

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "deepscaler_passrate_dev.jsonl"
N, TRAIN = 420, 300
FLOATS = ("pass_rate", "uncertainty", "p_informative", "prior")


def _problems(n: int) -> list[dict[str, Any]]:
    if not DATA.exists():
        pytest.fail(f"labelled data missing at {DATA}")
    with DATA.open() as f:
        return [json.loads(next(f)) for _ in range(n)]


async def _setup(client: httpx.AsyncClient, state: AppState, uid: str) -> tuple[str, list[str]]:
    """A fitted run: 300 prompts seen (some twice, at two steps), 120 never seen."""
    rows = _problems(N)
    ds, run = f"ds-{uid}", f"run-{uid}"
    await client.post("/v1/datasets", json={"name": ds, "embedder": "hashing"})
    prompts = [
        {"id": p["id"], "text": p["problem"], "metadata": {"k": i % 3}} for i, p in enumerate(rows)
    ]
    assert (await client.post(f"/v1/datasets/{ds}/prompts", json={"prompts": prompts})).is_success
    await state.jobs.idle()
    sel = {"fit_min_outcomes": 50, "refit_every": 100_000}
    body = {"name": run, "dataset": ds, "group_size": 8, "selection": sel}
    assert (await client.post("/v1/runs", json=body)).status_code == 201
    rng = np.random.default_rng(3)
    for step, part in ((0, rows[:TRAIN]), (5, rows[:40])):
        results = [
            {
                "prompt_id": p["id"],
                "rewards": (rng.random(8) < p["pass_rate"]).astype(float).tolist(),
            }
            for p in part
        ]
        r = await client.post(f"/v1/runs/{run}/outcomes", json={"step": step, "results": results})
        assert r.status_code == 200, r.text
        await state.jobs.idle()
    return run, [p["id"] for p in rows]


async def _export(client: httpx.AsyncClient, run: str, **params: Any) -> httpx.Response:
    r = await client.get(f"/v1/runs/{run}/export", params=params)
    assert r.status_code == 200, r.text
    return r


def _jsonl(r: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in r.text.splitlines()]


async def test_export_rows_equal_predict(
    client: httpx.AsyncClient, state: AppState, uid: str
) -> None:
    run, ids = await _setup(client, state, uid)
    r = await _export(client, run, chunk=100)  # five chunks
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert r.headers["x-depo-prompts"] == str(N)
    rows = _jsonl(r)
    assert [x["id"] for x in rows] == ids and [x["idx"] for x in rows] == list(range(N))
    pred = (await client.post(f"/v1/runs/{run}/predict", json={"prompt_ids": ids})).json()
    assert pred["model_version"] is not None
    assert int(r.headers["x-depo-model-version"]) == pred["model_version"]
    for row, p in zip(rows, pred["items"], strict=True):
        for key in FLOATS:
            assert row[key] == pytest.approx(p[key], rel=1e-12, abs=1e-15), (row["id"], key)
        assert row["observations"] == p["observations"]
        assert row["model_version"] == p["model_version"]
    # the counts are the prompt stats' own
    for row in rows[35:45] + rows[-3:]:
        s = (await client.get(f"/v1/runs/{run}/prompts/{row['id']}")).json()
        assert (row["rollouts"], row["successes"], row["last_step"]) == (
            s["rollouts"],
            s["successes"],
            s["last_step"],
        )
        assert row["observed_pass_rate"] == s["observed_pass_rate"]
    assert [x["observations"] for x in rows[:40]] == [2] * 40
    assert {x["last_step"] for x in rows[40:TRAIN]} == {0}
    assert {x["last_step"] for x in rows[TRAIN:]} == {None}
    assert rows[7]["metadata"] == {"k": 1} and "text" not in rows[7]

    # CSV and Parquet carry the same rows
    as_csv = list(csv.DictReader(io.StringIO((await _export(client, run, format="csv")).text)))
    table = pq.read_table(io.BytesIO((await _export(client, run, format="parquet")).content))
    as_pq = table.to_pylist()
    assert len(as_csv) == len(as_pq) == N
    for row, c, q in zip(rows, as_csv, as_pq, strict=True):
        assert c["id"] == q["id"] == row["id"]
        for key in FLOATS:
            assert float(c[key]) == pytest.approx(row[key], rel=1e-12)
            assert q[key] == row[key]
        assert q["last_step"] == row["last_step"]
        assert (c["last_step"] or None) == (
            None if row["last_step"] is None else str(row["last_step"])
        )
        assert json.loads(c["metadata"]) == json.loads(q["metadata"]) == row["metadata"]


async def test_export_filters_and_order(
    client: httpx.AsyncClient, state: AppState, uid: str
) -> None:
    run, _ = await _setup(client, state, uid)
    every = _jsonl(await _export(client, run, include_text=True, include_metadata=False))
    assert all("text" in x and "metadata" not in x for x in every)

    def picked(**params: Any) -> Any:
        return _export(client, run, chunk=100, **params)

    band = _jsonl(await picked(min_pass_rate=0.2, max_pass_rate=0.6))
    assert [x["id"] for x in band] == [x["id"] for x in every if 0.2 <= x["pass_rate"] <= 0.6]
    assert 0 < len(band) < N
    mixed = _jsonl(await picked(min_p_informative=0.5))
    assert [x["id"] for x in mixed] == [x["id"] for x in every if x["p_informative"] >= 0.5]
    seen = _jsonl(await picked(seen="true"))
    unseen = _jsonl(await picked(seen="false"))
    assert len(seen) == TRAIN and len(unseen) == N - TRAIN
    assert all(x["observations"] > 0 for x in seen) and all(x["observations"] == 0 for x in unseen)
    first = _jsonl(await picked(limit=7, seen="false"))
    assert [x["id"] for x in first] == [x["id"] for x in unseen[:7]]
    top = _jsonl(await picked(limit=25, order_by="p_informative", descending="true"))
    ranked = sorted(every, key=lambda x: (-x["p_informative"], x["idx"]))[:25]
    assert [x["id"] for x in top] == [x["id"] for x in ranked]
    easy = _jsonl(await picked(limit=10, order_by="pass_rate", seen="false"))
    ranked = sorted((x for x in every if x["observations"] == 0), key=lambda x: x["pass_rate"])
    assert [x["id"] for x in easy] == [x["id"] for x in ranked[:10]]
    assert _jsonl(await picked(min_pass_rate=1.0)) == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"min_pass_rate": 0.8, "max_pass_rate": 0.2}, "min_pass_rate"),
        ({"min_pass_rate": 1.5}, "min_pass_rate"),
        ({"max_pass_rate": -0.1}, "max_pass_rate"),
        ({"min_p_informative": "lots"}, "min_p_informative"),
        ({"format": "xml"}, "format"),
        ({"seen": "maybe"}, "seen"),
        ({"limit": 0}, "limit"),
        ({"order_by": "p_informative"}, "limit"),
        ({"order_by": "pass_rate", "limit": 2_000_000}, "limit"),
        ({"order_by": "text", "limit": 5}, "order_by"),
        ({"chunk": 10}, "chunk"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_export_bad_filters(
    client: httpx.AsyncClient, uid: str, params: dict[str, Any], field: str
) -> None:
    ds, run = f"ds-{uid}", f"run-{uid}"
    await client.post("/v1/datasets", json={"name": ds})
    await client.post("/v1/runs", json={"name": run, "dataset": ds, "group_size": 4})
    r = await client.get(f"/v1/runs/{run}/export", params=params)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field, r.json()
    assert (await client.get(f"/v1/runs/nope-{uid}/export")).status_code == 404
    empty = await client.get(f"/v1/runs/{run}/export")
    assert empty.status_code == 200 and empty.text == ""
