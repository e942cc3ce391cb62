"""TRL integration: `GRPOTrainer` trains on the batches depo serves and reports every group.

    from depo_client import Curriculum, DepoClient
    from depo_client.trl import DepoGRPOTrainer

    trainer = DepoGRPOTrainer(
        model=..., reward_funcs=..., args=GRPOConfig(...),
        train_dataset=ds,  # with "id" and "prompt" columns
        curriculum=Curriculum(DepoClient(), "my-run", zip(ds["id"], ds["prompt"])),
    )
    trainer.train()

Two hooks change, nothing else:

* `_get_train_sampler` returns a `DepoSampler`: one `Curriculum.batch(step, B)` call per
  generation batch (B = generation_batch_size // num_generations unique prompts), laid out exactly
  as TRL's `RepeatSampler` (each index `num_generations` times in a row, the chunk repeated
  `num_iterations * steps_per_generation` times). Every rank asks for the same step and the
  service answers every rank with the same stored batch, so groups line up across processes;
  while the service is down, every rank draws the same seeded local batch.
* `_calculate_rewards` calls TRL's, then the main process reports each group's G weighted rewards
  (what TRL's advantage sees) for the step the group was served in, and logs the service's
  figures (`depo/...`, see `depo_client._figures`) into the trainer's log history.

These are private TRL methods: `depo_client.trl_stream` does the same through public surfaces only
(a streaming dataset and a reward function) and is the route to prefer; the mixin stays for
map-style datasets and for reporting the exact weighted rewards of several reward functions.

Requires `pip install 'depo-client[trl]'`. The dataset needs an id column (`id_column`) holding the
ids uploaded to the service.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler

from depo_client._fallback import Curriculum
from depo_client._figures import StepFigures

# Imported by name so this module type-checks without trl's and accelerate's sources at hand.
GRPOTrainer: Any = importlib.import_module("trl").GRPOTrainer
gather_object: Any = importlib.import_module("accelerate.utils").gather_object

log = logging.getLogger("depo_client")

__all__ = ["DepoGRPOMixin", "DepoGRPOTrainer", "DepoSampler"]


class DepoSampler(Sampler[int]):
    """Dataset indices of the prompts the service serves, in `RepeatSampler`'s layout.

    The step passed to the service is the generation batch's ordinal, counted from `start_step`
    and continuing across epochs, so a retry, a second rank, or a resumed run re-asking for a step
    gets the stored batch back.
    """

    def __init__(
        self,
        curriculum: Curriculum,
        ids: Sequence[str],
        *,
        mini_repeat_count: int,
        batch_size: int,
        repeat_count: int = 1,
        start_step: int = 0,
    ) -> None:
        self.curriculum = curriculum
        self.index = {str(pid): i for i, pid in enumerate(ids)}
        if len(self.index) != len(ids):
            raise ValueError("the dataset's id column has duplicates")
        self.num_samples = len(ids)
        self.mini_repeat_count = mini_repeat_count
        self.batch_size = batch_size
        self.repeat_count = repeat_count
        self.step = start_step
        self.served: OrderedDict[int, tuple[str, ...]] = OrderedDict()

    def __iter__(self) -> Iterator[int]:
        for _ in range(self.num_samples // self.batch_size):
            step = self.step
            self.step += 1
            prompts = self.curriculum.batch(step, self.batch_size)
            try:
                chunk = [self.index[p.id] for p in prompts]
            except KeyError as exc:
                raise KeyError(
                    f"the service served prompt id {exc.args[0]!r}, which the local dataset lacks: "
                    "upload the same ids as the trainer's id column"
                ) from None
            self.served[step] = tuple(p.id for p in prompts)
            while len(self.served) > 64:
                self.served.popitem(last=False)
            for _ in range(self.repeat_count):
                for index in chunk:
                    for _ in range(self.mini_repeat_count):
                        yield index

    def __len__(self) -> int:
        full = (self.num_samples // self.batch_size) * self.batch_size
        return full * self.mini_repeat_count * self.repeat_count

    def step_of(self, ids: Sequence[str]) -> int | None:
        """The oldest recent step whose batch holds all of `ids`."""
        wanted = set(ids)
        for step, served in self.served.items():
            if wanted <= set(served):
                return step
        return None


class DepoGRPOMixin:
    """Mix into a `GRPOTrainer` subclass; set `curriculum` (and `depo_id_column`) before use."""

    curriculum: Curriculum
    depo_id_column: str = "id"
    depo_sampler: DepoSampler | None = None
    depo_figures: StepFigures | None = None
    _depo_reported: set[int]

    def _get_train_sampler(self, dataset: Any = None) -> Sampler[int]:
        trainer: Any = self
        if dataset is None:
            dataset = trainer.train_dataset
        ids = [str(i) for i in dataset[self.depo_id_column]]
        args = trainer.args
        self.depo_sampler = DepoSampler(
            self.curriculum,
            ids,
            mini_repeat_count=trainer.num_generations,
            batch_size=args.generation_batch_size // trainer.num_generations,
            repeat_count=trainer.num_iterations * args.steps_per_generation,
        )
        return self.depo_sampler

    def _calculate_rewards(
        self, inputs: Any, prompts: Any, completions: Any, completion_ids_list: Any
    ) -> torch.Tensor:
        trainer: Any = self
        rewards_per_func: torch.Tensor = super()._calculate_rewards(  # type: ignore[misc]
            inputs, prompts, completions, completion_ids_list
        )
        if not trainer.model.training:
            return rewards_per_func
        ids = gather_object([str(x[self.depo_id_column]) for x in inputs])
        if trainer.accelerator.is_main_process:
            weights = trainer.reward_weights.to(rewards_per_func.device).unsqueeze(0)
            rewards = (rewards_per_func * weights).nansum(dim=1)
            unscorable = torch.isnan(rewards_per_func).all(dim=1)
            self._depo_report(ids, rewards.tolist(), unscorable.tolist())
        return rewards_per_func

    def _depo_report(self, ids: list[str], rewards: list[float], unscorable: list[bool]) -> None:
        groups: dict[str, list[float]] = {}
        for pid, r, skip in zip(ids, rewards, unscorable, strict=True):
            if not skip and math.isfinite(r):
                groups.setdefault(pid, []).append(float(r))
        sampler = self.depo_sampler
        step = sampler.step_of(list(groups)) if sampler is not None else None
        if step is None:
            log.warning("depo: rewards for prompts not in a recent served batch; not reported")
            return
        if sampler is not None:  # forget this and older steps: each generation batch reports once
            for s in [s for s in sampler.served if s <= step]:
                del sampler.served[s]
        kept = {k: v for k, v in groups.items() if v}
        self.curriculum.report(step, kept)
        log_metric = getattr(self, "_log_metric", None)  # TRL's sink for reward-side metrics
        if log_metric is not None:
            if self.depo_figures is None:
                self.depo_figures = StepFigures(self.curriculum)
            for name, value in self.depo_figures(step, list(kept.values())).items():
                log_metric(name, value)


class DepoGRPOTrainer(DepoGRPOMixin, GRPOTrainer):  # type: ignore[misc]
    """`trl.GRPOTrainer` on depo's batches. Extra keywords: `curriculum`, `id_column`."""

    def __init__(self, *args: Any, curriculum: Curriculum, id_column: str = "id", **kwargs: Any):
        self.curriculum = curriculum
        self.depo_id_column = id_column
        super().__init__(*args, **kwargs)
