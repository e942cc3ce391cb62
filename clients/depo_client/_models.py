"""Typed, immutable results. Each `from_json` reads one response body of the API."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from depo_client._exceptions import InvalidRequest


def _dt(value: Any) -> datetime:
    return datetime.fromisoformat(str(value))


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True, slots=True)
class DifficultyField:
    """A numeric metadata field read as each prompt's known difficulty, and its two ends."""

    name: str
    easiest: float
    hardest: float

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "easiest": self.easiest, "hardest": self.hardest}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DifficultyField:
        return cls(name=str(d["name"]), easiest=float(d["easiest"]), hardest=float(d["hardest"]))


@dataclass(frozen=True, slots=True)
class Dataset:
    name: str
    embedder: str
    prompt_count: int
    embedded: int
    created_at: datetime
    labelled: int = 0  # prompts with a known difficulty
    difficulty_field: DifficultyField | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Dataset:
        spec = d.get("difficulty_field")
        return cls(
            name=str(d["name"]),
            embedder=str(d["embedder"]),
            prompt_count=int(d["prompt_count"]),
            embedded=int(d["embedded"]),
            created_at=_dt(d["created_at"]),
            labelled=int(d.get("labelled", 0)),
            difficulty_field=DifficultyField.from_json(spec) if spec else None,
        )


@dataclass(frozen=True, slots=True)
class UploadResult:
    """Counts summed over every chunk of one `upload_prompts` call."""

    inserted: int
    updated: int
    unchanged: int
    prompt_count: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> UploadResult:
        return cls(
            inserted=int(d["inserted"]),
            updated=int(d["updated"]),
            unchanged=int(d["unchanged"]),
            prompt_count=int(d["prompt_count"]),
        )

    def __add__(self, other: UploadResult) -> UploadResult:
        return UploadResult(
            inserted=self.inserted + other.inserted,
            updated=self.updated + other.updated,
            unchanged=self.unchanged + other.unchanged,
            prompt_count=other.prompt_count,
        )


@dataclass(frozen=True, slots=True)
class Prompt:
    id: str
    text: str
    metadata: dict[str, Any] | None
    content_hash: str
    index: int
    created_at: datetime
    updated_at: datetime
    prior_pass_rate: float | None = None  # its known difficulty

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Prompt:
        meta = d.get("metadata")
        return cls(
            id=str(d["id"]),
            text=str(d["text"]),
            metadata=dict(meta) if isinstance(meta, Mapping) else None,
            content_hash=str(d["content_hash"]),
            index=int(d["index"]),
            created_at=_dt(d["created_at"]),
            updated_at=_dt(d["updated_at"]),
            prior_pass_rate=_opt_float(d.get("prior_pass_rate")),
        )


@dataclass(frozen=True, slots=True)
class RunHistory:
    """A `history_from` run's starting counts: their source and the weight they enter at."""

    source: str
    source_seq: int
    source_step: int
    prompts: int
    strength: float
    """kappa: n rollouts of a prompt's source history count at weight kappa / (kappa + n)."""
    weight: float
    """The weight of one group's worth of source history (n = group_size), in [0, 1]."""
    learned: bool
    """False while the weight is the default, before a fit had enough evidence."""
    weight_prompts: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RunHistory:
        return cls(
            source=str(d["source"]),
            source_seq=int(d["source_seq"]),
            source_step=int(d["source_step"]),
            prompts=int(d["prompts"]),
            strength=float(d["strength"]),
            weight=float(d["weight"]),
            learned=bool(d["learned"]),
            weight_prompts=int(d["weight_prompts"]),
        )


@dataclass(frozen=True, slots=True)
class Run:
    name: str
    dataset: str
    group_size: int
    success_threshold: float
    strategy: str
    selection: dict[str, Any]
    created_at: datetime
    steps_seen: int
    last_step: int | None
    outcomes: int
    """Groups recorded (duplicates are not counted)."""
    rollouts: int
    successes: int
    zero_variance_share: float | None
    batches_served: int
    epoch: int
    init_from: str | None = None
    history_from: str | None = None
    history: RunHistory | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Run:
        hist = d.get("history")
        return cls(
            name=str(d["name"]),
            dataset=str(d["dataset"]),
            group_size=int(d["group_size"]),
            success_threshold=float(d["success_threshold"]),
            strategy=str(d["strategy"]),
            selection=dict(d.get("selection") or {}),
            created_at=_dt(d["created_at"]),
            steps_seen=int(d["steps_seen"]),
            last_step=_opt_int(d.get("last_step")),
            outcomes=int(d["outcomes"]),
            rollouts=int(d["rollouts"]),
            successes=int(d["successes"]),
            zero_variance_share=_opt_float(d.get("zero_variance_share")),
            batches_served=int(d["batches_served"]),
            epoch=int(d["epoch"]),
            init_from=_opt_str(d.get("init_from")),
            history_from=_opt_str(d.get("history_from")),
            history=None if hist is None else RunHistory.from_json(hist),
        )


@dataclass(frozen=True, slots=True)
class ServedPrompt:
    id: str
    text: str
    predicted_pass_rate: float | None
    """The service's estimate; None for prompts drawn by the local fallback."""
    n: int | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ServedPrompt:
        return cls(
            id=str(d["id"]),
            text=str(d["text"]),
            predicted_pass_rate=_opt_float(d.get("predicted_pass_rate")),
            n=_opt_int(d.get("n")),
        )


@dataclass(frozen=True, slots=True)
class BatchStats:
    scanned: int
    kept: int
    survival_rate: float
    epoch: int
    strategy: str
    expected_informative: float | None = None
    """Mean P(a group is mixed) over the batch, under the estimates it was chosen by."""
    filled: int = 0
    """Served prompts the strategy did not pick (its scan ran out); they come last."""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> BatchStats:
        return cls(
            scanned=int(d["scanned"]),
            kept=int(d["kept"]),
            survival_rate=float(d["survival_rate"]),
            epoch=int(d["epoch"]),
            strategy=str(d["strategy"]),
            expected_informative=_opt_float(d.get("expected_informative")),
            filled=int(d.get("filled", 0)),
        )


@dataclass(frozen=True, slots=True)
class Batch:
    batch_id: str
    step: int
    partition: str
    expires_at: str
    prompts: tuple[ServedPrompt, ...]
    stats: BatchStats

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Batch:
        return cls(
            batch_id=str(d["batch_id"]),
            step=int(d["step"]),
            partition=str(d["partition"]),
            expires_at=str(d["expires_at"]),
            prompts=tuple(ServedPrompt.from_json(p) for p in d["prompts"]),
            stats=BatchStats.from_json(d["stats"]),
        )

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.prompts]

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass(frozen=True, slots=True)
class GroupResult:
    """The G rewards of one prompt's group, as `report` sends them."""

    prompt_id: str
    rewards: Sequence[float]
    mean_logprob: float | None = None
    response_lengths: Sequence[int] | None = None

    def to_json(self) -> dict[str, Any]:
        rewards = [float(r) for r in self.rewards]
        if not all(math.isfinite(r) for r in rewards):
            raise InvalidRequest(f"prompt {self.prompt_id!r}: rewards must be finite: {rewards}")
        out: dict[str, Any] = {"prompt_id": self.prompt_id, "rewards": rewards}
        if self.mean_logprob is not None:
            if not math.isfinite(float(self.mean_logprob)):
                raise InvalidRequest(f"prompt {self.prompt_id!r}: mean_logprob must be finite")
            out["mean_logprob"] = float(self.mean_logprob)
        if self.response_lengths is not None:
            out["response_lengths"] = [int(n) for n in self.response_lengths]
        return out


@dataclass(frozen=True, slots=True)
class OutcomeAck:
    accepted: int
    duplicates: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> OutcomeAck:
        return cls(accepted=int(d["accepted"]), duplicates=int(d["duplicates"]))


@dataclass(frozen=True, slots=True)
class Estimate:
    pass_rate: float
    alpha: float
    beta: float
    uncertainty: float
    p_informative: float

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Estimate:
        return cls(**{k: float(d[k]) for k in cls.__slots__})


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    step: int
    n: int
    successes: int
    reward_mean: float
    batch_id: str | None
    received_at: datetime

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> HistoryEntry:
        bid = d.get("batch_id")
        return cls(
            step=int(d["step"]),
            n=int(d["n"]),
            successes=int(d["successes"]),
            reward_mean=float(d["reward_mean"]),
            batch_id=None if bid is None else str(bid),
            received_at=_dt(d["received_at"]),
        )


@dataclass(frozen=True, slots=True)
class PromptStats:
    id: str
    observations: int
    rollouts: int
    successes: int
    observed_pass_rate: float | None
    last_step: int | None
    history: tuple[HistoryEntry, ...]
    estimate: Estimate

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PromptStats:
        return cls(
            id=str(d["id"]),
            observations=int(d["observations"]),
            rollouts=int(d["rollouts"]),
            successes=int(d["successes"]),
            observed_pass_rate=_opt_float(d.get("observed_pass_rate")),
            last_step=_opt_int(d.get("last_step")),
            history=tuple(HistoryEntry.from_json(h) for h in d["history"]),
            estimate=Estimate.from_json(d["estimate"]),
        )


@dataclass(frozen=True, slots=True)
class HistogramBin:
    lo: float
    hi: float
    prompts: int


@dataclass(frozen=True, slots=True)
class StepShare:
    step: int
    groups: int
    zero_variance_share: float


@dataclass(frozen=True, slots=True)
class Summary:
    run: str
    pool: int
    prompts_seen: int
    groups: int
    rollouts: int
    zero_variance_share: float | None
    all_fail_prompts: int
    all_pass_prompts: int
    pass_rate_histogram: tuple[HistogramBin, ...] = field(default=())
    zero_variance_by_step: tuple[StepShare, ...] = field(default=())

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Summary:
        return cls(
            run=str(d["run"]),
            pool=int(d["pool"]),
            prompts_seen=int(d["prompts_seen"]),
            groups=int(d["groups"]),
            rollouts=int(d["rollouts"]),
            zero_variance_share=_opt_float(d.get("zero_variance_share")),
            all_fail_prompts=int(d["all_fail_prompts"]),
            all_pass_prompts=int(d["all_pass_prompts"]),
            pass_rate_histogram=tuple(
                HistogramBin(lo=float(b["lo"]), hi=float(b["hi"]), prompts=int(b["prompts"]))
                for b in d.get("pass_rate_histogram", [])
            ),
            zero_variance_by_step=tuple(
                StepShare(
                    step=int(s["step"]),
                    groups=int(s["groups"]),
                    zero_variance_share=float(s["zero_variance_share"]),
                )
                for s in d.get("zero_variance_by_step", [])
            ),
        )


@dataclass(frozen=True, slots=True)
class Prediction:
    """One prompt's estimate: `id` for stored prompts, None for raw texts."""

    id: str | None
    pass_rate: float
    uncertainty: float
    p_informative: float
    prior: float | None
    observations: int
    model_version: int | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Prediction:
        pid = d.get("id")
        return cls(
            id=None if pid is None else str(pid),
            pass_rate=float(d["pass_rate"]),
            uncertainty=float(d["uncertainty"]),
            p_informative=float(d["p_informative"]),
            prior=_opt_float(d.get("prior")),
            observations=int(d.get("observations", 0)),
            model_version=_opt_int(d.get("model_version")),
        )


@dataclass(frozen=True, slots=True)
class Predictions:
    """`POST /predict`: one item per id or text, in the order sent."""

    model_version: int | None
    items: tuple[Prediction, ...]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Predictions:
        return cls.from_chunks([d])

    @classmethod
    def from_chunks(cls, parts: Sequence[Mapping[str, Any]]) -> Predictions:
        """Answers to consecutive chunks; a refit between two shows in the items' versions."""
        return cls(
            model_version=_opt_int(parts[-1].get("model_version")),
            items=tuple(Prediction.from_json(x) for d in parts for x in d["items"]),
        )


@dataclass(frozen=True, slots=True)
class PredictorInfo:
    """`GET /predictor`: the newest fitted version and how it did on outcomes it had not seen."""

    version: int | None
    trained_on: int
    fitted_at: datetime | None
    calibration: dict[str, Any]
    outcomes_since: int
    init_from: str | None
    history_from: str | None = None
    next_fit_at: int | None = None  # the outcome count at which the next fit is due

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PredictorInfo:
        fitted = d.get("fitted_at")
        src = d.get("init_from")
        return cls(
            version=_opt_int(d.get("version")),
            trained_on=int(d["trained_on"]),
            fitted_at=None if fitted is None else _dt(fitted),
            calibration=dict(d.get("calibration") or {}),
            outcomes_since=int(d.get("outcomes_since", 0)),
            init_from=None if src is None else str(src),
            history_from=_opt_str(d.get("history_from")),
            next_fit_at=_opt_int(d.get("next_fit_at")),
        )
