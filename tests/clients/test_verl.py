"""`depo_client.verl` against verl 0.7.1's real data path and a live service (CPU, no Ray).

The sampler is built by verl's own `create_rl_sampler` from `data.sampler.class_path`, over an
`RLHFDataset` read from parquet, and driven by a torchdata `StatefulDataLoader` with verl's
`collate_fn`, as `RayPPOTrainer` does; each step's `DataProto` gets `uid`s, is repeated `n` times
and given `token_level_scores` the way the trainer does before it calls `sampler.update(batch)`.

verl's dependencies (numpy<2, pyarrow<22, ray) live in their own venv: `bash .ci/verl.sh`.
In the main venv this module is skipped.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("verl")
pytest.importorskip("verl.experimental.dataset.sampler")  # verl <= 0.7.1; 0.9 is test_verl09.py

import numpy as np
import pandas as pd
import torch
import verl
from depo_client import DepoClient, RetryPolicy
from depo_client.verl import DepoCurriculumSampler, DepoScorer, MissingPromptIds
from omegaconf import OmegaConf
from torchdata.stateful_dataloader import StatefulDataLoader
from verl import DataProto
from verl.experimental.dataset.sampler import AbstractCurriculumSampler
from verl.trainer.main_ppo import create_rl_dataset, create_rl_sampler
from verl.utils.dataset.rl_dataset import collate_fn

from tests.fixtures.live import LiveServer, free_port
from tests.fixtures.tokenizer import tiny_tokenizer

pytestmark = pytest.mark.slow  # a real server process or trainer: `make test-fast` skips it

N = 4  # actor_rollout_ref.rollout.n == the run's group_size
B = 3  # data.train_batch_size: unique prompts per step
STEPS = 3
RESPONSE_LEN = 5
ROWS = [(f"add-{a}-{b}", f"what is {a} plus {b} ?") for a in range(5) for b in range(4)]


def write_parquet(path: Path, extra: list[dict[str, Any]]) -> Path:
    pd.DataFrame(
        {
            "data_source": ["arith"] * len(ROWS),
            "prompt": [[{"role": "user", "content": text}] for _, text in ROWS],
            "ability": ["math"] * len(ROWS),
            "reward_model": [{"style": "rule", "ground_truth": "0"}] * len(ROWS),
            "extra_info": extra,
        }
    ).to_parquet(path)
    return path


def data_config(tmp_path: Path, parquet: Path, **sampler: Any) -> Any:
    """verl's own data defaults (legacy_data.yaml) with the settings the docs tell users to set."""
    base = OmegaConf.load(Path(verl.__file__).parent / "trainer/config/data/legacy_data.yaml")
    return OmegaConf.merge(
        base,
        {
            "train_files": [str(parquet)],
            "train_batch_size": B,
            "dataloader_num_workers": 0,
            "cache_dir": str(tmp_path / "cache"),
            "sampler": {
                "class_path": "pkg://depo_client.verl",
                "class_name": "DepoCurriculumSampler",
                **sampler,
            },
        },
    )


def wins(pid: str) -> int:
    """How many of a prompt's N rollouts succeed in this fake rollout (0..N)."""
    return sum(map(ord, pid)) % (N + 1)


def rollout(batch_dict: dict[str, Any]) -> DataProto:
    """What RayPPOTrainer.fit does to a dataloader batch before `sampler.update(batch)`."""
    batch = DataProto.from_single_dict(batch_dict)
    batch.non_tensor_batch["uid"] = np.array(
        [str(uuid.uuid4()) for _ in range(len(batch.batch))], dtype=object
    )
    batch = batch.repeat(repeat_times=N, interleave=True)
    rows = len(batch.batch)
    scores = torch.zeros(rows, RESPONSE_LEN)
    lengths = torch.tensor([2 + r % 3 for r in range(rows)])
    mask = (torch.arange(RESPONSE_LEN)[None, :] < lengths[:, None]).long()
    for r in range(rows):
        pid = batch.non_tensor_batch["extra_info"][r]["index"]
        k = r % N  # the k-th rollout of its prompt (interleaved repeat)
        scores[r, lengths[r] - 1] = 1.0 if k < wins(pid) else 0.0  # the reward on the last token
    batch.batch["token_level_scores"] = scores
    batch.batch["response_mask"] = mask
    batch.batch["old_log_probs"] = -torch.rand(rows, RESPONSE_LEN)
    return batch


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path_factory.mktemp("depo") / "data").start()
    try:
        yield srv
    finally:
        srv.stop()


def new_run(depo: DepoClient) -> str:
    name = uuid.uuid4().hex[:10]
    depo.create_dataset(f"ds-{name}")
    depo.upload_prompts(f"ds-{name}", ROWS, progress=False)
    depo.create_run(f"run-{name}", f"ds-{name}", group_size=N)
    return f"run-{name}"


def test_sampler_from_create_rl_sampler_trains_on_served_batches(
    server: LiveServer, tmp_path: Path
) -> None:
    parquet = write_parquet(
        tmp_path / "train.parquet", [{"index": pid, "split": "train"} for pid, _ in ROWS]
    )
    with DepoClient(server.url) as depo:
        run = new_run(depo)
        cfg = data_config(
            tmp_path, parquet, run=run, url=server.url, spool_path=str(tmp_path / "spool.jsonl")
        )
        dataset = create_rl_dataset(cfg.train_files, cfg, tiny_tokenizer(), None)
        sampler = create_rl_sampler(cfg, dataset)
        assert isinstance(sampler, DepoCurriculumSampler)
        assert isinstance(sampler, AbstractCurriculumSampler)
        loader = StatefulDataLoader(  # as RayPPOTrainer._create_dataloader builds it
            dataset=dataset,
            batch_size=cfg.get("gen_batch_size", cfg.train_batch_size),
            num_workers=cfg["dataloader_num_workers"],
            drop_last=True,
            collate_fn=collate_fn,
            sampler=sampler,
        )
        assert len(loader) == len(ROWS) // B

        rolled: list[list[str]] = []
        state: dict[str, Any] = {}
        for step, batch_dict in enumerate(loader):
            batch = rollout(batch_dict)
            ids = [e["index"] for e in batch.non_tensor_batch["extra_info"]]
            rolled.append(ids[::N])
            assert all(ids[i] == ids[i - i % N] for i in range(len(ids)))  # n in a row
            if isinstance(loader.sampler, AbstractCurriculumSampler):  # as RayPPOTrainer.fit
                loader.sampler.update(batch=batch)
            if step == 1:
                state = loader.state_dict()  # what verl's checkpoint saves
            if step + 1 == STEPS:
                break

        served = {s: depo.next_batch(run, s, B) for s in range(STEPS)}
        assert rolled == [list(served[s].ids) for s in range(STEPS)]
        info = depo.get_run(run)
        assert (info.outcomes, info.rollouts) == (STEPS * B, STEPS * B * N)
        for step, batch_ in served.items():
            for pid in batch_.ids:
                hist = [h for h in depo.prompt_stats(run, pid).history if h.step == step]
                assert [(h.n, h.successes, h.batch_id) for h in hist] == [
                    (N, wins(pid), batch_.batch_id)
                ]
        assert sampler.curriculum.pending == 0 and sampler.curriculum.fallback_batches == 0

        # resume from the checkpointed loader state: the next step is asked for, not step 0
        sampler2 = create_rl_sampler(cfg, dataset)
        loader2 = StatefulDataLoader(
            dataset=dataset,
            batch_size=B,
            num_workers=0,
            drop_last=True,
            collate_fn=collate_fn,
            sampler=sampler2,
        )
        loader2.load_state_dict(state)
        first = next(iter(loader2))
        assert [e["index"] for e in first["extra_info"]] == list(served[2].ids)
        assert list(sampler2.served) == [2] and sampler2.step == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([{"split": "train"}] * len(ROWS), "have no extra_info.index"),
        ([{"index": 0, "split": "train"}] * len(ROWS), "repeats"),
    ],
    ids=["missing", "all-default-0"],
)
def test_sampler_refuses_rows_without_a_stable_id(
    tmp_path: Path, extra: list[dict[str, Any]], message: str
) -> None:
    parquet = write_parquet(tmp_path / "train.parquet", extra)
    cfg = data_config(tmp_path, parquet, run="unused", url="http://127.0.0.1:9")
    dataset = create_rl_dataset(cfg.train_files, cfg, tiny_tokenizer(), None)
    with pytest.raises(MissingPromptIds, match=message):
        create_rl_sampler(cfg, dataset)


def test_scorer_shim_predicts_and_updates_through_the_service(
    server: LiveServer, tmp_path: Path
) -> None:
    with DepoClient(server.url) as depo:
        run = new_run(depo)
        scorer = DepoScorer(depo, run, ROWS, spool_path=tmp_path / "spool.jsonl")
        easy, hard, mixed = ROWS[0], ROWS[1], ROWS[2]
        before = scorer.predict([easy[0], hard[1], {"extra_info": {"index": mixed[0]}}])
        assert len(before) == 3 and all(0.0 <= p <= 1.0 for p in before)
        for step in range(3):
            ack = scorer.update(
                [easy[0], hard[1], mixed[0]], [1.0, 0.0, 0.5], [-0.5, -2.0, None], step=step
            )
            assert ack is not None and (ack.accepted, ack.duplicates) == (3, 0)
        p_easy, p_hard, _ = scorer.predict([easy[0], hard[0], mixed[0]])
        assert p_easy > before[0] and p_hard < before[1]
        hist = depo.prompt_stats(run, mixed[0]).history
        assert [(h.step, h.n, h.successes) for h in hist] == [(s, N, N // 2) for s in range(3)]
        assert scorer.update([easy[0]], [1.0], step=2).accepted == 0  # type: ignore[union-attr]
        with pytest.raises(KeyError):
            scorer.predict(["not a prompt"])


def test_scorer_shim_keeps_going_without_the_service(tmp_path: Path) -> None:
    quick = RetryPolicy(max_attempts=2, deadline=0.5, backoff=0.05)
    with DepoClient(f"http://127.0.0.1:{free_port()}", retry=quick) as depo:
        scorer = DepoScorer(
            depo, "nowhere", ROWS, group_size=N, spool_path=tmp_path / "spool.jsonl"
        )
        assert scorer.predict([ROWS[0][0], ROWS[1][0]]) == [0.5, 0.5]
        assert scorer.update([ROWS[0][0]], [0.75], [-1.0]) is None
        [entry] = scorer.curriculum.spool.entries()
        assert entry.body["step"] == 0
        assert entry.body["results"][0]["rewards"] == [1.0, 1.0, 1.0, 0.0]
