"""Every bad input gets a 4xx JSON body naming the problem, and writes nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import Request

from service.app import create_app
from service.config import Settings
from service.datasets import service as datasets_service
from service.datasets.schemas import DatasetCreate
from service.deps import SessionDep
from service.scope import OPEN
from tests.fixtures.api import make_dataset, make_run


async def _setup(client: httpx.AsyncClient, uid: str) -> tuple[str, str, dict[str, Any]]:
    await make_dataset(client, f"ds-{uid}", 20)
    await make_run(client, f"run-{uid}", f"ds-{uid}", group_size=4)
    r = await client.post(f"/v1/runs/run-{uid}/batches", json={"step": 0, "size": 4})
    return f"ds-{uid}", f"run-{uid}", r.json()


async def _counts(client: httpx.AsyncClient, run: str) -> tuple[int, int]:
    body = (await client.get(f"/v1/runs/{run}")).json()
    return body["outcomes"], body["rollouts"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/datasets/nope", 404),
        ("/v1/datasets/nope/prompts/x", 404),
        ("/v1/runs/nope", 404),
        ("/v1/runs/nope/summary", 404),
    ],
)
async def test_unknown_names_are_404(client: httpx.AsyncClient, path: str, status: int) -> None:
    r = await client.get(path)
    assert r.status_code == status
    assert r.json()["type"] == "not_found"


async def test_unknown_prompt_in_known_run_is_404(client: httpx.AsyncClient, uid: str) -> None:
    _, run, _ = await _setup(client, uid)
    r = await client.get(f"/v1/runs/{run}/prompts/missing")
    assert r.status_code == 404 and "missing" in r.json()["detail"]


BAD_OUTCOMES: list[tuple[str, Any, str]] = [
    (
        "empty rewards",
        {"step": 1, "results": [{"prompt_id": "p0", "rewards": []}]},
        "results.0.rewards",
    ),
    (
        "too many rewards",
        {"step": 1, "results": [{"prompt_id": "p0", "rewards": [1.0] * 1025}]},
        "results.0.rewards",
    ),
    ("negative step", {"step": -1, "results": [{"prompt_id": "p0", "rewards": [1.0]}]}, "step"),
    ("missing results", {"step": 1}, "results"),
    (
        "huge rewards",
        {"step": 1, "results": [{"prompt_id": "p0", "rewards": [1e200, -1e200]}]},
        "results.0.rewards.0",
    ),
    (
        "reward not a number",
        {"step": 1, "results": [{"prompt_id": "p0", "rewards": ["x"]}]},
        "results.0.rewards.0",
    ),
    (
        "unknown field",
        {"step": 1, "results": [{"prompt_id": "p0", "rewards": [1], "bogus": 1}]},
        "results.0.bogus",
    ),
]


@pytest.mark.parametrize(("case", "body", "field"), BAD_OUTCOMES, ids=[c[0] for c in BAD_OUTCOMES])
async def test_bad_outcome_bodies_are_422_and_write_nothing(
    client: httpx.AsyncClient, uid: str, case: str, body: Any, field: str
) -> None:
    _, run, _ = await _setup(client, uid)
    # a good result in the same request must not be written either
    if "results" in body:
        body["results"].append({"prompt_id": "p1", "rewards": [1.0, 0.0]})
    r = await client.post(f"/v1/runs/{run}/outcomes", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["field"].startswith(field), r.json()
    assert await _counts(client, run) == (0, 0)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
async def test_non_finite_rewards_are_422(
    client: httpx.AsyncClient, uid: str, literal: str
) -> None:
    _, run, _ = await _setup(client, uid)
    raw = f'{{"step": 1, "results": [{{"prompt_id": "p1", "rewards": [1.0, 0.0]}}, {{"prompt_id": "p0", "rewards": [1.0, {literal}]}}]}}'
    r = await client.post(
        f"/v1/runs/{run}/outcomes", content=raw, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "results.1.rewards.1"
    assert await _counts(client, run) == (0, 0)


async def test_prompt_not_in_dataset_is_422_and_writes_nothing(
    client: httpx.AsyncClient, uid: str
) -> None:
    _, run, _ = await _setup(client, uid)
    body = {
        "step": 1,
        "results": [{"prompt_id": "p1", "rewards": [1, 0]}, {"prompt_id": "ghost", "rewards": [1]}],
    }
    r = await client.post(f"/v1/runs/{run}/outcomes", json=body)
    assert r.status_code == 422
    assert r.json()["missing"] == ["ghost"]
    assert await _counts(client, run) == (0, 0)


async def test_batch_of_another_run_is_422(client: httpx.AsyncClient, uid: str) -> None:
    ds, _run, batch = await _setup(client, uid)
    await make_run(client, f"other-{uid}", ds, group_size=4)
    body = {
        "step": 0,
        "batch_id": batch["batch_id"],
        "results": [{"prompt_id": "p1", "rewards": [1, 0]}],
    }
    r = await client.post(f"/v1/runs/other-{uid}/outcomes", json=body)
    assert r.status_code == 422 and r.json()["field"] == "batch_id"


async def test_malformed_json_is_422(client: httpx.AsyncClient, uid: str) -> None:
    _, run, _ = await _setup(client, uid)
    r = await client.post(
        f"/v1/runs/{run}/outcomes",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422
    assert r.json()["type"] == "validation_error"


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({"step": -1, "size": 2}, "step", 422),
        ({"step": 1, "size": -2}, "size", 422),
        ({"step": 1, "size": 0}, "size", 422),
        ({"step": 1, "size": 21}, "size", 422),
        ({"step": 1, "size": 2, "strategy": "magic"}, "strategy", 422),
    ],
)
async def test_bad_batch_requests(
    client: httpx.AsyncClient, uid: str, body: Any, field: str, status: int
) -> None:
    _, run, _ = await _setup(client, uid)
    r = await client.post(f"/v1/runs/{run}/batches", json=body)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field
    assert (await client.get(f"/v1/runs/{run}")).json()["batches_served"] == 1


async def test_too_many_prompts_is_413_and_writes_nothing(
    client: httpx.AsyncClient, uid: str
) -> None:
    await client.post("/v1/datasets", json={"name": f"big-{uid}"})
    prompts = [{"id": str(i), "text": "x"} for i in range(10_001)]
    r = await client.post(f"/v1/datasets/big-{uid}/prompts", json={"prompts": prompts})
    assert r.status_code == 413
    assert r.json()["type"] == "payload_too_large"
    assert (await client.get(f"/v1/datasets/big-{uid}")).json()["prompt_count"] == 0


async def test_body_over_byte_limit_is_413(client: httpx.AsyncClient, uid: str) -> None:
    r = await client.post(
        f"/v1/datasets/x-{uid}/prompts",
        content=b"0",
        headers={"content-type": "application/json", "content-length": str(10**10)},
    )
    assert r.status_code == 413


SMALL_BODY_LIMIT = 4096


class _Chunks:
    """A chunked request body (no Content-Length) that counts how much of it was read."""

    def __init__(self, data: bytes, size: int = 256) -> None:
        self.parts = [data[i : i + size] for i in range(0, len(data), size)]
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            self.sent += len(part)
            yield part


def _upload(n: int, text: str = "x" * 100) -> bytes:
    return json.dumps({"prompts": [{"id": str(i), "text": text} for i in range(n)]}).encode()


@pytest.fixture
async def small_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The service with a 4 KiB body limit on the session's store, plus a route that writes
    in its transaction and only then reads its body as a stream."""
    app = create_app(settings.model_copy(update={"max_body_bytes": SMALL_BODY_LIMIT}))

    async def write_then_stream(name: str, request: Request, session: SessionDep) -> int:
        await datasets_service.create(session, OPEN, DatasetCreate(name=name))
        return sum([len(chunk) async for chunk in request.stream()])

    app.add_api_route("/test/write-then-stream", write_then_stream, methods=["POST"])
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://depo.test") as c:
            yield c
        # let embedding finish: a job cancelled mid-write could hold SQLite's lock
        await app.state.depo.jobs.idle()


def _assert_too_large(r: httpx.Response) -> None:
    assert r.status_code == 413, r.text
    body = r.json()
    assert body["type"] == "payload_too_large", body
    assert str(SMALL_BODY_LIMIT) in body["detail"], body


async def test_chunked_body_over_byte_limit_is_413_and_writes_nothing(
    small_client: httpx.AsyncClient, uid: str
) -> None:
    await small_client.post("/v1/datasets", json={"name": f"chunked-{uid}"})
    body = _Chunks(_upload(200))
    assert len(b"".join(body.parts)) > 5 * SMALL_BODY_LIMIT
    r = await small_client.post(
        f"/v1/datasets/chunked-{uid}/prompts",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in r.request.headers
    _assert_too_large(r)
    # reading stopped at the chunk that crossed the limit
    assert body.sent <= SMALL_BODY_LIMIT + 256
    assert (await small_client.get(f"/v1/datasets/chunked-{uid}")).json()["prompt_count"] == 0


async def test_body_longer_than_its_content_length_is_413_and_writes_nothing(
    small_client: httpx.AsyncClient, uid: str
) -> None:
    await small_client.post("/v1/datasets", json={"name": f"liar-{uid}"})
    r = await small_client.post(
        f"/v1/datasets/liar-{uid}/prompts",
        content=_upload(200),
        headers={"content-type": "application/json", "content-length": "100"},
    )
    _assert_too_large(r)
    assert (await small_client.get(f"/v1/datasets/liar-{uid}")).json()["prompt_count"] == 0


async def test_chunked_body_under_byte_limit_is_accepted(
    small_client: httpx.AsyncClient, uid: str
) -> None:
    await small_client.post("/v1/datasets", json={"name": f"small-{uid}"})
    data = _upload(20)
    assert len(data) < SMALL_BODY_LIMIT
    r = await small_client.post(
        f"/v1/datasets/small-{uid}/prompts",
        content=_Chunks(data, size=100),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["inserted"] == 20
    assert (await small_client.get(f"/v1/datasets/small-{uid}")).json()["prompt_count"] == 20


async def test_limit_tripping_while_the_endpoint_reads_is_413_and_rolls_back(
    small_client: httpx.AsyncClient, uid: str
) -> None:
    r = await small_client.post(
        "/test/write-then-stream", params={"name": f"half-{uid}"}, content=_Chunks(b"x" * 200)
    )
    assert r.status_code == 200 and r.json() == 200
    r = await small_client.post(
        "/test/write-then-stream",
        params={"name": f"over-{uid}"},
        content=_Chunks(b"x" * (3 * SMALL_BODY_LIMIT)),
    )
    _assert_too_large(r)
    assert (await small_client.get(f"/v1/datasets/half-{uid}")).status_code == 200
    assert (await small_client.get(f"/v1/datasets/over-{uid}")).status_code == 404


async def test_duplicate_ids_in_one_upload_are_422(client: httpx.AsyncClient, uid: str) -> None:
    await client.post("/v1/datasets", json={"name": f"dup-{uid}"})
    prompts = [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]
    r = await client.post(f"/v1/datasets/dup-{uid}/prompts", json={"prompts": prompts})
    assert r.status_code == 422 and r.json()["field"] == "prompts.1.id"
    assert (await client.get(f"/v1/datasets/dup-{uid}")).json()["prompt_count"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {"name": "bad name with spaces"},
        {"name": "x", "embedder": "word2vec"},
        {"name": ""},
    ],
)
async def test_bad_dataset_bodies(client: httpx.AsyncClient, body: Any) -> None:
    r = await client.post("/v1/datasets", json=body)
    assert r.status_code == 422
    assert json.loads(r.text)["detail"]


async def test_bad_run_bodies(client: httpx.AsyncClient, uid: str) -> None:
    await make_dataset(client, f"ds-{uid}", 3)
    r = await client.post(
        "/v1/runs", json={"name": f"r-{uid}", "dataset": f"ds-{uid}", "group_size": 0}
    )
    assert r.status_code == 422 and r.json()["field"] == "group_size"
    r = await client.post(
        "/v1/runs", json={"name": f"r-{uid}", "dataset": "missing", "group_size": 8}
    )
    assert r.status_code == 404
    r = await client.post(
        "/v1/runs",
        json={
            "name": f"r-{uid}",
            "dataset": f"ds-{uid}",
            "group_size": 8,
            "selection": {"discount": 2},
        },
    )
    assert r.status_code == 422 and r.json()["field"] == "selection.discount"


async def test_lone_surrogate_is_422_with_a_json_body(client: httpx.AsyncClient, uid: str) -> None:
    await client.post("/v1/datasets", json={"name": f"s-{uid}"})
    raw = b'{"prompts": [{"id": "x", "text": "bad \\ud800 text"}]}'
    r = await client.post(
        f"/v1/datasets/s-{uid}/prompts",
        content=raw,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["field"] == "prompts.0.text"
    assert (await client.get(f"/v1/datasets/s-{uid}")).json()["prompt_count"] == 0


@pytest.mark.parametrize(
    ("selection", "group_size", "field"),
    [
        ({"window_lo": 0.9, "window_hi": 0.1}, 8, "selection"),
        ({"n_min": 10, "n_max": 4}, 8, "selection"),
        ({"budget": True, "n_min": 12}, 8, "body"),
        ({"prior_alpha": 1e-300}, 8, "selection.prior_alpha"),
        ({"prior_strength": 1e-300}, 8, "selection.prior_strength"),
    ],
    ids=["window", "n-bounds", "n-min-above-g", "tiny-alpha", "tiny-strength"],
)
async def test_contradictory_or_underflowing_selections_are_422(
    client: httpx.AsyncClient, uid: str, selection: dict[str, Any], group_size: int, field: str
) -> None:
    await make_dataset(client, f"ds-{uid}", 3)
    body = {"name": f"r-{uid}", "dataset": f"ds-{uid}", "group_size": group_size}
    r = await client.post("/v1/runs", json=body | {"selection": selection})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and r.json()["detail"]
    assert (await client.get(f"/v1/runs/r-{uid}")).status_code == 404


async def test_client_vectors_keep_one_width_across_uploads(
    client: httpx.AsyncClient, uid: str
) -> None:
    name = f"cv-{uid}"
    await client.post("/v1/datasets", json={"name": name, "embedder": "client"})
    first = [{"id": f"a{i}", "text": f"t{i}", "embedding": [0.1 * i + 0.1] * 8} for i in range(3)]
    assert (await client.post(f"/v1/datasets/{name}/prompts", json={"prompts": first})).is_success
    narrow = [{"id": "w", "text": "narrow", "embedding": [0.1, 0.2, 0.3, 0.4]}]
    r = await client.post(f"/v1/datasets/{name}/prompts", json={"prompts": narrow})
    assert r.status_code == 422 and "8-wide" in r.json()["detail"]
    assert (await client.get(f"/v1/datasets/{name}")).json()["prompt_count"] == 3
    same = [{"id": "b", "text": "same width", "embedding": [0.5] * 8}]
    assert (await client.post(f"/v1/datasets/{name}/prompts", json={"prompts": same})).is_success


@pytest.mark.parametrize(
    "prompt",
    [
        '{"id": "n", "text": "x", "metadata": {"v": NaN}}',
        '{"id": "n", "text": "x", "metadata": {"deep": [1, {"v": -Infinity}]}}',
    ],
)
async def test_non_finite_metadata_is_422(client: httpx.AsyncClient, uid: str, prompt: str) -> None:
    await client.post("/v1/datasets", json={"name": f"m-{uid}"})
    r = await client.post(
        f"/v1/datasets/m-{uid}/prompts",
        content=('{"prompts": [' + prompt + "]}").encode(),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["field"] == "prompts.0.metadata"
    assert (await client.get(f"/v1/datasets/m-{uid}")).json()["prompt_count"] == 0


async def test_client_vector_values_that_overflow_are_422(
    client: httpx.AsyncClient, uid: str
) -> None:
    await client.post("/v1/datasets", json={"name": f"o-{uid}", "embedder": "client"})
    prompts = [{"id": "x", "text": "x", "embedding": [1e308] * 8}]
    r = await client.post(f"/v1/datasets/o-{uid}/prompts", json={"prompts": prompts})
    assert r.status_code == 422 and r.json()["field"].startswith("prompts.0.embedding")


async def test_prompt_ids_with_slashes_are_reachable(client: httpx.AsyncClient, uid: str) -> None:
    await client.post("/v1/datasets", json={"name": f"sl-{uid}"})
    prompts = [{"id": "aime/2024/7", "text": "x"}]
    await client.post(f"/v1/datasets/sl-{uid}/prompts", json={"prompts": prompts})
    got = await client.get(f"/v1/datasets/sl-{uid}/prompts/aime%2F2024%2F7")
    assert got.status_code == 200 and got.json()["id"] == "aime/2024/7"
    await make_run(client, f"r-{uid}", f"sl-{uid}", group_size=4)
    stats = await client.get(f"/v1/runs/r-{uid}/prompts/aime%2F2024%2F7")
    assert stats.status_code == 200 and stats.json()["id"] == "aime/2024/7"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("prompts", '{"prompts": [{"id": "bad \\ud800 id", "text": "x"}]}'),
        ("prompts", '{"prompts": [{"id": "x", "text": "x", "metadata": {"k": "\\udfff"}}]}'),
        ("prompts", '{"prompts": [{"id": "x", "text": "x", "metadata": {"\\ud800": 1}}]}'),
    ],
    ids=["id", "metadata-value", "metadata-key"],
)
async def test_lone_surrogates_anywhere_are_422(
    client: httpx.AsyncClient, uid: str, path: str, body: str
) -> None:
    await client.post("/v1/datasets", json={"name": f"u-{uid}"})
    r = await client.post(
        f"/v1/datasets/u-{uid}/{path}",
        content=body.encode(),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["field"].startswith("prompts.0.")
    assert (await client.get(f"/v1/datasets/u-{uid}")).json()["prompt_count"] == 0


async def test_lone_surrogates_in_outcomes_batches_and_predict_are_422(
    client: httpx.AsyncClient, uid: str
) -> None:
    _, run, _ = await _setup(client, uid)
    bodies = {
        "outcomes": '{"step": 1, "results": [{"prompt_id": "\\ud800", "rewards": [1, 0]}]}',
        "batches": '{"step": 1, "size": 2, "partition": "\\ud800"}',
        "predict": '{"texts": ["\\ud800"]}',
    }
    for endpoint, body in bodies.items():
        r = await client.post(
            f"/v1/runs/{run}/{endpoint}",
            content=body.encode(),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 422, (endpoint, r.text)


NUL_BODIES: list[tuple[str, str, str]] = [
    ("prompts", '{"prompts": [{"id": "a\\u0000b", "text": "x"}]}', "prompts.0.id"),
    ("prompts", '{"prompts": [{"id": "a", "text": "x\\u0000"}]}', "prompts.0.text"),
    (
        "prompts",
        '{"prompts": [{"id": "a", "text": "x", "metadata": {"k\\u0000": 1}}]}',
        "prompts.0.metadata",
    ),
    (
        "prompts",
        '{"prompts": [{"id": "a", "text": "x", "metadata": {"k": ["\\u0000"]}}]}',
        "prompts.0.metadata",
    ),
    (
        "outcomes",
        '{"step": 1, "results": [{"prompt_id": "p\\u0000", "rewards": [1]}]}',
        "results.0.prompt_id",
    ),
    (
        "outcomes",
        '{"step": 1, "batch_id": "\\u0000", "results": [{"prompt_id": "p1", "rewards": [1]}]}',
        "batch_id",
    ),
    (
        "outcomes",
        '{"step": 1, "partition": "a\\u0000", "results": [{"prompt_id": "p1", "rewards": [1]}]}',
        "partition",
    ),
    ("batches", '{"step": 1, "size": 2, "partition": "\\u0000"}', "partition"),
    ("predict", '{"prompt_ids": ["p1", "\\u0000"]}', "prompt_ids.1"),
    ("predict", '{"texts": ["a\\u0000b"]}', "texts.0"),
]


@pytest.mark.parametrize(("endpoint", "body", "field"), NUL_BODIES, ids=[c[2] for c in NUL_BODIES])
async def test_nul_in_any_string_field_is_422_naming_it(
    client: httpx.AsyncClient, uid: str, endpoint: str, body: str, field: str
) -> None:
    """PostgreSQL cannot store U+0000 (SQLite can): both backends refuse it before any query."""
    ds, run, _ = await _setup(client, uid)
    path = f"/v1/datasets/{ds}/prompts" if endpoint == "prompts" else f"/v1/runs/{run}/{endpoint}"
    r = await client.post(path, content=body.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and "NUL" in r.json()["detail"], r.json()
    assert (await client.get(f"/v1/datasets/{ds}")).json()["prompt_count"] == 20
    run_now = (await client.get(f"/v1/runs/{run}")).json()
    assert (run_now["outcomes"], run_now["batches_served"]) == (0, 1)


@pytest.mark.parametrize(
    ("method", "template", "field"),
    [
        ("GET", "/v1/datasets/{bad}", "dataset"),
        ("GET", "/v1/datasets/{ds}/prompts/{bad}", "prompt_id"),
        ("POST", "/v1/datasets/{bad}/prompts", "dataset"),
        ("GET", "/v1/runs/{bad}", "run"),
        ("GET", "/v1/runs/{run}/prompts/{bad}", "prompt_id"),
        ("GET", "/v1/runs/{bad}/summary", "run"),
        ("GET", "/v1/runs/{bad}/predictor", "run"),
        ("POST", "/v1/runs/{bad}/batches", "run"),
        ("POST", "/v1/runs/{bad}/outcomes", "run"),
        ("POST", "/v1/runs/{bad}/predict", "run"),
        ("GET", "/admin/runs/{bad}", "run"),
    ],
)
@pytest.mark.parametrize("bad", ["a%00b", "%00", "x%ED%A0%80"])
async def test_nul_in_any_path_name_or_id_is_422(
    client: httpx.AsyncClient, uid: str, method: str, template: str, field: str, bad: str
) -> None:
    ds, run, _ = await _setup(client, uid)
    bodies = {
        "prompts": {"prompts": [{"id": "z", "text": "z"}]},
        "batches": {"step": 5, "size": 2},
        "outcomes": {"step": 5, "results": [{"prompt_id": "p1", "rewards": [1.0]}]},
        "predict": {"prompt_ids": ["p1"]},
    }
    body = bodies.get(template.rsplit("/", 1)[-1]) if method == "POST" else None
    r = await client.request(method, template.format(bad=bad, ds=ds, run=run), json=body)
    if bad.startswith("x%ED"):  # not UTF-8: decoded with a replacement character, a plain 404
        assert r.status_code == 404, r.text
        return
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and "NUL" in r.json()["detail"]
    assert (await client.get(f"/v1/datasets/{ds}")).json()["prompt_count"] == 20


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"group_size": "8"}, "group_size"),
        ({"group_size": True}, "group_size"),
        ({"group_size": 8.5}, "group_size"),
        ({"success_threshold": "0.5"}, "success_threshold"),
        ({"selection": {"refit_every": 2**70}}, "selection.refit_every"),
        ({"selection": {"fit_min_outcomes": 2**64}}, "selection.fit_min_outcomes"),
        ({"selection": {"warmup_outcomes": 2**64}}, "selection.warmup_outcomes"),
        ({"selection": {"warmup_outcomes": 2**31}}, "selection.warmup_outcomes"),
    ],
    ids=["gs-str", "gs-bool", "gs-float", "thr-str", "refit", "fit-min", "warmup", "warmup-2^31"],
)
async def test_loose_or_huge_run_numbers_are_422(
    client: httpx.AsyncClient, uid: str, body: dict[str, Any], field: str
) -> None:
    await make_dataset(client, f"ds-{uid}", 3)
    base = {"name": f"r-{uid}", "dataset": f"ds-{uid}", "group_size": 8}
    r = await client.post("/v1/runs", json=base | body)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field, r.json()
    assert (await client.get(f"/v1/runs/r-{uid}")).status_code == 404
    most = {"selection": {"refit_every": 2**31 - 1, "warmup_outcomes": 2**31 - 1}}
    assert (await client.post("/v1/runs", json=base | most)).status_code == 201


async def test_whole_numbers_are_integers(client: httpx.AsyncClient, uid: str) -> None:
    """JSON Schema's `integer` takes 8.0 (the OpenAPI schema says `integer`): so does the service."""
    await make_dataset(client, f"ds-{uid}", 6)
    body = {"name": f"r-{uid}", "dataset": f"ds-{uid}", "group_size": 4.0}
    r = await client.post("/v1/runs", json=body | {"selection": {"refit_every": 50.0}})
    assert r.status_code == 201, r.text
    assert (r.json()["group_size"], r.json()["selection"]["refit_every"]) == (4, 50)
    r = await client.post(f"/v1/runs/r-{uid}/batches", json={"step": 3.0, "size": 2.0})
    assert r.status_code == 200 and (r.json()["step"], len(r.json()["prompts"])) == (3, 2), r.text
    results = [
        {"prompt_id": p["id"], "rewards": [1, 0], "response_lengths": [9.0, 7.0]}
        for p in r.json()["prompts"]
    ]
    r = await client.post(f"/v1/runs/r-{uid}/outcomes", json={"step": 3.0, "results": results})
    assert r.json() == {"accepted": 2, "duplicates": 0}, r.text


@pytest.mark.parametrize(
    ("result", "field"),
    [
        ({"rewards": ["1.0", 0.0]}, "results.0.rewards.0"),
        ({"rewards": [True, 0.0]}, "results.0.rewards.0"),
        ({"rewards": [1.0, 0.0], "mean_logprob": "-0.5"}, "results.0.mean_logprob"),
        ({"rewards": [1.0, 0.0], "response_lengths": [2**63, 1]}, "results.0.response_lengths.0"),
        ({"rewards": [1.0, 0.0], "response_lengths": [2**31, 1]}, "results.0.response_lengths.0"),
        ({"rewards": [1.0, 0.0], "response_lengths": ["3", 1]}, "results.0.response_lengths.0"),
    ],
    ids=["reward-str", "reward-bool", "logprob-str", "len-2^63", "len-2^31", "len-str"],
)
async def test_loose_or_huge_outcome_numbers_are_422(
    client: httpx.AsyncClient, uid: str, result: dict[str, Any], field: str
) -> None:
    _, run, _ = await _setup(client, uid)
    r = await client.post(
        f"/v1/runs/{run}/outcomes", json={"step": 1, "results": [{"prompt_id": "p0", **result}]}
    )
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field, r.json()
    assert await _counts(client, run) == (0, 0)
    for body in ({"step": "1", "results": [{"prompt_id": "p0", "rewards": [1]}]},):
        r = await client.post(f"/v1/runs/{run}/outcomes", json=body)
        assert r.status_code == 422 and r.json()["field"] == "step"
    r = await client.post(f"/v1/runs/{run}/batches", json={"step": 1, "size": "2"})
    assert r.status_code == 422 and r.json()["field"] == "size"
    ok = {
        "step": 1,
        "results": [{"prompt_id": "p0", "rewards": [1, 0.0], "response_lengths": [3, 2**31 - 1]}],
    }
    assert (await client.post(f"/v1/runs/{run}/outcomes", json=ok)).json()["accepted"] == 1


async def test_a_quarter_of_the_bad_input_corpus_gives_no_500_and_writes_nothing(
    settings: Settings,
) -> None:
    """`python -m benchmarks.bad_inputs` sends all of it; here every fourth case."""
    from benchmarks.bad_inputs import probe, service

    async with service(settings) as (c, state):
        result = await probe(c, state, "test", every=4)
    assert sum(result.statuses.values()) >= 100
    assert result.server_errors == [] and result.accepted == [] and result.changed == []
