"""Export and routing through `depo_client` and `depo export`, against a real `depo serve`."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from depo_client import AsyncDepoClient, BadRequest, DepoClient, ExportRow, NotFound

from tests.fixtures.live import REPO_ROOT, LiveServer

pytestmark = pytest.mark.slow  # a real server process: `make test-fast` skips it

N, SEEN = 200, 150


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path_factory.mktemp("depo-curation"), DEPO_REFIT_MIN_SECONDS="0")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def run(server: LiveServer) -> str:
    """A fitted run: prompt i passes (i % 9) / 8 of its rollouts; the last 50 never run."""
    name = uuid.uuid4().hex[:10]
    with DepoClient(server.url, timeout=60) as depo:
        depo.create_dataset(f"ds-{name}", embedder="hashing")
        prompts = [
            {
                "id": f"p{i}",
                "text": f"Problem {i}: {'hard ' * (i % 9)}sum {i}.",
                "metadata": {"i": i},
            }
            for i in range(N)
        ]
        depo.upload_prompts(f"ds-{name}", prompts, progress=False)
        sel = {"fit_min_outcomes": 50, "refit_every": 100_000}
        depo.create_run(f"run-{name}", f"ds-{name}", group_size=8, selection=sel)
        groups = {f"p{i}": [1.0] * (8 - i % 9) + [0.0] * (i % 9) for i in range(SEEN)}
        depo.report(f"run-{name}", 0, {k: v[:8] for k, v in groups.items()})
        deadline = time.monotonic() + 60
        while depo.predictor(f"run-{name}").version is None:
            assert time.monotonic() < deadline, "no fit"
            time.sleep(0.2)
    return f"run-{name}"


def test_export_to_files_equals_predict(
    server: LiveServer, run: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with DepoClient(server.url) as depo:
        pred = depo.predict(run, prompt_ids=[f"p{i}" for i in range(N)])
        res = depo.export(run, tmp_path / "all.jsonl", progress=True)
        assert "200/200" in capsys.readouterr().err
        assert (res.format, res.rows, res.model_version) == ("jsonl", N, pred.model_version)
        rows = [ExportRow.from_line(x) for x in (tmp_path / "all.jsonl").read_text().splitlines()]
        assert [r.id for r in rows] == [p.id for p in pred.items]
        for r, p in zip(rows, pred.items, strict=True):
            assert (r.pass_rate, r.p_informative, r.observations) == pytest.approx(
                (p.pass_rate, p.p_informative, p.observations), rel=1e-12
            )
        assert rows[3].metadata == {"i": 3} and rows[3].successes == 5 and rows[3].last_step == 0
        assert depo.export(run, tmp_path / "x.csv", progress=False).rows == N
        with (tmp_path / "x.csv").open() as f:
            assert [r["id"] for r in csv.DictReader(f)] == [r.id for r in rows]
        res = depo.export(run, tmp_path / "x.parquet", seen=False, progress=False)
        assert res.rows is None and pq.read_table(tmp_path / "x.parquet").num_rows == N - SEEN
        buf = io.BytesIO()
        assert depo.export(run, buf, format="csv", limit=5, progress=False).rows == 5
        top = list(depo.export_rows(run, order_by="pass_rate", descending=True, limit=3))
        assert [r.id for r in top] == [
            r.id for r in sorted(rows, key=lambda r: (-r.pass_rate, r.idx))[:3]
        ]
        with pytest.raises(BadRequest) as err:
            depo.export(run, tmp_path / "bad.jsonl", min_pass_rate=0.9, max_pass_rate=0.1)
        assert err.value.field == "min_pass_rate"
        assert not list(tmp_path.glob("bad*")), "a refused export leaves no file"
        with pytest.raises(NotFound):
            list(depo.export_rows("no-such-run"))


def test_route(server: LiveServer, run: str) -> None:
    with DepoClient(server.url) as depo:
        ids = [f"p{i}" for i in range(N)]
        got = depo.route(run, [("small", 0.4), ("large", None)], prompt_ids=ids)
        pred = depo.predict(run, prompt_ids=ids)
        for item, p in zip(got.items, pred.items, strict=True):
            assert item.tier == ("small" if 1 - p.pass_rate <= 0.4 else "large")
        assert sum(t.count for t in got.tiers) == N and got.unrouted == 0
        assert 0 < got.tiers[0].share < 1
        texts = [f"Problem {i}: {'hard ' * (i % 9)}sum {i}." for i in range(300)]
        routed = depo.route(run, [{"name": "small", "max_difficulty": 0.4}], texts=texts)
        assert len(routed.items) == 300  # two requests of at most 256 texts, merged
        assert routed.tiers[0].count + routed.unrouted == 300
        with pytest.raises(BadRequest) as err:
            depo.route(run, [("a", 0.5), ("b", 0.2)], prompt_ids=ids)
        assert err.value.field == "tiers"


async def test_async_export_and_route(server: LiveServer, run: str, tmp_path: Path) -> None:
    async with AsyncDepoClient(server.url) as depo:
        rows = [r async for r in depo.export_rows(run, seen=True)]
        assert len(rows) == SEEN and all(r.observations == 1 for r in rows)
        res = await depo.export(run, tmp_path / "a.csv", progress=False)
        assert res.rows == N
        routed = await depo.route(run, [("all", None)], prompt_ids=["p1", "p2"])
        assert [i.tier for i in routed.items] == ["all", "all"]
        prof = await depo.profile(run, by="i", bins=4)
        assert prof.overall.prompts == N and prof.values == N and prof.other is not None


def test_profile(server: LiveServer, run: str) -> None:
    """Typed, and the export's rows binned: 200 values of `i`, the top 5 listed."""
    with DepoClient(server.url) as depo:
        rows = list(depo.export_rows(run))
        prof = depo.profile(run, by="i", bins=5, max_groups=5)
        assert prof.edges == pytest.approx((0, 0.2, 0.4, 0.6, 0.8, 1.0))
        assert prof.overall.prompts == N and prof.overall.seen == SEEN
        assert list(prof.overall.estimated) == [
            sum(min(int(r.pass_rate * 5), 4) == b for r in rows) for b in range(5)
        ]
        assert [g.value for g in prof.groups] == sorted(str(i) for i in range(N))[:5]
        assert prof.group("0") is prof.groups[0] and prof.group("199") is None
        assert prof.other is not None and prof.other.prompts == N - 5 and prof.missing is None
        assert prof.model_version == rows[0].model_version
        with pytest.raises(BadRequest) as err:
            depo.profile(run, by="no-such-field")
        assert err.value.field == "by"
        with pytest.raises(NotFound):
            depo.profile("no-such-run")
        depo.route(run, [("all", None)], prompt_ids=["p1"], step=3)  # `step` is accepted


def test_depo_export_command(server: LiveServer, run: str, tmp_path: Path) -> None:
    out = tmp_path / "seen.jsonl"
    cmd = [sys.executable, "-m", "service", "export", run, "-o", str(out), "--url", server.url]
    done = subprocess.run([*cmd, "--seen"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "150 rows" in done.stderr
    assert [json.loads(x)["observations"] for x in out.read_text().splitlines()] == [1] * SEEN
    bad = subprocess.run(
        [*cmd, "--min-pass-rate", "2"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert bad.returncode == 1 and "min_pass_rate" in bad.stderr
