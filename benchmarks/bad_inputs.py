"""Fire a corpus of bad inputs at every route on each backend; count the 500s and the writes.

    python -m benchmarks.bad_inputs                      # PostgreSQL + Redis, then embedded
    python -m benchmarks.bad_inputs --backends embedded

Each backend gets a fresh service (in process, API key set, 1 MiB body limit) with a dataset, a
run, a served batch and one report. The corpus then sends NUL bytes and lone surrogates in every
string field and path name, odd but valid Unicode where it is looked up, non-finite,
out-of-range and wrongly typed numbers, wrong shapes, wrong content types, huge and deep bodies,
missing keys and wrong methods. It prints the answers by status; it fails (exit 1) on any 5xx,
on any 2xx (a bad input the service took), or if any table's rows changed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from service.app import create_app
from service.config import Settings
from service.db import Base
from service.state import AppState

KEY = "bad-inputs-key"
AUTH = {"authorization": f"Bearer {KEY}"}
BODY_LIMIT = 1024 * 1024

NOT_STORABLE = ["\x00", "a\x00b", "\ud800", "x\udfff", "\udbff\x00"]
ODD = ["\u202e", "\ufeff", "\U0001f4a5", "\uffff", "\u0085", "e\u0301", "\x7f", " ", "\t\n"]
BAD_PATH = ["%00", "a%00b", "%ED%A0%80", "%FF", "%E2%80%AE", "x" * 5000, "%2E%2E"]
NUMBERS: list[Any] = [float("nan"), float("inf"), float("-inf"), 2**64, 2**70, -1, "1", True, None]


@dataclass
class Case:
    name: str
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})
    auth: bool = True


@dataclass
class Result:
    backend: str
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.server_errors or self.accepted or self.changed)


def _json(obj: Any) -> bytes:
    """ASCII JSON: lone surrogates and NUL go as \\u escapes, NaN and infinities as literals."""
    return json.dumps(obj, ensure_ascii=True).encode()


def _post(name: str, path: str, obj: Any) -> Case:
    return Case(name, "POST", path, _json(obj))


def corpus(ds: str, run: str, batch_id: str) -> list[Case]:
    """Every case must be refused: a 2xx here is a bad input the service took."""
    upload = f"/v1/datasets/{ds}/prompts"
    outcomes, batches, predict, route, export = (
        f"/v1/runs/{run}/{x}" for x in ("outcomes", "batches", "predict", "route", "export")
    )
    tiers = [{"name": "small", "max_difficulty": 0.75}, {"name": "large"}]
    run_body = {"name": f"new-{run}", "dataset": ds, "group_size": 8}
    group = {"prompt_id": "p1", "rewards": [1.0, 0.0]}
    cases: list[Case] = []
    add = cases.append
    for i, s in enumerate(NOT_STORABLE):
        add(_post(f"upload id {i}", upload, {"prompts": [{"id": s, "text": "t"}]}))
        add(_post(f"upload text {i}", upload, {"prompts": [{"id": "n", "text": s}]}))
        meta_key = {"prompts": [{"id": "n", "text": "t", "metadata": {s: 1}}]}
        add(_post(f"upload metadata key {i}", upload, meta_key))
        meta_val = {"prompts": [{"id": "n", "text": "t", "metadata": {"k": [{"v": s}]}}]}
        add(_post(f"upload metadata value {i}", upload, meta_val))
        add(_post(f"dataset name {i}", "/v1/datasets", {"name": s}))
        add(_post(f"run name {i}", "/v1/runs", run_body | {"name": s}))
        add(_post(f"run init_from {i}", "/v1/runs", run_body | {"init_from": s}))
        add(_post(f"batch partition {i}", batches, {"step": 9, "size": 2, "partition": s}))
        add(
            _post(
                f"outcome prompt_id {i}",
                outcomes,
                {"step": 9, "results": [group | {"prompt_id": s}]},
            )
        )
        add(
            _post(f"outcome batch_id {i}", outcomes, {"step": 9, "batch_id": s, "results": [group]})
        )
        add(
            _post(
                f"outcome partition {i}", outcomes, {"step": 9, "partition": s, "results": [group]}
            )
        )
        add(_post(f"predict prompt_ids {i}", predict, {"prompt_ids": ["p1", s]}))
        add(_post(f"predict texts {i}", predict, {"texts": [s]}))
        add(_post(f"route texts {i}", route, {"tiers": tiers, "texts": [s]}))
        add(_post(f"route tier name {i}", route, {"tiers": [{"name": s}], "prompt_ids": ["p1"]}))
    for i, s in enumerate(ODD):  # valid Unicode, looked up and not found, or not a name
        add(
            _post(
                f"odd outcome prompt_id {i}",
                outcomes,
                {"step": 9, "results": [group | {"prompt_id": s}]},
            )
        )
        add(
            _post(
                f"odd outcome batch_id {i}",
                outcomes,
                {"step": 9, "batch_id": s, "results": [group]},
            )
        )
        add(_post(f"odd predict prompt_ids {i}", predict, {"prompt_ids": [s]}))
        add(_post(f"odd dataset name {i}", "/v1/datasets", {"name": s}))
        odd_upload = {"prompts": [{"id": s, "text": s, "metadata": {s: s}}]}
        add(_post(f"odd upload to no dataset {i}", "/v1/datasets/none-such/prompts", odd_upload))
    templates = [
        ("GET", "/v1/datasets/{x}"),
        ("POST", "/v1/datasets/{x}/prompts"),
        ("GET", f"/v1/datasets/{ds}/prompts/{{x}}"),
        ("GET", "/v1/runs/{x}"),
        ("POST", "/v1/runs/{x}/batches"),
        ("POST", "/v1/runs/{x}/outcomes"),
        ("GET", f"/v1/runs/{run}/prompts/{{x}}"),
        ("GET", "/v1/runs/{x}/summary"),
        ("POST", "/v1/runs/{x}/predict"),
        ("GET", "/v1/runs/{x}/predictor"),
        ("POST", "/v1/runs/{x}/route"),
        ("GET", "/v1/runs/{x}/export"),
        ("GET", "/admin/runs/{x}"),
    ]
    path_bodies = {
        "prompts": {"prompts": [{"id": "n", "text": "t"}]},
        "batches": {"step": 9, "size": 2},
        "outcomes": {"step": 9, "results": [group]},
        "predict": {"prompt_ids": ["p1"]},
        "route": {"tiers": tiers, "prompt_ids": ["p1"]},
    }
    for method, template in templates:
        body = path_bodies.get(template.rsplit("/", 1)[-1])
        for bad in BAD_PATH:
            data = _json(body) if method == "POST" and body else None
            add(Case(f"path {template} {bad[:12]}", method, template.format(x=bad), data))
    for i, v in enumerate(NUMBERS):
        reward = v if i != 5 else 1e13  # a negative reward is a reward
        add(
            _post(
                f"reward {i}",
                outcomes,
                {"step": 9, "results": [{"prompt_id": "p1", "rewards": [1.0, reward]}]},
            )
        )
        add(_post(f"outcome step {i}", outcomes, {"step": v, "results": [group]}))
        add(_post(f"batch step {i}", batches, {"step": v, "size": 2}))
        add(_post(f"batch size {i}", batches, {"step": 9, "size": v}))
        add(_post(f"group_size {i}", "/v1/runs", run_body | {"group_size": v}))
        add(
            _post(
                f"success_threshold {i}",
                "/v1/runs",
                run_body | {"success_threshold": v if i < 3 else "x"},
            )
        )
        add(
            _post(
                f"mean_logprob {i}",
                outcomes,
                {"step": 9, "results": [group | {"mean_logprob": v if i < 3 else "x"}]},
            )
        )
        lengths = {"response_lengths": [v, 1]} if i != 5 else {"response_lengths": [2**63, 1]}
        add(_post(f"response_lengths {i}", outcomes, {"step": 9, "results": [group | lengths]}))
        add(
            _post(
                f"embedding {i}",
                upload,
                {"prompts": [{"id": "n", "text": "t", "embedding": [v] * 4}]},
            )
        )
    for key, values in {
        "discount": [0, 2, float("nan")],
        "explore": [-1, float("inf")],
        "refit_every": [0, 2**70],
        "fit_min_outcomes": [2**64],
        "warmup_outcomes": [-1, 2**64],
        "seed": [-1, 2**31],
        "n_min": [0],
        "prior_alpha": [0, float("nan")],
        "lease_seconds": [0, float("inf")],
        "thompson_draws": [65],
        "no_such_setting": [1],
    }.items():
        for v in values:
            add(_post(f"selection {key}={v}", "/v1/runs", run_body | {"selection": {key: v}}))
    for q in [
        "bins=0",
        "bins=101",
        "bins=x",
        f"bins={2**70}",
        "bins=nan",
        "last_steps=0",
        "last_steps=1e9",
    ]:
        add(Case(f"summary {q}", "GET", f"/v1/runs/{run}/summary?{q}"))
    routes = [
        ("/v1/datasets", "dataset"),
        ("/v1/runs", "run"),
        (upload, "upload"),
        (batches, "batch"),
        (outcomes, "outcome"),
        (predict, "predict"),
    ]
    for path, what in routes:
        for shape in ([], "s", 7, None, {}, [{}], {"results": {"a": 1}, "prompts": "x"}):
            add(_post(f"{what} shape {json.dumps(shape)}", path, shape))
        for ctype, data in [
            ("text/plain", b'{"step": 1}'),
            ("application/x-www-form-urlencoded", b"step=1&size=2"),
            (
                "multipart/form-data; boundary=x",
                b"--x\r\nContent-Disposition: form-data; name=step\r\n\r\n1\r\n--x--",
            ),
            ("application/xml", b"<step>1</step>"),
            ("application/json", b"{not json"),
            ("application/json", b""),
            ("application/json", b'{"step": "\xff\xfe"}'),
            ("application/json", b"\xef\xbb\xbf{}"),
            ("application/json; charset=utf-16", "{}".encode("utf-16")),
        ]:
            add(
                Case(
                    f"{what} content {ctype} {data[:10]!r}",
                    "POST",
                    path,
                    data,
                    {"content-type": ctype},
                )
            )
        add(Case(f"{what} no content type", "POST", path, b'{"step": 1}', {}))
        add(Case(f"{what} no key", "POST", path, b"{}", auth=False))
        add(
            Case(
                f"{what} wrong key",
                "POST",
                path,
                b"{}",
                {"authorization": "Bearer nope"},
                auth=False,
            )
        )
        add(
            Case(
                f"{what} basic auth",
                "POST",
                path,
                b"{}",
                {"authorization": "Basic Og=="},
                auth=False,
            )
        )
        add(Case(f"{what} PUT", "PUT", path, b"{}"))
    deep = 100_000
    add(Case("deep array", "POST", upload, b"[" * deep + b"]" * deep))
    add(Case("deep object", "POST", outcomes, b'{"a":' * deep + b"1" + b"}" * deep))
    nest: Any = "v"
    for _ in range(40):
        nest = {"k": nest}
    add(
        _post("metadata 40 deep", upload, {"prompts": [{"id": "n", "text": "t", "metadata": nest}]})
    )
    for _ in range(900):
        nest = [nest]
    add(
        _post(
            "metadata 940 deep",
            upload,
            {"prompts": [{"id": "n", "text": "t", "metadata": {"k": nest}}]},
        )
    )
    big = {"prompts": [{"id": f"b{i}", "text": "x" * 1000} for i in range(1200)]}
    add(_post("body over the limit", upload, big))
    add(
        Case(
            "content-length lie",
            "POST",
            upload,
            _json(big),
            {"content-type": "application/json", "content-length": "20"},
        )
    )
    add(
        _post(
            "too many prompts",
            upload,
            {"prompts": [{"id": f"m{i}", "text": "x"} for i in range(10_001)]},
        )
    )
    add(
        _post(
            "too many rewards",
            outcomes,
            {"step": 9, "results": [{"prompt_id": "p1", "rewards": [1.0] * 1025}]},
        )
    )
    for q in (
        "format=xml",
        "min_pass_rate=2",
        "min_pass_rate=0.8&max_pass_rate=0.2",
        "min_p_informative=-1",
        "limit=-1",
        "limit=10000000000000000000000",
        "order_by=idx%00",
        "order_by=bogus&limit=5",
        "order_by=pass_rate",
        "seen=maybe",
        "chunk=0",
        "no_such_filter=1",
        "min_pass_rate=nan",
    ):
        add(Case(f"export {q}", "GET", f"{export}?{q}", None))
    for name, bad_tiers in (
        ("unsorted", [{"name": "a", "max_difficulty": 0.9}, {"name": "b", "max_difficulty": 0.1}]),
        ("duplicate", [{"name": "a", "max_difficulty": 0.5}, {"name": "a"}]),
        ("out of range", [{"name": "a", "max_difficulty": 1.5}]),
        ("unbounded first", [{"name": "a"}, {"name": "b", "max_difficulty": 0.5}]),
        ("none", []),
        ("not a list", {"name": "a"}),
        ("nan", [{"name": "a", "max_difficulty": "NaN"}]),
    ):
        add(_post(f"route tiers {name}", route, {"tiers": bad_tiers, "prompt_ids": ["p1"]}))
    add(_post("route both", route, {"tiers": tiers, "prompt_ids": ["p1"], "texts": ["t"]}))
    add(_post("route neither", route, {"tiers": tiers}))
    add(_post("huge text", upload, {"prompts": [{"id": "h", "text": "x" * 200_001}]}))
    add(_post("huge id", upload, {"prompts": [{"id": "x" * 513, "text": "t"}]}))
    add(
        _post(
            "huge int in metadata",
            upload,
            {"prompts": [{"id": "n", "text": "t", "metadata": {"k": 1e400}}]},
        )
    )
    add(
        Case(
            "digits past the parser's limit",
            "POST",
            outcomes,
            b'{"step": ' + b"9" * 5000 + b', "results": []}',
        )
    )
    return cases


async def _seed(c: httpx.AsyncClient) -> tuple[str, str, str]:
    ds, run = f"ds-{uuid.uuid4().hex[:6]}", f"run-{uuid.uuid4().hex[:6]}"
    assert (await c.post("/v1/datasets", json={"name": ds}, headers=AUTH)).status_code == 201
    prompts = [{"id": f"p{i}", "text": f"what is {i} plus {i}?"} for i in range(20)]
    r = await c.post(f"/v1/datasets/{ds}/prompts", json={"prompts": prompts}, headers=AUTH)
    assert r.status_code == 200, r.text
    body = {"name": run, "dataset": ds, "group_size": 2, "strategy": "uniform"}
    assert (await c.post("/v1/runs", json=body, headers=AUTH)).status_code == 201
    served = await c.post(f"/v1/runs/{run}/batches", json={"step": 0, "size": 4}, headers=AUTH)
    assert served.status_code == 200, served.text
    batch = served.json()
    report = {
        "step": 0,
        "batch_id": batch["batch_id"],
        "results": [{"prompt_id": batch["prompts"][0]["id"], "rewards": [1.0, 0.0]}],
    }
    assert (await c.post(f"/v1/runs/{run}/outcomes", json=report, headers=AUTH)).status_code == 200
    return ds, run, str(batch["batch_id"])


async def snapshot(state: AppState) -> dict[str, int]:
    """Rows per table: a refused request adds, drops (and, for runs, advances) none."""
    await state.jobs.idle()
    counts: dict[str, int] = {}
    async with state.read_sessionmaker() as session:
        for table in Base.metadata.sorted_tables:
            counts[table.name] = (
                await session.execute(select(func.count()).select_from(table))
            ).scalar_one()
        runs = Base.metadata.tables["runs"]
        for col in ("outcome_seq", "batch_seq", "groups", "rollouts", "successes"):
            counts[f"runs.{col}"] = int(
                (await session.execute(select(func.sum(runs.c[col])))).scalar_one() or 0
            )
    return counts


async def fire(c: httpx.AsyncClient, cases: Sequence[Case], result: Result) -> None:
    for case in cases:
        headers = {**case.headers, **(AUTH if case.auth else {})}
        r = await c.request(case.method, case.path, content=case.body, headers=headers)
        result.statuses[r.status_code] += 1
        if r.status_code >= 500:
            result.server_errors.append(f"{case.name}: {r.status_code} {r.text[:200]}")
        elif r.status_code < 300:
            result.accepted.append(f"{case.name}: {r.status_code} {r.text[:200]}")


@asynccontextmanager
async def service(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    app = create_app(settings.model_copy(update={"api_keys": [KEY], "max_body_bytes": BODY_LIMIT}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://depo.test", timeout=120
        ) as c:
            yield c, app.state.depo


async def probe(c: httpx.AsyncClient, state: AppState, backend: str, every: int = 1) -> Result:
    """Seed, snapshot, fire every `every`-th case, snapshot again."""
    ds, run, batch_id = await _seed(c)
    before = await snapshot(state)
    result = Result(backend)
    await fire(c, corpus(ds, run, batch_id)[::every], result)
    after = await snapshot(state)
    result.changed = [f"{k}: {before[k]} -> {after[k]}" for k in before if before[k] != after[k]]
    return result


async def _backend(backend: str, pg_admin: str, redis_url: str) -> Result:
    data_dir = Path(tempfile.mkdtemp(prefix="depo-bad-"))
    if backend == "embedded":
        async with service(Settings(data_dir=data_dir, database_url=None, redis_url=None)) as (
            c,
            st,
        ):
            return await probe(c, st, backend)
    import asyncpg

    db = f"depo_bad_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(pg_admin)
    await conn.execute(f'CREATE DATABASE "{db}"')
    try:
        settings = Settings(
            data_dir=data_dir,
            database_url=pg_admin.rsplit("/", 1)[0] + "/" + db,
            redis_url=redis_url,
            redis_prefix=f"depobad-{db}",
        )
        async with service(settings) as (c, st):
            result = await probe(c, st, backend)
            await st.hot.flush()
            return result
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--backends", default="postgres,embedded")
    ap.add_argument(
        "--pg", default="postgresql://postgres@127.0.0.1:5432/postgres", help="admin URL"
    )
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    args = ap.parse_args()
    print(f"corpus: {len(corpus('ds', 'run', 'b' * 32))} bad inputs per backend")
    failed = False
    for backend in args.backends.split(","):
        result = asyncio.run(_backend(backend, args.pg, args.redis))
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(result.statuses.items()))
        print(f"{backend}: {sum(result.statuses.values())} sent; by status {codes}")
        print(
            f"  500s and other 5xx: {len(result.server_errors)}; 2xx: {len(result.accepted)}; tables changed: {len(result.changed)}"
        )
        for line in result.server_errors + result.accepted + result.changed:
            print(f"    {line}")
        failed = failed or not result.ok
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
