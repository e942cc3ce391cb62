"""verl integration: a curriculum sampler on depo's batches, and a DEPO-style scorer shim.

**`DepoCurriculumSampler`** (verl <= 0.7.1) plugs into verl's `RayPPOTrainer` through the data
config; no trainer code changes::

    data.sampler.class_path=pkg://depo_client.verl
    data.sampler.class_name=DepoCurriculumSampler
    +data.sampler.run=my-run            # the depo run (created with group_size = rollout.n)
    +data.sampler.url=http://depo:8000  # or DEPO_URL; the key comes from DEPO_API_KEY
    data.dataloader_num_workers=0       # verl requires it for curriculum samplers

Every row of the training parquet needs a stable prompt id in `extra_info.index`, the id that
was uploaded to the service (verl defaults a missing index to 0, so the sampler refuses datasets
whose ids are missing or repeated). One `Curriculum.batch(step, B)` call per dataloader batch,
`B = data.gen_batch_size or data.train_batch_size` unique prompts (verl repeats each prompt
`actor_rollout_ref.rollout.n` times itself). After each step verl calls `update(batch)`: the
rewards (`token_level_scores` summed over the response) are grouped by `uid` and reported, with
each group's mean token log-prob and response lengths when the batch carries them.

**`DepoScorer`** has the interface of the DEPO recipe's difficulty scorer,
`predict(prompts) -> list[float]` and `update(prompts, mean_k, avg_log_probs)`, so a trainer
built on it can call the service instead of a GPU scorer worker.

verl >= 0.8 removed the sampler hook (`data.sampler`): on verl 0.9 use `depo_client.verl_v1`
(`DepoDataset` + `DepoReplayBuffer`), which reaches the same result through the V1 trainer's
`data.custom_cls` and `trainer.v1.sampler.custom_sampler`.

Requires `pip install 'depo-client[verl]'`.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from typing import Any

from torch.utils.data import Sampler

from depo_client._base import PromptLike
from depo_client._client import DepoClient
from depo_client._exceptions import UNREACHABLE
from depo_client._fallback import Curriculum
from depo_client._models import OutcomeAck

log = logging.getLogger("depo_client")
PREDICT_CHUNK = 10_000  # prompt ids per POST /predict (the service takes up to 100,000)

__all__ = ["DepoCurriculumSampler", "DepoScorer", "MissingPromptIds", "prompt_ids"]

try:  # verl <= 0.7.1; imported by name so this module type-checks without verl at hand
    _CurriculumBase: Any = importlib.import_module(
        "verl.experimental.dataset.sampler"
    ).AbstractCurriculumSampler
except ImportError:  # no verl (or verl >= 0.8): the scorer still works, the sampler refuses

    class _CurriculumBase(Sampler[int]):  # type: ignore[no-redef]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise ImportError(
                "DepoCurriculumSampler needs verl <= 0.7.1 "
                "(verl.experimental.dataset.sampler.AbstractCurriculumSampler); "
                "verl >= 0.8 removed the data.sampler hook: on verl 0.9 use "
                "depo_client.verl_v1 (DepoDataset + DepoReplayBuffer)"
            )


class MissingPromptIds(ValueError):
    """The dataset has no stable prompt id (`extra_info.index`) per row."""


def _extra_info_index(extra: Any) -> Any:
    if isinstance(extra, Mapping):
        return extra.get("index")
    return None


def prompt_ids(data_source: Sized, *, id_key: str = "index") -> list[str]:
    """The stable prompt id of every row: `extra_info[id_key]`, as a string.

    Reads the `extra_info` column of an `RLHFDataset`'s dataframe when there is one (no row
    processing), otherwise each row's `extra_info`. Raises `MissingPromptIds` when a row has no id
    or ids repeat (verl silently defaults a missing `extra_info.index` to 0).
    """
    frame = getattr(data_source, "dataframe", None)
    extras: Iterable[Any]
    if frame is not None and "extra_info" in getattr(frame, "column_names", ()):
        extras = frame["extra_info"]
    elif frame is not None and hasattr(frame, "column_names"):
        extras = [None] * len(frame)
    else:
        rows: Any = data_source
        extras = (rows[i].get("extra_info") for i in range(len(rows)))
    ids: list[str] = []
    missing: list[int] = []
    for row, extra in enumerate(extras):
        value = extra.get(id_key) if isinstance(extra, Mapping) else None
        if value is None or value == "":
            missing.append(row)
            continue
        ids.append(str(value))
    if missing:
        raise MissingPromptIds(
            f"{len(missing)} of {len(data_source)} rows (first: row {missing[0]}) have no "
            f"extra_info.{id_key}: depo needs a stable prompt id per row, the id uploaded to the "
            f"service (verl would default it to 0). Add it to the parquet's extra_info column."
        )
    if len(set(ids)) != len(ids):
        dup = next(pid for pid, n in Counter(ids).items() if n > 1)
        raise MissingPromptIds(
            f"extra_info.{id_key} repeats (e.g. {dup!r}): depo needs one distinct id per row "
            "(did the rows get verl's default index 0?)"
        )
    return ids


def _cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
    if cfg is None:
        return default
    getter = getattr(cfg, "get", None)
    value = getter(key, default) if getter is not None else getattr(cfg, key, default)
    return default if value is None else value


class DepoCurriculumSampler(_CurriculumBase):  # type: ignore[misc]
    """verl's `AbstractCurriculumSampler` on the batches the service serves.

    Settings come from `data.sampler` (added with `+data.sampler.KEY=...`), then the environment:
    `run` (`DEPO_RUN`), `url` (`DEPO_URL`), `partition` ("0"), `seed` (0), `spool_path`,
    `start_step` (0), `id_key` ("index": the key in `extra_info`). `client` and `curriculum`
    may be passed directly instead (tests, custom launchers).

    The step passed to the service is the dataloader batch's ordinal, counted from `start_step`
    across epochs. `state_dict()` / `load_state_dict()` carry it through verl's checkpoints
    (torchdata's `StatefulDataLoader` saves the sampler's state), so a resumed run asks for the
    next step instead of replaying the epoch.
    """

    def __init__(
        self,
        data_source: Sized,
        data_config: Any,
        *,
        client: DepoClient | None = None,
        curriculum: Curriculum | None = None,
    ) -> None:
        cfg = _cfg_get(data_config, "sampler")
        self.data_source = data_source
        self.id_key = str(_cfg_get(cfg, "id_key", "index"))
        self.ids = prompt_ids(data_source, id_key=self.id_key)
        self.index = {pid: i for i, pid in enumerate(self.ids)}
        self.batch_size = int(
            _cfg_get(data_config, "gen_batch_size", None)
            or _cfg_get(data_config, "train_batch_size")
        )
        if self.batch_size > len(self.ids):
            raise ValueError(
                f"batch size {self.batch_size} exceeds the dataset's {len(self.ids)} prompts"
            )
        if curriculum is None:
            run = _cfg_get(cfg, "run") or os.environ.get("DEPO_RUN")
            if not run:
                raise ValueError(
                    "DepoCurriculumSampler needs the depo run: +data.sampler.run=NAME or DEPO_RUN"
                )
            if client is None:
                client = DepoClient(_cfg_get(cfg, "url"))
            spool = _cfg_get(cfg, "spool_path")
            curriculum = Curriculum(
                client,
                str(run),
                {pid: pid for pid in self.ids},  # the fallback draws ids; texts are not needed
                partition=str(_cfg_get(cfg, "partition", "0")),
                seed=int(_cfg_get(cfg, "seed", 0)),
                spool_path=spool,
            )
        self.curriculum = curriculum
        self.step = int(_cfg_get(cfg, "start_step", 0))
        self._steps_per_epoch = len(self.ids) // self.batch_size
        self._done_in_epoch = 0
        self._resume = False
        self.served: OrderedDict[int, list[str]] = OrderedDict()

    # -- Sampler --------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[int]:
        if not self._resume:
            self._done_in_epoch = 0
        self._resume = False
        while self._done_in_epoch < self._steps_per_epoch:
            step = self.step
            prompts = self.curriculum.batch(step, self.batch_size)
            try:
                chunk = [self.index[p.id] for p in prompts]
            except KeyError as exc:
                raise KeyError(
                    f"the service served prompt id {exc.args[0]!r}, which the local dataset "
                    f"lacks: upload the same ids as extra_info.{self.id_key}"
                ) from None
            self.step += 1
            self._done_in_epoch += 1
            self.served[step] = [p.id for p in prompts]
            while len(self.served) > 64:
                self.served.popitem(last=False)
            yield from chunk

    def __len__(self) -> int:
        return self._steps_per_epoch * self.batch_size

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "done_in_epoch": self._done_in_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step = int(state["step"])
        self._done_in_epoch = int(state["done_in_epoch"])
        self._resume = True

    # -- AbstractCurriculumSampler --------------------------------------------------------------

    def update(self, batch: Any) -> None:
        """Report the step's groups: rewards by `uid`, the prompt id from `extra_info`."""
        by_step: dict[int, list[dict[str, Any]]] = {}
        unknown: list[str] = []
        for result in self.groups(batch):
            pid = result["prompt_id"]
            step = next((s for s, ids in self.served.items() if pid in ids), None)  # oldest
            if step is None:
                unknown.append(pid)
                continue
            by_step.setdefault(step, []).append(result)
            self.served[step].remove(pid)  # each served prompt reports once
            if not self.served[step]:
                del self.served[step]
        if unknown:
            log.warning(
                "depo: %d group(s) for prompts not in a recently served batch; not reported "
                "(first: %r)",
                len(unknown),
                unknown[0],
            )
        for step, results in sorted(by_step.items()):
            self.curriculum.report(step, results)

    def groups(self, batch: Any) -> list[dict[str, Any]]:
        """One `{"prompt_id", "rewards", "mean_logprob"?, "response_lengths"?}` per `uid`."""
        tensors = batch.batch
        non_tensors = batch.non_tensor_batch
        if "uid" not in non_tensors:
            raise KeyError("the batch has no 'uid': is this verl's RayPPOTrainer batch?")
        rewards = tensors["token_level_scores"].sum(dim=-1).float().cpu().tolist()
        uids = [str(u) for u in non_tensors["uid"]]
        pids = self._row_ids(non_tensors, len(uids))
        keys = set(tensors.keys())
        mask = tensors["response_mask"] if "response_mask" in keys else None
        lengths = mask.sum(dim=-1).long().cpu().tolist() if mask is not None else None
        logprob: list[float] | None = None
        if mask is not None and "old_log_probs" in keys:
            lp = tensors["old_log_probs"].float()
            m = mask.to(lp.dtype)
            logprob = ((lp * m).sum(-1) / m.sum(-1).clamp(min=1)).cpu().tolist()

        by_uid: dict[str, list[int]] = {}
        for row, uid in enumerate(uids):
            by_uid.setdefault(uid, []).append(row)
        out: list[dict[str, Any]] = []
        for rows in by_uid.values():
            pid = pids[rows[0]]
            if any(pids[r] != pid for r in rows):
                raise ValueError(f"rows of one uid carry different prompt ids: {pid!r}")
            keep = [r for r in rows if math.isfinite(rewards[r])]
            if not keep:
                continue
            result: dict[str, Any] = {"prompt_id": pid, "rewards": [rewards[r] for r in keep]}
            if lengths is not None:
                result["response_lengths"] = [int(lengths[r]) for r in keep]
            if logprob is not None:
                lps = [logprob[r] for r in keep if math.isfinite(logprob[r])]
                if lps:
                    result["mean_logprob"] = sum(lps) / len(lps)
            out.append(result)
        return out

    def _row_ids(self, non_tensors: Mapping[str, Any], n: int) -> list[str]:
        if "extra_info" in non_tensors:
            ids = [_extra_info_index(e) for e in non_tensors["extra_info"]]
            if ids and all(i is not None for i in ids):
                return [str(i) for i in ids]
        if "index" in non_tensors:  # RLHFDataset's copy of extra_info.index
            return [str(i) for i in non_tensors["index"]]
        raise MissingPromptIds(
            f"the batch has no extra_info.{self.id_key} (nor 'index') for its {n} rows"
        )


class DepoScorer:
    """The DEPO recipe's scorer interface, answered by the service.

    `predict(prompts)` returns each prompt's predicted pass rate (the run's posterior mean for
    that prompt, from one `POST /v1/runs/{run}/predict`); `update(prompts, mean_k,
    avg_log_probs)` reports the groups that were rolled out. Prompts are ids, texts of the local
    copy, or mappings with `id` / `extra_info.index` / `index`.

    `mean_k` is the mean reward of a prompt's k rollouts. The service counts successes from the
    rewards themselves, so `update` sends `round(mean_k * k)` rewards of 1.0 and the rest 0.0
    (k = the run's `group_size` unless given): exact for 0/1 rewards. Pass `rewards=` (one list
    per prompt) to send the real ones instead. Unreachable service: `predict` answers
    `default_pass_rate` and `update` spools (see `Curriculum`); training goes on.
    """

    def __init__(
        self,
        client: DepoClient,
        run: str,
        prompts: Mapping[str, str] | Iterable[PromptLike],
        *,
        group_size: int | None = None,
        start_step: int = 0,
        default_pass_rate: float = 0.5,
        spool_path: str | os.PathLike[str] | None = None,
        max_workers: int | None = None,  # unused since predict is one request; kept for callers
    ) -> None:
        self.client = client
        self.run = run
        self.curriculum = Curriculum(client, run, prompts, spool_path=spool_path)
        pool: list[tuple[str, str]] = self.curriculum._pool
        self._ids = {pid for pid, _ in pool}
        self._by_text = {text: pid for pid, text in pool}
        self.group_size = group_size
        self.step = start_step
        self.default_pass_rate = default_pass_rate

    def resolve(self, prompt: Any) -> str:
        """The prompt id of an id, a text of the local copy, or a row mapping."""
        if isinstance(prompt, Mapping):
            for candidate in (
                prompt.get("id"),
                _extra_info_index(prompt.get("extra_info")),
                prompt.get("index"),
            ):
                if candidate is not None and str(candidate) in self._ids:
                    return str(candidate)
            raise KeyError(f"no known prompt id in {sorted(prompt)}")
        key = str(prompt)
        if key in self._ids:
            return key
        if key in self._by_text:
            return self._by_text[key]
        raise KeyError(f"unknown prompt (neither an uploaded id nor a local text): {key[:80]!r}")

    def predict(self, prompts: Sequence[Any]) -> list[float]:
        """Predicted pass rate per prompt, in order; `default_pass_rate` while unreachable."""
        ids = [self.resolve(p) for p in prompts]
        if not ids:
            return []
        try:
            rates: list[float] = []
            for start in range(0, len(ids), PREDICT_CHUNK):
                got = self.client.predict(self.run, prompt_ids=ids[start : start + PREDICT_CHUNK])
                rates.extend(x.pass_rate for x in got.items)
            return rates
        except UNREACHABLE as exc:
            log.warning(
                "depo unreachable (%s): predicting %s for %d prompts",
                exc,
                self.default_pass_rate,
                len(ids),
            )
            return [self.default_pass_rate] * len(ids)

    def update(
        self,
        prompts: Sequence[Any],
        mean_k: Sequence[float],
        avg_log_probs: Sequence[float | None] | None = None,
        *,
        step: int | None = None,
        k: int | None = None,
        rewards: Sequence[Sequence[float]] | None = None,
    ) -> OutcomeAck | None:
        """Report one group per prompt for `step` (default: one more than the last update).

        Give the trainer's global step when there is one: a group counts once per
        `(step, prompt)`, so a restarted trainer that re-counts from 0 would report duplicates.
        """
        n = len(prompts)
        if len(mean_k) != n or (avg_log_probs is not None and len(avg_log_probs) != n):
            raise ValueError("prompts, mean_k and avg_log_probs must have the same length")
        if rewards is not None and len(rewards) != n:
            raise ValueError("rewards needs one list per prompt")
        if step is None:
            step = self.step
        self.step = step + 1
        size = k or self.group_size
        if size is None and rewards is None:
            size = self.group_size = self.client.get_run(self.run).group_size
        results: list[dict[str, Any]] = []
        for i, prompt in enumerate(prompts):
            if rewards is not None:
                group = [float(r) for r in rewards[i]]
            else:
                m = float(mean_k[i])
                if not math.isfinite(m):
                    continue
                assert size is not None
                wins = min(size, max(0, round(m * size)))
                group = [1.0] * wins + [0.0] * (size - wins)
            result: dict[str, Any] = {"prompt_id": self.resolve(prompt), "rewards": group}
            lp = avg_log_probs[i] if avg_log_probs is not None else None
            if lp is not None and math.isfinite(float(lp)):
                result["mean_logprob"] = float(lp)
            results.append(result)
        return self.curriculum.report(step, results)

    def close(self) -> None:
        self.curriculum.close()
