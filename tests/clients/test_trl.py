"""A real `trl.GRPOTrainer` trains on depo's batches against a live service (CPU, no downloads)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl")

from depo_client import Curriculum, DepoClient, RetryPolicy
from depo_client.trl_stream import DepoReward, served_dataset
from trl import GRPOTrainer

from tests.fixtures.live import LiveServer, free_port
from tests.fixtures.trl import open_run, tiny_stream_trainer, tiny_trainer

pytestmark = pytest.mark.slow  # a real server process or trainer: `make test-fast` skips it

G = 4
B = 2  # unique prompts per generation batch
STEPS = 3


def test_grpo_trainer_on_served_batches(tmp_path: Path) -> None:
    name = uuid.uuid4().hex[:10]
    rows = [
        {"id": f"add-{a}-{b}", "prompt": f"what is {a} plus {b} ?"}
        for a in range(5)
        for b in range(4)
    ]
    server = LiveServer(tmp_path / "data").start()
    rolled: list[list[str]] = []

    def reward(completions: list[str], id: list[str], **_: Any) -> list[float]:
        rolled.append(list(id))
        return [float(len(c.split()) % 2) for c in completions]

    try:
        with DepoClient(server.url) as depo:
            pool = [(r["id"], r["prompt"]) for r in rows]
            run = open_run(depo, name, pool, G)
            curriculum = Curriculum(depo, run, pool, spool_path=tmp_path / "spool.jsonl")
            trainer = tiny_trainer(
                tmp_path / "out", rows, reward, curriculum, steps=STEPS, per_device=B * G, group=G
            )
            trainer.train()

            assert len(rolled) == STEPS
            served = {s: depo.next_batch(f"run-{name}", s, B) for s in range(STEPS)}
            for step, ids in enumerate(rolled):  # every rollout came from that step's served batch
                assert len(ids) == B * G
                assert sorted(set(ids)) == sorted(served[step].ids)
                assert all(ids.count(i) == G for i in set(ids))
            run = depo.get_run(f"run-{name}")
            assert (run.outcomes, run.rollouts) == (STEPS * B, STEPS * B * G)
            for step, batch in served.items():
                for pid in batch.ids:
                    hist = [
                        h for h in depo.prompt_stats(f"run-{name}", pid).history if h.step == step
                    ]
                    assert [(h.n, h.batch_id) for h in hist] == [(G, batch.batch_id)]
            assert curriculum.fallback_batches == 0 and curriculum.pending == 0
    finally:
        server.stop()


def test_grpo_trainer_keeps_training_without_the_service(tmp_path: Path) -> None:
    """No service at all: seeded local batches, every group spooled for later."""
    rows = [{"id": f"q{i}", "prompt": f"what is {i} plus {i} ?"} for i in range(12)]
    quick = RetryPolicy(max_attempts=2, deadline=0.5, backoff=0.05)
    with DepoClient(f"http://127.0.0.1:{free_port()}", retry=quick) as depo:
        curriculum = Curriculum(
            depo,
            "nowhere",
            [(r["id"], r["prompt"]) for r in rows],
            spool_path=tmp_path / "spool.jsonl",
            probe_interval=0,
        )
        trainer = tiny_trainer(
            tmp_path / "out",
            rows,
            lambda completions, **_: [1.0 if c else 0.0 for c in completions],
            curriculum,
            steps=2,
            per_device=B * G,
            group=G,
            completion_length=4,
        )
        trainer.train()
        assert curriculum.degraded and curriculum.fallback_batches >= 2
        spooled = curriculum.spool.entries()
        assert [e.body["step"] for e in spooled] == [0, 1]
        assert all(len(r["rewards"]) == G for e in spooled for r in e.body["results"])
        assert all(len(e.body["results"]) == B and "batch_id" not in e.body for e in spooled)


def test_public_route_streams_served_batches_and_logs_the_figures(tmp_path: Path) -> None:
    """A plain `GRPOTrainer`: `served_dataset` + `DepoReward`, no private override."""
    name = uuid.uuid4().hex[:10]
    rows = [(f"add-{a}-{b}", f"what is {a} plus {b} ?") for a in range(5) for b in range(4)]
    server = LiveServer(tmp_path / "data").start()
    rolled: list[list[str]] = []
    steps_seen: list[list[int]] = []

    def reward(
        completions: list[str], id: list[str], depo_step: list[int], **_: Any
    ) -> list[float]:
        rolled.append(list(id))
        steps_seen.append(list(depo_step))
        return [float(len(c.split()) % 2) for c in completions]

    try:
        with DepoClient(server.url) as depo:
            run = open_run(depo, name, rows, G)
            curriculum = Curriculum(depo, run, rows, spool_path=tmp_path / "spool.jsonl")
            depo_reward = DepoReward(curriculum, reward)
            trainer = tiny_stream_trainer(
                tmp_path / "out",
                served_dataset(curriculum, B),
                depo_reward,
                steps=STEPS,
                per_device=B * G,
                group=G,
            )
            assert type(trainer) is GRPOTrainer
            trainer.train()

            served = {s: depo.next_batch(run, s, B) for s in range(STEPS)}
            # the generation batch of step s is the served batch, in its order, G in a row
            assert rolled == [
                [pid for pid in served[s].ids for _ in range(G)] for s in range(STEPS)
            ]
            assert steps_seen == [[s] * (B * G) for s in range(STEPS)]
            info = depo.get_run(run)
            assert (info.outcomes, info.rollouts) == (STEPS * B, STEPS * B * G)
            for step, batch in served.items():
                for pid in batch.ids:
                    hist = [h for h in depo.prompt_stats(run, pid).history if h.step == step]
                    assert [(h.n, h.batch_id) for h in hist] == [(G, batch.batch_id)]
            assert curriculum.fallback_batches == 0 and curriculum.pending == 0

            # the service's figures are in the trainer's own log history, one entry per step
            logged = [e for e in trainer.state.log_history if "depo/groups_reported" in e]
            assert [e["step"] for e in logged] == list(range(1, STEPS + 1))
            for s, entry in enumerate(logged):
                assert entry["depo/groups_reported"] == B
                assert entry["depo/expected_informative"] == pytest.approx(
                    served[s].stats.expected_informative
                )
                assert entry["depo/local_batch"] == 0.0
                assert 0.0 <= entry["depo/zero_variance_share"] <= 1.0
            assert "depo/uniform_zero_variance_share" in logged[0]
    finally:
        server.stop()


def test_mixin_logs_the_figures_too(tmp_path: Path) -> None:
    name = uuid.uuid4().hex[:10]
    rows = [{"id": f"q{i}", "prompt": f"what is {i} plus {i} ?"} for i in range(12)]
    server = LiveServer(tmp_path / "data").start()
    try:
        with DepoClient(server.url) as depo:
            pool = [(r["id"], r["prompt"]) for r in rows]
            run = open_run(depo, name, pool, G)
            curriculum = Curriculum(depo, run, pool, spool_path=tmp_path / "spool.jsonl")
            trainer = tiny_trainer(
                tmp_path / "out",
                rows,
                lambda completions, **_: [float(len(c) % 2) for c in completions],
                curriculum,
                steps=2,
                per_device=B * G,
                group=G,
            )
            trainer.train()
            logged = [e for e in trainer.state.log_history if "depo/groups_reported" in e]
            assert [(e["step"], e["depo/groups_reported"]) for e in logged] == [(1, B), (2, B)]
            served = depo.next_batch(f"run-{name}", 1, B)
            assert logged[1]["depo/expected_informative"] == pytest.approx(
                served.stats.expected_informative
            )
    finally:
        server.stop()
