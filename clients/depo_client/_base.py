"""What the sync and async clients share: settings, headers, and turning inputs into bodies."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from itertools import islice
from typing import Any, TypeAlias

import httpx

from depo_client._exceptions import InvalidRequest
from depo_client._models import DifficultyField, GroupResult
from depo_client._retry import RetryPolicy

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 30.0
MAX_PROMPTS_PER_REQUEST = 10_000

PromptLike: TypeAlias = Mapping[str, Any] | tuple[str, str]
"""`{"id", "text", "metadata"?, "prior_pass_rate"?}` or an `(id, text)` pair."""

ResultLike: TypeAlias = GroupResult | Mapping[str, Any]
"""A `GroupResult` or its JSON form `{"prompt_id", "rewards", ...}`."""

GroupsLike: TypeAlias = Mapping[str, Sequence[float]] | Sequence[ResultLike]
"""`{prompt_id: rewards}` or a sequence of results."""


class Settings:
    """Connection settings; read DEPO_URL and DEPO_API_KEY when not given."""

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        timeout: float | httpx.Timeout | None,
        retry: RetryPolicy | None,
        headers: Mapping[str, str] | None,
    ) -> None:
        self.base_url = (base_url or os.environ.get("DEPO_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("DEPO_API_KEY") or None
        self.timeout = httpx.Timeout(DEFAULT_TIMEOUT if timeout is None else timeout)
        self.retry = retry or RetryPolicy()
        self.headers: dict[str, str] = {"User-Agent": "depo-client/0.1", **(headers or {})}
        if self.api_key:
            self.headers["Authorization"] = f"Bearer {self.api_key}"


def prompt_json(p: PromptLike) -> dict[str, Any]:
    if isinstance(p, tuple):
        pid, text = p
        return {"id": str(pid), "text": text}
    out: dict[str, Any] = {"id": str(p["id"]), "text": p["text"]}
    if p.get("metadata") is not None:
        out["metadata"] = p["metadata"]
    if p.get("prior_pass_rate") is not None:
        out["prior_pass_rate"] = p["prior_pass_rate"]
    return out


def dataset_body(
    name: str, embedder: str | None, difficulty_field: DifficultyField | Mapping[str, Any] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name}
    if embedder is not None:
        body["embedder"] = embedder
    if isinstance(difficulty_field, DifficultyField):
        body["difficulty_field"] = difficulty_field.to_json()
    elif difficulty_field is not None:
        body["difficulty_field"] = dict(difficulty_field)
    return body


def chunked(prompts: Iterable[PromptLike], size: int) -> Iterator[list[dict[str, Any]]]:
    if not 1 <= size <= MAX_PROMPTS_PER_REQUEST:
        raise ValueError(f"chunk_size must be within 1..{MAX_PROMPTS_PER_REQUEST}, got {size}")
    it = iter(prompts)
    while chunk := [prompt_json(p) for p in islice(it, size)]:
        yield chunk


def results_json(groups: GroupsLike) -> list[dict[str, Any]]:
    if isinstance(groups, Mapping):
        return [GroupResult(str(k), list(v)).to_json() for k, v in groups.items()]
    out: list[dict[str, Any]] = []
    for r in groups:
        if isinstance(r, GroupResult):
            out.append(r.to_json())
        else:
            out.append(
                GroupResult(
                    str(r["prompt_id"]),
                    list(r["rewards"]),
                    r.get("mean_logprob"),
                    r.get("response_lengths"),
                ).to_json()
            )
    return out


def batch_body(step: int, size: int, partition: str | int, strategy: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"step": step, "size": size, "partition": str(partition)}
    if strategy is not None:
        body["strategy"] = strategy
    return body


def run_body(
    name: str,
    dataset: str,
    group_size: int,
    success_threshold: float | None,
    strategy: str | None,
    selection: Mapping[str, Any] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "dataset": dataset, "group_size": group_size}
    if success_threshold is not None:
        body["success_threshold"] = success_threshold
    if strategy is not None:
        body["strategy"] = strategy
    if selection is not None:
        body["selection"] = dict(selection)
    return body


def sources(init_from: str | None, history_from: str | None) -> dict[str, str]:
    """The runs a new run starts from, as the create body names them (unset: not sent)."""
    named = {"init_from": init_from, "history_from": history_from}
    return {k: v for k, v in named.items() if v is not None}


def total_of(prompts: Iterable[PromptLike]) -> int | None:
    return len(prompts) if isinstance(prompts, Sized) else None


TEXTS_PER_REQUEST = 256
"""The server's cap on raw texts per /predict for transformer embedders (it embeds them inline)."""


def predict_bodies(
    prompt_ids: Sequence[str] | None, texts: Sequence[str] | None
) -> list[dict[str, Any]]:
    """One body for stored ids; raw texts in chunks the server takes on any embedder."""
    if (prompt_ids is None) == (texts is None):
        raise InvalidRequest("predict takes prompt_ids or texts, exactly one of them")
    if prompt_ids is not None:
        return [{"prompt_ids": [str(p) for p in prompt_ids]}]
    texts = list(texts or [])
    if not texts:
        return [{"texts": []}]  # the server says what is wrong with an empty list
    return [
        {"texts": texts[s : s + TEXTS_PER_REQUEST]} for s in range(0, len(texts), TEXTS_PER_REQUEST)
    ]
