"""`Curriculum` keeps a training loop going through a service crash, and loses no outcome."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest
from depo_client import Curriculum, DepoClient, RetryPolicy, Spool

from tests.fixtures.live import LiveServer

pytestmark = pytest.mark.slow  # a real server process or trainer: `make test-fast` skips it

G = 4
SIZE = 5
PROMPTS = {f"q{i}": f"What is {i} * {i % 7}?" for i in range(30)}


def fake_rewards(prompt_id: str, step: int) -> list[float]:
    """Some groups all-fail, some mixed: what a real reward function gives."""
    k = int(prompt_id[1:])
    return [float((k + step + j) % 3 == 0) for j in range(G)]


def test_training_survives_a_crash(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    name = uuid.uuid4().hex[:10]
    server = LiveServer(tmp_path / "data").start()
    retry = RetryPolicy(max_attempts=3, deadline=1.0, backoff=0.05, max_backoff=0.2)
    depo = DepoClient(server.url, retry=retry, timeout=5)
    try:
        depo.create_dataset(f"ds-{name}")
        depo.upload_prompts(f"ds-{name}", PROMPTS.items(), progress=False)
        depo.create_run(f"run-{name}", f"ds-{name}", group_size=G)
        cur = Curriculum(
            depo,
            f"run-{name}",
            PROMPTS,
            spool_path=tmp_path / "spool.jsonl",
            probe_interval=0.0,
            probe_timeout=1.0,
        )
        served_by: dict[int, str] = {}
        delivered: dict[int, dict[str, list[float]]] = {}
        caplog.set_level(logging.WARNING, logger="depo_client")
        for step in range(12):
            if step == 8:  # the service comes back on the same data and port
                assert cur.degraded and cur.pending == 4
                # a crash between an ack and the spool's delete re-sends an acked report:
                resent = {
                    "step": 3,
                    "batch_id": cur.batch_id(3),
                    "results": [{"prompt_id": k, "rewards": v} for k, v in delivered[3].items()],
                }
                assert resent["batch_id"] is not None
                Spool(cur.spool.path).append(f"run-{name}", resent)
                server.start()
            prompts = cur.batch(step, SIZE)
            assert len(prompts) == SIZE and len({p.id for p in prompts}) == SIZE
            assert all(PROMPTS[p.id] == p.text for p in prompts)
            served_by[step] = "fallback" if prompts[0].predicted_pass_rate is None else "service"
            if step == 4:  # the service dies between serving a batch and the report
                server.kill()
            groups = {p.id: fake_rewards(p.id, step) for p in prompts}
            delivered[step] = groups
            ack = cur.report(step, groups)
            assert (ack is None) == (4 <= step <= 7)

        assert [served_by[s] for s in range(12)] == ["service"] * 5 + ["fallback"] * 3 + [
            "service"
        ] * 4
        assert cur.fallback_batches == 3 and cur.spooled_reports == 4
        assert cur.replayed_reports == 5 and cur.pending == 0 and not cur.degraded
        assert any("unreachable" in r.message for r in caplog.records)
        assert any("back after" in r.message for r in caplog.records)

        run = depo.get_run(f"run-{name}")
        groups = sum(len(g) for g in delivered.values())
        assert run.outcomes == groups == 12 * SIZE  # the re-sent step 3 is not counted twice
        assert run.rollouts == groups * G
        assert run.successes == sum(sum(r) for g in delivered.values() for r in g.values())
        by_step = {s.step: s.groups for s in depo.summary(f"run-{name}").zero_variance_by_step}
        assert by_step == {s: SIZE for s in range(12)}
        # step 4 was spooled with the batch it was served in; fallback steps carry none
        p4 = next(iter(delivered[4]))
        assert [
            h.batch_id is not None
            for h in depo.prompt_stats(f"run-{name}", p4).history
            if h.step == 4
        ] == [True]
        p5 = next(iter(delivered[5]))
        assert [
            h.batch_id for h in depo.prompt_stats(f"run-{name}", p5).history if h.step == 5
        ] == [None]
    finally:
        depo.close()
        server.stop()


def test_spool_outlives_the_process_and_sets_aside_rejected(tmp_path: Path) -> None:
    name = uuid.uuid4().hex[:10]
    server = LiveServer(tmp_path / "data")
    spool = tmp_path / "spool.jsonl"
    quick = RetryPolicy(max_attempts=1, deadline=0)
    with DepoClient(server.url, retry=quick) as depo:
        down = Curriculum(depo, f"run-{name}", PROMPTS, spool_path=spool, probe_interval=60)
        assert [p.id for p in down.batch(0, 3)] == [p.id for p in down.fallback_batch(0, 3)]
        assert down.report(0, {"q1": [1.0, 0.0]}) is None
        assert down.report(0, {"unknown": [1.0, 0.0]}) is None  # never accepted by the service
        assert down.report(1, {"q2": [0.0, 0.0]}) is None  # between probes: no contact, spooled
        assert down.pending == 3
        down.close()  # the trainer exits while the service is still down
        assert spool.exists()

        server.start()
        depo.create_dataset(f"ds-{name}")
        depo.upload_prompts(f"ds-{name}", PROMPTS.items(), progress=False)
        depo.create_run(f"run-{name}", f"ds-{name}", group_size=2)
        up = Curriculum(depo, f"run-{name}", list(PROMPTS.items()), spool_path=spool)
        assert up.flush() == 2 and up.pending == 0 and up.rejected_reports == 1
        assert len(Spool(spool.with_suffix(".rejected.jsonl"))) == 1
        assert depo.get_run(f"run-{name}").outcomes == 2
    server.stop()
