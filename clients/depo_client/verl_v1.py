"""verl >= 0.9 (the V1 trainer, `trainer.use_v1=true`): depo's batches through two config hooks.

verl 0.8 removed `data.sampler`; 0.9's V1 trainer reads prompts from a `StatefulDataLoader` over
`data.custom_cls` and trains what its replay buffer, `trainer.v1.sampler.custom_sampler`, picks::

    data.custom_cls.path=pkg://depo_client.verl_v1
    data.custom_cls.name=DepoDataset
    +data.depo.run=my-run              # the depo run (created with group_size = rollout.n)
    +data.depo.url=http://depo:8000    # or DEPO_URL; the key comes from DEPO_API_KEY
    data.dataloader_num_workers=0
    trainer.v1.sampler.custom_sampler.path=pkg://depo_client.verl_v1
    trainer.v1.sampler.custom_sampler.name=DepoReplayBuffer  # or DepoReplayBufferAsync (async)

**`DepoDataset`** is verl's `RLHFDataset` whose rows come out in the order the service serves:
the k-th row the dataloader reads is slot `k % B` of step `k // B` (`B = data.gen_batch_size or
data.train_batch_size` unique prompts, one `Curriculum.batch(step, B)` call per step), whatever
index the sampler asks for. Selection happens before rollout. Each row carries `depo_step`, which
verl copies into every trajectory. Built for `data.val_files` it is a plain `RLHFDataset`.

**`DepoReplayBuffer`** is verl's `ReplayBuffer`; after it picks the batch to train on, it reads the
batch's trajectories from TransferQueue, sums each response's `rm_scores` (verl's
`token_level_scores`), groups them by `uid` and reports each group once, for the step it was
served in, with response lengths. It returns the service's figures (`depo/...`, see
`depo_client._figures`) in the metrics verl logs for the step.

Rows need a stable prompt id in `extra_info.index` (see `depo_client.verl.prompt_ids`). Requires a
reward computed at rollout time (rule-based or a reward model on its own resource pool), as verl's
own group filtering does.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from depo_client._client import DepoClient
from depo_client._fallback import Curriculum
from depo_client._figures import StepFigures
from depo_client._models import ServedPrompt
from depo_client.verl import _cfg_get, prompt_ids

log = logging.getLogger("depo_client")

__all__ = ["DEPO_STEP", "DepoDataset", "DepoReplayBuffer", "DepoReplayBufferAsync"]

DEPO_STEP = "depo_step"  # the row field that carries the served step into each trajectory

try:  # imported by name so this module type-checks and imports without verl at hand
    _RLHFDataset: Any = importlib.import_module("verl.utils.dataset.rl_dataset").RLHFDataset
except ImportError:  # pragma: no cover - exercised only without verl

    class _RLHFDataset:  # type: ignore[no-redef]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise ImportError("DepoDataset needs verl >= 0.9 (pip install verl)")


_lock = threading.Lock()
_serving: DepoDataset | None = None  # the train dataset of this process, for the replay buffer


def _files(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


class DepoDataset(_RLHFDataset):  # type: ignore[misc]
    """verl's `RLHFDataset`, read in the order the depo service serves (train files only).

    Settings come from `data.depo` (added with `+data.depo.KEY=...`), then the environment: `run`
    (`DEPO_RUN`), `url` (`DEPO_URL`), `partition` ("0"), `seed` (0), `spool_path`, `start_step`
    (0), `id_key` ("index"). `client` / `curriculum` may be passed directly (tests, launchers).
    The read position is the dataset's state, which torchdata's `StatefulDataLoader` saves in
    verl's checkpoint, so a resumed run asks for the next step.
    """

    def __init__(
        self,
        data_files: str | Sequence[str],
        tokenizer: Any,
        config: Any,
        processor: Any = None,
        max_samples: int = -1,
        *,
        client: DepoClient | None = None,
        curriculum: Curriculum | None = None,
    ) -> None:
        files = _files(data_files)  # before verl replaces them with local copies
        super().__init__(data_files, tokenizer, config, processor, max_samples)
        train, val = _files(_cfg_get(config, "train_files")), _files(_cfg_get(config, "val_files"))
        self.serving = files == train
        self.curriculum: Curriculum | None = None
        if not self.serving:
            return
        if train == val:
            raise ValueError(
                "DepoDataset serves data.train_files in the service's order, and data.val_files is "
                "the same list: give validation its own file so it is not drawn from the run"
            )
        cfg = _cfg_get(config, "depo")
        if int(_cfg_get(config, "dataloader_num_workers", 0)):
            raise ValueError("DepoDataset needs data.dataloader_num_workers=0 (one read position)")
        self.id_key = str(_cfg_get(cfg, "id_key", "index"))
        self.ids = prompt_ids(self, id_key=self.id_key)
        self.index = {pid: i for i, pid in enumerate(self.ids)}
        self.batch_size = int(
            _cfg_get(config, "gen_batch_size", None) or _cfg_get(config, "train_batch_size")
        )
        if self.batch_size > len(self.ids):
            raise ValueError(f"batch size {self.batch_size} exceeds the {len(self.ids)} prompts")
        if curriculum is None:
            run = _cfg_get(cfg, "run") or os.environ.get("DEPO_RUN")
            if not run:
                raise ValueError("DepoDataset needs the depo run: +data.depo.run=NAME or DEPO_RUN")
            curriculum = Curriculum(
                client if client is not None else DepoClient(_cfg_get(cfg, "url")),
                str(run),
                {pid: pid for pid in self.ids},  # the fallback draws ids; texts are not needed
                partition=str(_cfg_get(cfg, "partition", "0")),
                seed=int(_cfg_get(cfg, "seed", 0)),
                spool_path=_cfg_get(cfg, "spool_path"),
            )
        self.curriculum = curriculum
        self.start_step = int(_cfg_get(cfg, "start_step", 0))
        self.position = 0
        self._batches: OrderedDict[int, list[ServedPrompt]] = OrderedDict()
        self._read_lock = threading.Lock()
        global _serving
        with _lock:
            _serving = self

    def __getitem__(self, item: int) -> dict[str, Any]:
        if not self.serving:
            row: dict[str, Any] = super().__getitem__(item)
            return row
        with self._read_lock:
            step, slot = divmod(self.position, self.batch_size)
            step += self.start_step
            self.position += 1
            prompt = self._served(step)[slot]
        try:
            row = super().__getitem__(self.index[prompt.id])
        except KeyError:
            raise KeyError(
                f"the service served prompt id {prompt.id!r}, which the local dataset lacks: "
                f"upload the same ids as extra_info.{self.id_key}"
            ) from None
        row[DEPO_STEP] = step
        return row

    def _served(self, step: int) -> list[ServedPrompt]:
        if step not in self._batches:
            assert self.curriculum is not None
            self._batches[step] = self.curriculum.batch(step, self.batch_size)
            while len(self._batches) > 4:
                self._batches.popitem(last=False)
        return self._batches[step]

    def state_dict(self) -> dict[str, int]:
        return {"position": getattr(self, "position", 0)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.serving:
            self.position = int(state["position"])
            self._batches.clear()


def serving_dataset() -> DepoDataset:
    """The `DepoDataset` this process trains on (the replay buffer reports through it)."""
    with _lock:
        if _serving is None or _serving.curriculum is None:
            raise RuntimeError(
                "DepoReplayBuffer found no DepoDataset: set data.custom_cls.path="
                "pkg://depo_client.verl_v1 and data.custom_cls.name=DepoDataset"
            )
        return _serving


def _field(data: Any, name: str) -> list[Any]:
    value = data[name]
    return list(value.tolist() if hasattr(value, "tolist") else value)


class _Reporter:
    """Reads a sampled batch's trajectories from TransferQueue and reports each group once."""

    def __init__(self) -> None:
        self._figures: StepFigures | None = None
        self._reported: OrderedDict[str, None] = OrderedDict()

    def report(self, batch: Any) -> dict[str, float]:
        tq: Any = importlib.import_module("transfer_queue")
        dataset = serving_dataset()
        curriculum = dataset.curriculum
        assert curriculum is not None
        if self._figures is None:
            self._figures = StepFigures(curriculum)
        keys = [
            k for k, tag in zip(batch.keys, batch.tags, strict=True) if not tag.get("is_padding")
        ]
        if not keys:
            return {}
        fields = ["uid", "rm_scores", "response_mask", "index", DEPO_STEP]
        try:
            data = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=fields)
        except Exception as exc:  # tq raises its own errors for a missing field
            raise RuntimeError(
                "DepoReplayBuffer reads rm_scores, index and depo_step of the sampled "
                "trajectories: use DepoDataset and a reward computed at rollout time "
                "(rule-based, or reward.reward_model.enable_resource_pool=True)"
            ) from exc
        rewards = [float(v.sum()) for v in data["rm_scores"]]
        lengths = [int(v.sum()) for v in data["response_mask"]]
        uids, pids, steps = _field(data, "uid"), _field(data, "index"), _field(data, DEPO_STEP)
        # keys are {uid}_{session}_{output}: one response per session, its last output (multi-turn)
        last: dict[tuple[str, int], tuple[int, int]] = {}  # (uid, session) -> (output, row)
        for row, key in enumerate(keys):
            uid, session, output = key.rsplit("_", 2)
            prev = last.get((uid, int(session)))
            if prev is None or int(output) > prev[0]:
                last[(uid, int(session))] = (int(output), row)
        groups: dict[str, list[int]] = {}
        for _, (_, row) in sorted(last.items()):
            groups.setdefault(str(uids[row]), []).append(row)
        by_step: dict[int, list[dict[str, Any]]] = {}
        for uid, rows in groups.items():
            if uid in self._reported:
                continue
            self._reported[uid] = None
            pid, step = str(pids[rows[0]]), int(steps[rows[0]])
            by_step.setdefault(step, []).append(
                {
                    "prompt_id": pid,
                    "rewards": [rewards[r] for r in rows],
                    "response_lengths": [lengths[r] for r in rows],
                }
            )
        while len(self._reported) > 100_000:
            self._reported.popitem(last=False)
        for step, results in sorted(by_step.items()):
            curriculum.report(step, results)
        reported = [r["rewards"] for results in by_step.values() for r in results]
        counts = Counter({s: len(r) for s, r in by_step.items()})
        served = counts.most_common(1)[0][0] if counts else None
        return self._figures(served, reported)


try:
    _rb: Any = importlib.import_module("verl.trainer.ppo.v1.replay_buffer")
    _ReplayBuffer: Any = _rb.ReplayBuffer
    _ReplayBufferAsync: Any = _rb.ReplayBufferAsync
except ImportError:  # pragma: no cover - exercised only without verl >= 0.9

    class _ReplayBuffer:  # type: ignore[no-redef]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise ImportError("DepoReplayBuffer needs verl >= 0.9 and TransferQueue")

    _ReplayBufferAsync = _ReplayBuffer


class _Reporting:
    """Reports what verl's replay buffer hands to training, then returns it unchanged."""

    depo: _Reporter

    def sample(self, global_steps: int, partition_id: str, batch_size: int) -> tuple[Any, dict]:  # type: ignore[type-arg]
        batch, metrics = super().sample(global_steps, partition_id, batch_size)  # type: ignore[misc]
        if partition_id == "train":
            metrics.update(self.depo.report(batch))
        return batch, metrics


class DepoReplayBuffer(_Reporting, _ReplayBuffer):  # type: ignore[misc]
    """verl's sync `ReplayBuffer` that reports what it hands to training (`trainer_mode=sync`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.depo = _Reporter()


class DepoReplayBufferAsync(_Reporting, _ReplayBufferAsync):  # type: ignore[misc]
    """verl's `ReplayBufferAsync` that reports what it hands to training (async trainer modes).

    Groups verl evicts as stale (`max_off_policy_strategy=drop`) never reach `sample` and are not
    reported; their leases expire on the service.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.depo = _Reporter()
