"""TRL through public surfaces only: a streaming dataset of served batches and a reporting reward.

    from depo_client import Curriculum, DepoClient
    from depo_client.trl_stream import DepoReward, served_dataset

    curriculum = Curriculum(DepoClient(), "my-run", zip(ids, texts))
    B = args.generation_batch_size // args.num_generations   # unique prompts per generation batch
    trainer = GRPOTrainer(
        model=..., args=args,          # args.max_steps is required, args.shuffle_dataset=False
        train_dataset=served_dataset(curriculum, B),
        reward_funcs=DepoReward(curriculum, my_reward),        # weights=[...] for several
    )

`served_dataset` is a `datasets.IterableDataset` that yields step after step of
`Curriculum.batch(step, B)`; TRL (>= 1.9) streams it through `repeat_iterable_dataset`, whose
`batch_size` is this B, so each generation batch is one served step, each prompt
`num_generations` times in a row. Every process streams the same steps and the service answers
each with the stored batch, so the processes' slices line up. Rows carry `id`, `prompt` (or the
local row given in `rows`) and `depo_step`.

`DepoReward` computes the weighted sum of the reward functions it wraps (what TRL's advantage
sees when it is the only reward function), gathers the generation batch's ids, steps and rewards
on the main process (`accelerate.utils.gather_object`) and reports each group once, for the step
it was served in; then logs the service's figures through TRL's `log_metric`, so they land in
`trainer.state.log_history` and the trainer's W&B / TensorBoard. Rows without `depo_step`
(evaluation) are scored, not reported.
"""

from __future__ import annotations

import importlib
import logging
import math
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from depo_client._fallback import Curriculum
from depo_client._figures import StepFigures

log = logging.getLogger("depo_client")

__all__ = ["DEPO_STEP", "DepoReward", "served_dataset"]

DEPO_STEP = "depo_step"


def served_dataset(
    curriculum: Curriculum,
    batch_size: int,
    *,
    rows: Mapping[str, Mapping[str, Any]] | None = None,
    start_step: int = 0,
    steps: int | None = None,
    id_column: str = "id",
    prompt_column: str = "prompt",
) -> Any:
    """A `datasets.IterableDataset` of the served batches, `batch_size` prompts a step.

    `rows` maps prompt ids to the local rows to train on (conversational prompts, answers for the
    reward); without it a row is `{prompt_column: the service's text}`. The stream is endless
    unless `steps` is given (TRL stops at `max_steps`).
    """
    datasets: Any = importlib.import_module("datasets")
    stream = _ServedStream(
        curriculum, batch_size, rows, start_step, steps, id_column, prompt_column
    )
    return datasets.IterableDataset.from_generator(stream)


class _ServedStream:
    """The generator of `served_dataset`; pickles (for `datasets`' fingerprint) without a client."""

    def __init__(
        self,
        curriculum: Curriculum,
        batch_size: int,
        rows: Mapping[str, Mapping[str, Any]] | None,
        start_step: int,
        steps: int | None,
        id_column: str,
        prompt_column: str,
    ) -> None:
        self.curriculum: Curriculum | None = curriculum
        self.batch_size, self.rows = batch_size, rows
        self.start_step, self.steps = start_step, steps
        self.id_column, self.prompt_column = id_column, prompt_column
        self.token = uuid.uuid4().hex

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("curriculum", "rows")}
        state["run"] = self.curriculum.run if self.curriculum is not None else None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.curriculum, self.rows = None, None

    def __call__(self) -> Iterator[dict[str, Any]]:
        curriculum = self.curriculum
        if curriculum is None:
            raise RuntimeError(
                "served_dataset streams through its process's Curriculum and cannot be copied to "
                "another process: keep dataloader_num_workers=0 (TRL's default for iterable sets)"
            )
        rows, step = self.rows, self.start_step
        while self.steps is None or step < self.start_step + self.steps:
            for prompt in curriculum.batch(step, self.batch_size):
                if rows is not None:
                    if prompt.id not in rows:
                        raise KeyError(
                            f"the service served prompt id {prompt.id!r}, which `rows` lacks: "
                            "upload the same ids as the local rows"
                        )
                    row = dict(rows[prompt.id])
                else:
                    row = {self.prompt_column: prompt.text}
                row[self.id_column] = prompt.id
                row[DEPO_STEP] = step
                yield row
            step += 1


RewardFunc = Callable[..., Sequence[float | None]]


class DepoReward:
    """A TRL reward function: the weighted sum of `funcs`, each group reported to the service."""

    def __init__(
        self,
        curriculum: Curriculum,
        *funcs: RewardFunc,
        weights: Sequence[float] | None = None,
        id_column: str = "id",
        figures: bool = True,
        name: str = "depo_reward",
    ) -> None:
        if not funcs:
            raise ValueError("DepoReward needs at least one reward function")
        if weights is not None and len(weights) != len(funcs):
            raise ValueError(f"{len(weights)} weights for {len(funcs)} reward functions")
        self.curriculum = curriculum
        self.funcs = funcs
        self.weights = list(weights) if weights is not None else [1.0] * len(funcs)
        self.id_column = id_column
        self.figures = StepFigures(curriculum) if figures else None
        self.__name__ = name
        self._reported: OrderedDict[tuple[int, str], None] = OrderedDict()

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        totals = [0.0] * len(completions)
        scored = [False] * len(completions)
        for func, weight in zip(self.funcs, self.weights, strict=True):
            out = func(prompts=prompts, completions=completions, **kwargs)
            for i, r in enumerate(out):
                if r is not None and not math.isnan(float(r)):
                    totals[i] += weight * float(r)
                    scored[i] = True
        rewards = [t if s else math.nan for t, s in zip(totals, scored, strict=True)]
        if DEPO_STEP in kwargs:
            mixed = sorted(set(kwargs[DEPO_STEP]))
            if len(mixed) > 1:
                raise ValueError(
                    f"one generation batch holds rows of served steps {mixed}: "
                    "set GRPOConfig(shuffle_dataset=False) (a shuffle buffer reorders the stream) "
                    "and served_dataset's batch_size to generation_batch_size // num_generations"
                )
            rows = list(zip(kwargs[DEPO_STEP], kwargs[self.id_column], rewards, strict=True))
            self._report(rows, kwargs.get("log_metric"))
        return rewards

    def _report(self, rows: list[tuple[Any, Any, float]], log_metric: Any) -> None:
        accelerate_utils: Any = importlib.import_module("accelerate.utils")
        state: Any = importlib.import_module("accelerate").PartialState()
        if state.num_processes > 1:
            rows = accelerate_utils.gather_object(rows)
        if not state.is_main_process:
            return
        by_step: dict[int, dict[str, list[float]]] = {}
        for step, pid, reward in rows:
            key = (int(step), str(pid))
            if key in self._reported:  # the service would count it once anyway
                continue
            group = by_step.setdefault(key[0], {}).setdefault(key[1], [])
            if math.isfinite(reward):
                group.append(reward)
        reported: list[list[float]] = []
        for step, groups in sorted(by_step.items()):
            kept = {pid: g for pid, g in groups.items() if g}
            self.curriculum.report(step, kept)
            reported.extend(kept.values())
            for pid in groups:
                self._reported[(step, pid)] = None
        while len(self._reported) > 100_000:
            self._reported.popitem(last=False)
        if self.figures is not None and log_metric is not None and by_step:
            served = max(by_step, key=lambda s: len(by_step[s]))
            for name, value in self.figures(served, reported).items():
                log_metric(name, value)
