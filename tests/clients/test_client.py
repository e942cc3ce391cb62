"""`depo_client` against a real `depo serve` subprocess on the embedded default (no mocks)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from depo_client import (
    TEXTS_PER_REQUEST,
    AsyncDepoClient,
    BadRequest,
    Batch,
    Conflict,
    DepoClient,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RetryPolicy,
    ServiceUnavailable,
    TransportError,
    Unauthorized,
)

from tests.fixtures.live import LiveServer, free_port

pytestmark = pytest.mark.slow  # a real server process or trainer: `make test-fast` skips it


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path_factory.mktemp("depo-client")).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def depo(server: LiveServer) -> Iterator[DepoClient]:
    with DepoClient(server.url, timeout=30) as c:
        yield c


@pytest.fixture
def name() -> str:
    return uuid.uuid4().hex[:12]


PROMPTS = [{"id": f"p{i}", "text": f"Problem {i}: compute {i} + {i * 7 % 13}."} for i in range(60)]


def test_round_trip(depo: DepoClient, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    ds = depo.create_dataset(f"ds-{name}")
    assert (ds.name, ds.embedder, ds.prompt_count) == (f"ds-{name}", "ngrams", 0)
    assert depo.create_dataset(f"ds-{name}") == ds  # idempotent

    up = depo.upload_prompts(f"ds-{name}", PROMPTS, chunk_size=25, progress=True)
    assert (up.inserted, up.updated, up.unchanged, up.prompt_count) == (60, 0, 0, 60)
    assert "60/60" in capsys.readouterr().err  # a progress bar on stderr
    again = depo.upload_prompts(
        f"ds-{name}", ((p["id"], p["text"]) for p in PROMPTS), progress=False
    )
    assert (again.inserted, again.unchanged) == (0, 60)
    assert depo.get_dataset(f"ds-{name}").prompt_count == 60
    p = depo.get_prompt(f"ds-{name}", "p7")
    assert (p.id, p.text, p.index) == ("p7", PROMPTS[7]["text"], 7)

    run = depo.create_run(f"run-{name}", f"ds-{name}", group_size=4, selection={"seed": 3})
    assert (run.name, run.dataset, run.group_size, run.outcomes) == (
        f"run-{name}",
        f"ds-{name}",
        4,
        0,
    )
    assert run.selection["seed"] == 3
    assert depo.create_run(f"run-{name}", f"ds-{name}", group_size=4, selection={"seed": 3}).name

    batch = depo.next_batch(f"run-{name}", step=0, size=8)
    assert isinstance(batch, Batch) and len(batch) == 8 and batch.partition == "0"
    assert all(0.0 <= (q.predicted_pass_rate or 0.0) <= 1.0 for q in batch.prompts)
    assert batch.stats.kept == 8
    assert depo.next_batch(f"run-{name}", step=0, size=8) == batch  # retries and ranks agree
    other = depo.next_batch(f"run-{name}", step=0, size=8, partition=1)
    assert other.batch_id != batch.batch_id

    groups = {q.id: [1.0, 0.0, 1.0, 0.0] for q in batch.prompts}
    ack = depo.report(f"run-{name}", 0, groups, batch_id=batch.batch_id)
    assert (ack.accepted, ack.duplicates) == (8, 0)
    ack = depo.report(f"run-{name}", 0, groups, batch_id=batch.batch_id)
    assert (ack.accepted, ack.duplicates) == (0, 8)

    got = depo.get_run(f"run-{name}")
    assert (got.outcomes, got.rollouts, got.successes, got.batches_served) == (8, 32, 16, 2)
    stats = depo.prompt_stats(f"run-{name}", batch.prompts[0].id)
    assert stats.observations == 1 and stats.history[0].batch_id == batch.batch_id
    summary = depo.summary(f"run-{name}", bins=4)
    assert (summary.groups, summary.rollouts, len(summary.pass_rate_histogram)) == (8, 32, 4)
    assert batch.stats.expected_informative is not None
    assert 0.0 < batch.stats.expected_informative <= 1.0

    seen = [q.id for q in batch.prompts[:3]]
    pred = depo.predict(f"run-{name}", prompt_ids=seen)
    assert [x.id for x in pred.items] == seen and all(x.observations == 1 for x in pred.items)
    assert all(0.0 < x.pass_rate < 1.0 and 0.0 <= x.p_informative <= 1.0 for x in pred.items)
    raw = depo.predict(f"run-{name}", texts=["What is 2 + 2?", "Prove Fermat's last theorem."])
    assert len(raw.items) == 2 and all(x.id is None for x in raw.items)
    with pytest.raises(InvalidRequest):
        depo.predict(f"run-{name}")
    info = depo.predictor(f"run-{name}")
    assert info.version is None and info.outcomes_since == 8  # 8 groups, below the first fit
    assert depo.healthy()


async def test_async_round_trip(server: LiveServer, name: str) -> None:
    async with AsyncDepoClient(server.url) as depo:
        await depo.create_dataset(f"ads-{name}")
        up = await depo.upload_prompts(f"ads-{name}", PROMPTS[:20], progress=False)
        assert up.inserted == 20
        await depo.create_run(f"arun-{name}", f"ads-{name}", group_size=2)
        batch = await depo.next_batch(f"arun-{name}", 0, 5)
        ack = await depo.report(
            f"arun-{name}", 0, [{"prompt_id": q.id, "rewards": [0, 1]} for q in batch.prompts]
        )
        assert ack.accepted == 5
        assert (await depo.get_run(f"arun-{name}")).outcomes == 5
        assert (await depo.summary(f"arun-{name}")).groups == 5
        pred = await depo.predict(f"arun-{name}", prompt_ids=[batch.prompts[0].id])
        assert pred.items[0].observations == 1
        assert (await depo.predictor(f"arun-{name}")).trained_on == 0
        assert await depo.healthy()


def test_predict_sends_raw_texts_in_chunks_a_transformer_embedder_takes(
    server: LiveServer, depo: DepoClient, name: str
) -> None:
    """The server refuses over TEXTS_PER_REQUEST texts on `ngrams-minilm`; the client splits."""
    depo.create_dataset(f"enc-{name}", embedder="ngrams-minilm")
    depo.create_run(f"enc-{name}", f"enc-{name}", group_size=2)
    texts = [f"Problem {i}: what is {i} + 1?" for i in range(TEXTS_PER_REQUEST + 44)]
    with httpx.Client(base_url=server.url) as raw:
        r = raw.post(f"/v1/runs/enc-{name}/predict", json={"texts": texts})
        assert r.status_code == 422 and r.json()["field"] == "texts"
    pred = depo.predict(f"enc-{name}", texts=texts)
    assert len(pred.items) == len(texts) and pred.model_version is None
    assert {p.model_version for p in pred.items} == {None}


async def test_async_predict_chunks_raw_texts(server: LiveServer, name: str) -> None:
    async with AsyncDepoClient(server.url) as depo:
        await depo.create_dataset(f"aenc-{name}", embedder="ngrams-minilm")
        await depo.create_run(f"aenc-{name}", f"aenc-{name}", group_size=2)
        pred = await depo.predict(f"aenc-{name}", texts=["x"] * (2 * TEXTS_PER_REQUEST + 1))
        assert len(pred.items) == 2 * TEXTS_PER_REQUEST + 1


def test_typed_errors(depo: DepoClient, name: str) -> None:
    with pytest.raises(NotFound) as nf:
        depo.get_run(f"missing-{name}")
    assert (nf.value.status_code, nf.value.type) == (404, "not_found")

    depo.create_dataset(f"ds-{name}")
    depo.upload_prompts(f"ds-{name}", PROMPTS[:10], progress=False)
    with pytest.raises(Conflict) as cf:
        depo.create_dataset(f"ds-{name}", embedder="client")
    assert cf.value.status_code == 409

    depo.create_run(f"run-{name}", f"ds-{name}", group_size=2)
    depo.next_batch(f"run-{name}", 0, 4)
    with pytest.raises(Conflict) as cf:
        depo.next_batch(f"run-{name}", 0, 5)
    assert cf.value.field == "size"

    with pytest.raises(BadRequest) as br:
        depo.create_run(f"bad-{name}", f"ds-{name}", group_size=0)
    assert (br.value.status_code, br.value.type, br.value.field) == (
        422,
        "validation_error",
        "group_size",
    )
    with pytest.raises(BadRequest) as br:
        depo.report(f"run-{name}", 0, {"no-such-prompt": [1.0]})
    assert br.value.type == "invalid_input" and "no-such-prompt" in br.value.detail
    # not JSON, so refused before sending: a DepoError, and a ValueError as before
    with pytest.raises(InvalidRequest, match="finite"):
        depo.report(f"run-{name}", 0, {"p0": [float("nan"), 1.0]})
    assert issubclass(InvalidRequest, ValueError) and depo.get_run(f"run-{name}").outcomes == 0


def test_unauthorized_and_api_key(tmp_path: Path, name: str) -> None:
    srv = LiveServer(tmp_path, DEPO_API_KEYS="s3cret").start()
    try:
        with DepoClient(srv.url) as anon, pytest.raises(Unauthorized) as ua:
            anon.create_dataset(f"ds-{name}")
        assert (ua.value.status_code, ua.value.type) == (401, "unauthorized")
        with DepoClient(srv.url, api_key="wrong") as bad, pytest.raises(Unauthorized):
            bad.get_dataset(f"ds-{name}")
        with DepoClient(srv.url, api_key="s3cret") as ok:
            assert ok.create_dataset(f"ds-{name}").name == f"ds-{name}"
    finally:
        srv.stop()


def test_payload_too_large_is_split(tmp_path: Path, name: str) -> None:
    """A service with a lower per-request limit than chunk_size: chunks halve until they fit."""
    srv = LiveServer(tmp_path, DEPO_MAX_PROMPTS_PER_REQUEST="16").start()
    try:
        with DepoClient(srv.url) as depo:
            depo.create_dataset(f"ds-{name}")
            with pytest.raises(PayloadTooLarge):
                depo.request("POST", f"/v1/datasets/ds-{name}/prompts", json={"prompts": PROMPTS})
            up = depo.upload_prompts(f"ds-{name}", PROMPTS, chunk_size=50, progress=False)
            assert (up.inserted, up.prompt_count) == (60, 60)
    finally:
        srv.stop()


def test_retries_until_the_server_comes_up(tmp_path: Path, name: str) -> None:
    """The client starts first; the server comes up 1.5 s later; the call just succeeds."""
    srv = LiveServer(tmp_path)
    timer = threading.Timer(1.5, srv.start, kwargs={"wait": False})
    timer.start()
    try:
        retry = RetryPolicy(max_attempts=100, deadline=60, backoff=0.1, max_backoff=0.5)
        with DepoClient(srv.url, retry=retry) as depo:
            started = time.monotonic()
            assert depo.create_dataset(f"ds-{name}").name == f"ds-{name}"
            assert time.monotonic() - started >= 1.0
    finally:
        timer.join()
        srv.stop()


def test_gives_up_within_its_deadline() -> None:
    retry = RetryPolicy(max_attempts=50, deadline=1.0, backoff=0.1, max_backoff=0.3)
    with DepoClient(f"http://127.0.0.1:{free_port()}", retry=retry) as depo:
        started = time.monotonic()
        with pytest.raises(TransportError):
            depo.get_run("anything")
        assert time.monotonic() - started < 3.0


def test_retries_5xx_and_honours_retry_after() -> None:
    """Status handling on a stand-in transport (the real service does not send 503 on demand)."""
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return httpx.Response(429, headers={"Retry-After": "0.3"}, json={"type": "x"})
        if len(calls) == 2:
            return httpx.Response(503, json={"type": "unavailable", "detail": "db down"})
        return httpx.Response(200, json={"accepted": 1, "duplicates": 0})

    retry = RetryPolicy(max_attempts=5, deadline=10, backoff=0.01, max_backoff=1.0)
    with DepoClient("http://depo.test", retry=retry, transport=httpx.MockTransport(handler)) as c:
        assert c.report("r", 0, {"p": [1.0]}).accepted == 1
    assert len(calls) == 3 and calls[1] - calls[0] >= 0.29

    def always_down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"type": "unavailable", "detail": "db down"})

    with (
        DepoClient(
            "http://depo.test",
            retry=RetryPolicy(max_attempts=2, backoff=0.01),
            transport=httpx.MockTransport(always_down),
        ) as c,
        pytest.raises(ServiceUnavailable) as su,
    ):
        c.get_run("r")
    assert (su.value.status_code, su.value.detail) == (503, "db down")


def test_reports_without_a_batch_count_once_per_partition(depo: DepoClient, name: str) -> None:
    """Two partitions report the same prompt for the same step without batch ids: both count,
    and each one's re-send is a duplicate; a Curriculum drawing locally sends its partition."""
    depo.create_dataset(f"ds-{name}")
    depo.upload_prompts(f"ds-{name}", [("a", "What is 1 + 1?")], progress=False)
    depo.create_run(f"run-{name}", f"ds-{name}", group_size=2)
    group = [{"prompt_id": "a", "rewards": [1.0, 0.0]}]
    assert depo.report(f"run-{name}", 0, group, partition="p0").accepted == 1
    assert depo.report(f"run-{name}", 0, group, partition="p1").accepted == 1
    again = depo.report(f"run-{name}", 0, group, partition=1)  # "1", not "p1": a third key
    assert (again.accepted, again.duplicates) == (1, 0)
    dup = depo.report(f"run-{name}", 0, group, partition="p0")
    assert (dup.accepted, dup.duplicates) == (0, 1)
    assert depo.get_run(f"run-{name}").outcomes == 3


def test_known_difficulty_round_trip(depo: DepoClient, name: str) -> None:
    """Labels go up with the prompts, from a field or as `prior_pass_rate`, and come back."""
    from depo_client import DifficultyField

    spec = DifficultyField("level", easiest=1, hardest=5)
    ds = depo.create_dataset(f"kd-{name}", difficulty_field=spec)
    assert ds.difficulty_field == spec and ds.labelled == 0
    with pytest.raises(Conflict):
        depo.create_dataset(
            f"kd-{name}", difficulty_field={"name": "lvl", "easiest": 1, "hardest": 5}
        )
    up = depo.upload_prompts(
        f"kd-{name}",
        [
            {"id": "a", "text": "Compute 1 + 1.", "metadata": {"level": 5}},
            {"id": "b", "text": "Compute 2 + 2.", "prior_pass_rate": 0.25},
            ("c", "Compute 3 + 3."),
        ],
        progress=False,
    )
    assert up.inserted == 3
    assert depo.get_prompt(f"kd-{name}", "a").prior_pass_rate == pytest.approx(0.1)
    assert depo.get_prompt(f"kd-{name}", "b").prior_pass_rate == 0.25
    assert depo.get_prompt(f"kd-{name}", "c").prior_pass_rate is None
    assert depo.get_dataset(f"kd-{name}").labelled == 2


async def test_a_run_starts_from_another_runs_history(
    depo: DepoClient, server: LiveServer, name: str
) -> None:
    depo.create_dataset(f"ds-{name}")
    depo.upload_prompts(f"ds-{name}", PROMPTS[:10], progress=False)
    depo.create_run(f"src-{name}", f"ds-{name}", group_size=4)
    depo.report(f"src-{name}", 0, [{"prompt_id": "p1", "rewards": [1.0, 1.0, 1.0, 1.0]}])
    run = depo.create_run(f"new-{name}", f"ds-{name}", 4, history_from=f"src-{name}")
    assert run.history_from == f"src-{name}" and run.init_from is None
    assert run.history is not None and run.history.source == f"src-{name}"
    assert (run.history.prompts, run.history.learned) == (1, False)
    assert 0.0 < run.history.weight < 1.0 and run.history.strength > 0
    assert depo.predictor(f"new-{name}").history_from == f"src-{name}"
    with pytest.raises(Conflict):
        depo.create_run(f"new-{name}", f"ds-{name}", 4)
    async with AsyncDepoClient(server.url) as adepo:
        with pytest.raises(BadRequest) as bad:
            await adepo.create_run(f"x-{name}", f"ds-{name}", 4, history_from="nope")
        assert bad.value.field == "history_from"
        same = await adepo.create_run(f"new-{name}", f"ds-{name}", 4, history_from=f"src-{name}")
        assert same.history == run.history
