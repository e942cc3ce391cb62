"""`depo_client.verl_v1` against verl 0.9.1's V1 trainer code, a real TransferQueue and a live service.

CPU, local Ray, no model: `CpuTrainer` is verl's own `PPOTrainerSync` with only the GPU parts left
out. Its real `_build_replay_buffer` loads `DepoReplayBuffer` from `trainer.v1.sampler
.custom_sampler`, its real `_init_dataloader` builds `DepoDataset` from `data.custom_cls` and the
`StatefulDataLoader`, its real `prepare_step` submits each step's prompts to TransferQueue. The
rollout (vLLM in a real run) is `FakeRollout`, which writes N trajectories per prompt in the layout
of verl's `AgentLoopWorkerTQ` (`{uid}_{session}_{index}` keys, every prompt field copied, the reward
on the response's last token in `rm_scores`). Then the step samples from the replay buffer as
`_step_once` does, and the metrics go through verl's `MetricsAggregator` and `Tracking("file")`.

verl 0.9.1 needs numpy>=2, Ray and TransferQueue: its own venv, `bash .ci/verl.sh 0.9.1`. Skipped
elsewhere.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("verl.trainer.ppo.v1.replay_buffer")  # verl >= 0.9; 0.7.1 is test_verl.py

import pandas as pd
import ray
import torch
import transfer_queue as tq
import verl
from depo_client import DepoClient
from depo_client.verl_v1 import DEPO_STEP, DepoDataset, DepoReplayBuffer
from omegaconf import OmegaConf
from tensordict import NonTensorData, NonTensorStack
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.trainer.ppo.v1.utils import MetricsAggregator
from verl.utils.tensordict_utils import list_of_dict_to_tensordict
from verl.utils.tracking import Tracking

from tests.fixtures.live import LiveServer
from tests.fixtures.tokenizer import tiny_tokenizer

pytestmark = pytest.mark.slow  # a real server process, Ray and TransferQueue

N = 4  # actor_rollout_ref.rollout.n == the run's group_size
B = 3  # data.train_batch_size
STEPS = 4
ROWS = [(f"add-{a}-{b}", f"what is {a} plus {b} ?") for a in range(5) for b in range(4)]


def write_parquet(path: Path, rows: list[tuple[str, str]]) -> str:
    pd.DataFrame(
        {
            "data_source": ["arith"] * len(rows),
            "prompt": [[{"role": "user", "content": text}] for _, text in rows],
            "ability": ["math"] * len(rows),
            "reward_model": [{"style": "rule", "ground_truth": "0"}] * len(rows),
            "extra_info": [{"index": pid, "split": "train"} for pid, _ in rows],
        }
    ).to_parquet(path)
    return str(path)


def config(tmp_path: Path, run: str, url: str) -> Any:
    """verl's data defaults plus the lines docs/clients.md tells a verl 0.9 user to add."""
    data = OmegaConf.load(Path(verl.__file__).parent / "trainer/config/data/legacy_data.yaml")
    return OmegaConf.create(
        {
            "data": OmegaConf.merge(
                data,
                {
                    "train_files": [write_parquet(tmp_path / "train.parquet", ROWS)],
                    "val_files": [write_parquet(tmp_path / "val.parquet", ROWS[:4])],
                    "train_batch_size": B,
                    "filter_overlong_prompts": False,
                    "cache_dir": str(tmp_path / "cache"),
                    "tool_config_path": None,
                    "function_tool_path": None,
                    # the lines of docs/clients.md
                    "dataloader_num_workers": 0,
                    "custom_cls": {"path": "pkg://depo_client.verl_v1", "name": "DepoDataset"},
                    "depo": {"run": run, "url": url, "spool_path": str(tmp_path / "spool.jsonl")},
                },
            ),
            "trainer": {
                "total_epochs": 10,
                "total_training_steps": STEPS,
                "v1": {
                    "trainer_mode": "sync",
                    "sync": {},
                    "sampler": {
                        "max_off_policy_threshold": 8,
                        "max_off_policy_strategy": "drop",
                        "sync_refill_failed_groups": False,
                        "custom_sampler": {
                            "path": "pkg://depo_client.verl_v1",
                            "name": "DepoReplayBuffer",
                        },
                        "sampler_kwargs": {},
                    },
                },
            },
            "algorithm": {"filter_groups": None},
            "actor_rollout_ref": {"rollout": {"n": N}},
        }
    )


def wins(pid: str) -> int:
    """How many of a prompt's N rollouts succeed in this fake rollout (0..N)."""
    return sum(map(ord, pid)) % (N + 1)


class FakeRollout:
    """Stands in for AgentLoopManagerTQ: N finished trajectories per prompt, as its workers write."""

    def __init__(self) -> None:
        self.submitted: list[list[str]] = []  # prompt ids per dataloader batch, in order

    def generate_sequences(self, batch: Any) -> None:
        prompts = []
        for i in range(len(batch)):  # AgentLoopWorkerTQ.generate_sequences' per-row copy
            prompt: dict[str, Any] = {}
            for k, v in batch.items():
                if isinstance(v, torch.Tensor):
                    prompt[k] = v[i]
                elif isinstance(v, NonTensorStack):
                    prompt[k] = v[i].data
                elif isinstance(v, NonTensorData):
                    prompt[k] = v.data
            prompts.append(prompt)
        self.submitted.append([str(p["index"]) for p in prompts])
        for prompt in prompts:
            uid, pid = prompt["uid"], str(prompt["index"])
            keys, fields, tags = [], [], []
            for session in range(N):
                length = 2 + session % 3
                scores = torch.zeros(length)
                scores[-1] = 1.0 if session < wins(pid) else 0.0
                keys.append(f"{uid}_{session}_0")
                fields.append(
                    {
                        **prompt,
                        "session_id": session,
                        "prompts": torch.tensor([3, 4, 5]),
                        "responses": torch.arange(length) + 6,
                        "response_mask": torch.ones(length, dtype=torch.int64),
                        "rm_scores": scores,
                    }
                )
                tags.append({"status": "success", "global_steps": prompt["global_steps"]})
            tq.kv_batch_put(
                keys=keys,
                fields=list_of_dict_to_tensordict(fields),
                tags=tags,
                partition_id="train",
            )
            tq.kv_put(key=uid, partition_id="train", tag={"status": "finished"})


class CpuTrainer(PPOTrainerSync):
    """verl's sync V1 trainer without workers: the data path and the replay buffer are verl's own."""

    def __init__(self, cfg: Any, rollout: FakeRollout) -> None:
        self.config = cfg
        self.trainer_mode = cfg.trainer.v1.trainer_mode
        self.parameter_sync_step = 1
        self.replay_buffer = self._build_replay_buffer()
        self.tokenizer, self.processor = tiny_tokenizer(), None
        self._init_dataloader()
        self.agent_loop_manager = rollout
        self.global_steps = 0

    def train_step(self) -> tuple[list[str], dict[str, Any]]:
        """`fit`'s step 1 / 7 around `_step_once`'s sampling: the prompt ids trained, the metrics."""
        self.global_steps += 1
        self.prepare_step()
        aggregator = MetricsAggregator()
        batch, metrics = self.replay_buffer.sample(
            global_steps=self.global_steps, partition_id="train", batch_size=B
        )
        aggregator.add_step_metrics(metrics, sample_count=len(batch.keys))
        data = tq.kv_batch_get(
            keys=batch.keys, partition_id=batch.partition_id, select_fields=["uid", "index"]
        )
        trained = [str(i) for i in data["index"]]
        tq.kv_clear(keys=batch.keys, partition_id=batch.partition_id)
        return trained, aggregator.get_aggregated_metrics()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path_factory.mktemp("depo") / "data").start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def transferqueue() -> Iterator[None]:
    # logical CPUs: TransferQueue's controller and storage unit each reserve one
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
    try:
        yield
    finally:
        tq.close()
        ray.shutdown()


def new_run(depo: DepoClient) -> str:
    name = uuid.uuid4().hex[:10]
    depo.create_dataset(f"ds-{name}")
    depo.upload_prompts(f"ds-{name}", ROWS, progress=False)
    depo.create_run(f"run-{name}", f"ds-{name}", group_size=N)
    return f"run-{name}"


def test_v1_trainer_trains_on_served_batches_and_reports_each_group_once(
    server: LiveServer, transferqueue: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_path = tmp_path / "metrics.jsonl"
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(log_path))
    with DepoClient(server.url) as depo:
        run = new_run(depo)
        rollout = FakeRollout()
        trainer = CpuTrainer(config(tmp_path, run, server.url), rollout)
        assert isinstance(trainer.train_dataset, DepoDataset) and trainer.train_dataset.serving
        assert isinstance(trainer.val_dataset, DepoDataset) and not trainer.val_dataset.serving
        assert isinstance(trainer.replay_buffer, DepoReplayBuffer)
        tracking = Tracking("depo-test", "v1", default_backend=["file"])

        trained: list[list[str]] = []
        state: dict[str, Any] = {}
        for step in range(STEPS):
            ids, metrics = trainer.train_step()
            trained.append(ids)
            tracking.log(data=metrics, step=trainer.global_steps)  # as fit() logs each step
            if step == 1:
                state = trainer.train_dataloader.state_dict()  # what verl's data.pt holds
        tracking.finish()

        served = {s: depo.next_batch(run, s, B) for s in range(STEPS)}
        # pre-rollout selection: what reached the rollout is the service's batch, in its order
        assert rollout.submitted == [served[s].ids for s in range(STEPS)]
        for s in range(STEPS):  # what was trained: N trajectories of each served prompt
            assert Counter(trained[s]) == {pid: N for pid in served[s].ids}, s
        info = depo.get_run(run)
        assert (info.outcomes, info.rollouts) == (STEPS * B, STEPS * B * N)  # none lost, none twice
        for s, batch in served.items():
            for pid in batch.ids:
                hist = [h for h in depo.prompt_stats(run, pid).history if h.step == s]
                assert [(h.n, h.successes, h.batch_id) for h in hist] == [
                    (N, wins(pid), batch.batch_id)
                ], (s, pid)
        curriculum = trainer.train_dataset.curriculum
        assert curriculum.pending == 0 and curriculum.fallback_batches == 0

        # the service's figures arrive in verl's tracking, one record per step
        records = [json.loads(line) for line in log_path.read_text().splitlines()]
        assert [r["step"] for r in records] == list(range(1, STEPS + 1))
        for s, record in enumerate(records):
            figures = record["data"]
            groups = [[1.0] * wins(p) + [0.0] * (N - wins(p)) for p in served[s].ids]
            zero_var = sum(w in (0, N) for w in map(wins, served[s].ids)) / B
            assert figures["depo/groups_reported"] == B
            assert figures["depo/zero_variance_share"] == pytest.approx(zero_var), groups
            assert figures["depo/expected_informative"] == pytest.approx(
                served[s].stats.expected_informative
            )
            assert figures["depo/survival_rate"] == pytest.approx(served[s].stats.survival_rate)
            assert figures["depo/local_batch"] == 0.0
        first = records[0]["data"]  # refreshed at the first step: the run's figures
        assert "depo/uniform_zero_variance_share" in first
        assert first["depo/run_zero_variance_share"] == pytest.approx(
            sum(w in (0, N) for w in map(wins, served[0].ids)) / B
        )

        # a resumed run (verl's data.pt) asks the service for the next step, not step 0
        again = CpuTrainer(config(tmp_path, run, server.url), FakeRollout())
        again.train_dataloader.load_state_dict(state)
        again.global_steps = 2
        again.prepare_step()
        assert again.agent_loop_manager.submitted == [served[2].ids]
        assert again.train_dataset.position == 3 * B


def test_dataset_refuses_validation_on_the_train_files(tmp_path: Path) -> None:
    cfg = config(tmp_path, "unused", "http://127.0.0.1:9")
    cfg.data.val_files = cfg.data.train_files
    with pytest.raises(ValueError, match="give validation its own file"):
        CpuTrainer(cfg, FakeRollout())


def test_rows_carry_the_served_step(server: LiveServer, tmp_path: Path) -> None:
    with DepoClient(server.url) as depo:
        run = new_run(depo)
        cfg = config(tmp_path, run, server.url)
        from verl.trainer.ppo.utils import create_rl_dataset

        ds = create_rl_dataset(cfg.data.train_files, cfg.data, tiny_tokenizer(), None)
        rows = [ds[i] for i in range(2 * B)]
        assert [r[DEPO_STEP] for r in rows] == [0] * B + [1] * B
        assert [r["index"] for r in rows] == [
            *depo.next_batch(run, 0, B).ids,
            *depo.next_batch(run, 1, B).ids,
        ]
