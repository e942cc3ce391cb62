"""Export and routing: their request parameters and typed results, shared by both clients."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from depo_client._exceptions import InvalidRequest

FORMATS = ("jsonl", "csv", "parquet")

TierLike: TypeAlias = Mapping[str, Any] | tuple[str, float | None]
"""`{"name", "max_difficulty"?}` or a `(name, max_difficulty)` pair; None: the rest."""


def export_format(dest: str | os.PathLike[str] | None, fmt: str | None) -> str:
    """The format asked for, else the one the file name ends with, else JSONL."""
    if fmt is None and dest is not None:
        suffix = Path(dest).suffix.lstrip(".").lower()
        fmt = {"ndjson": "jsonl", "pq": "parquet"}.get(suffix, suffix)
        if fmt not in FORMATS:
            fmt = "jsonl"
    fmt = fmt or "jsonl"
    if fmt not in FORMATS:
        raise InvalidRequest(f"format must be one of {FORMATS}, got {fmt!r}")
    return fmt


def export_params(
    fmt: str,
    *,
    min_pass_rate: float | None,
    max_pass_rate: float | None,
    min_p_informative: float | None,
    seen: bool | None,
    limit: int | None,
    order_by: str | None,
    descending: bool,
    include_text: bool,
    include_metadata: bool,
) -> dict[str, Any]:
    """Query parameters; what is left unset is left out, so the server's defaults apply."""
    params: dict[str, Any] = {"format": fmt}
    optional = {
        "min_pass_rate": min_pass_rate,
        "max_pass_rate": max_pass_rate,
        "min_p_informative": min_p_informative,
        "limit": limit,
        "order_by": order_by,
    }
    params.update({k: v for k, v in optional.items() if v is not None})
    if seen is not None:
        params["seen"] = "true" if seen else "false"
    if descending:
        params["descending"] = "true"
    if include_text:
        params["include_text"] = "true"
    if not include_metadata:
        params["include_metadata"] = "false"
    return params


def expected_rows(params: Mapping[str, Any], headers: Mapping[str, str]) -> int | None:
    """The rows an export will have when nothing filters them (the progress bar's total)."""
    if params["format"] == "parquet":
        return None
    if params.keys() - {"format", "include_text", "include_metadata"}:
        return None
    return int(headers.get("x-depo-prompts", 0)) or None


def count_rows(fmt: str, data: bytes) -> int:
    """Rows in a piece of a JSONL or CSV stream (CSV's header line counts once, taken off later)."""
    return data.count(b"\n") if fmt != "parquet" else 0


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What `export` wrote."""

    path: Path | None
    format: str
    rows: int | None
    """Rows written; None for Parquet (read the file's metadata)."""
    bytes: int
    model_version: int | None


@dataclass(frozen=True, slots=True)
class ExportRow:
    """One prompt of an export: its estimate now, its undiscounted counts, its metadata."""

    id: str
    idx: int
    pass_rate: float
    uncertainty: float
    p_informative: float
    prior: float
    observations: int
    rollouts: int
    successes: int
    observed_pass_rate: float | None
    last_step: int | None
    model_version: int | None
    metadata: dict[str, Any] | None = None
    text: str | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ExportRow:
        meta = d.get("metadata")
        text = d.get("text")
        return cls(
            id=str(d["id"]),
            idx=int(d["idx"]),
            pass_rate=float(d["pass_rate"]),
            uncertainty=float(d["uncertainty"]),
            p_informative=float(d["p_informative"]),
            prior=float(d["prior"]),
            observations=int(d["observations"]),
            rollouts=int(d["rollouts"]),
            successes=int(d["successes"]),
            observed_pass_rate=_opt(float, d.get("observed_pass_rate")),
            last_step=_opt(int, d.get("last_step")),
            model_version=_opt(int, d.get("model_version")),
            metadata=dict(meta) if isinstance(meta, Mapping) else None,
            text=None if text is None else str(text),
        )

    @classmethod
    def from_line(cls, line: str | bytes) -> ExportRow:
        return cls.from_json(json.loads(line))


def _opt(kind: Any, value: Any) -> Any:
    return None if value is None else kind(value)


def tiers_json(tiers: Sequence[TierLike]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for t in tiers:
        if isinstance(t, tuple):
            name, bound = t
            out.append({"name": str(name), "max_difficulty": bound})
        else:
            out.append({"name": str(t["name"]), "max_difficulty": t.get("max_difficulty")})
    return out


@dataclass(frozen=True, slots=True)
class RoutedItem:
    """One query's tier (None: harder than every tier's bound) and the estimate behind it."""

    id: str | None
    tier: str | None
    difficulty: float
    pass_rate: float
    uncertainty: float

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RoutedItem:
        return cls(
            id=_opt(str, d.get("id")),
            tier=_opt(str, d.get("tier")),
            difficulty=float(d["difficulty"]),
            pass_rate=float(d["pass_rate"]),
            uncertainty=float(d["uncertainty"]),
        )


@dataclass(frozen=True, slots=True)
class TierShare:
    name: str
    max_difficulty: float | None
    count: int
    share: float
    expected_pass_rate: float | None


@dataclass(frozen=True, slots=True)
class Routing:
    """`POST /route`: a tier per query, in the order sent, and each tier's share and pass rate."""

    model_version: int | None
    items: tuple[RoutedItem, ...]
    tiers: tuple[TierShare, ...]
    unrouted: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Routing:
        """One answer, its figures as the service computed them."""
        return cls(
            model_version=_opt(int, d.get("model_version")),
            items=tuple(RoutedItem.from_json(x) for x in d["items"]),
            tiers=tuple(
                TierShare(
                    name=str(t["name"]),
                    max_difficulty=_opt(float, t.get("max_difficulty")),
                    count=int(t["count"]),
                    share=float(t["share"]),
                    expected_pass_rate=_opt(float, t.get("expected_pass_rate")),
                )
                for t in d["tiers"]
            ),
            unrouted=int(d["unrouted"]),
        )

    @classmethod
    def from_chunks(cls, parts: Sequence[Mapping[str, Any]]) -> Routing:
        """Answers to consecutive chunks of one request, merged: counts add up, rates weigh."""
        if len(parts) == 1:
            return cls.from_json(parts[0])
        items = tuple(RoutedItem.from_json(x) for d in parts for x in d["items"])
        n = len(items)
        tiers = []
        for j, t in enumerate(parts[0]["tiers"]):
            counts = [int(d["tiers"][j]["count"]) for d in parts]
            rates = [d["tiers"][j]["expected_pass_rate"] for d in parts]
            count = sum(counts)
            total = sum(c * float(r) for c, r in zip(counts, rates, strict=True) if c)
            tiers.append(
                TierShare(
                    name=str(t["name"]),
                    max_difficulty=_opt(float, t.get("max_difficulty")),
                    count=count,
                    share=count / n if n else 0.0,
                    expected_pass_rate=total / count if count else None,
                )
            )
        return cls(
            model_version=_opt(int, parts[-1].get("model_version")),
            items=items,
            tiers=tuple(tiers),
            unrouted=sum(int(d["unrouted"]) for d in parts),
        )


@dataclass(frozen=True, slots=True)
class ProfileGroup:
    """Prompts sharing a metadata value (or all of them): counts, means and two histograms."""

    value: str | None
    prompts: int
    seen: int
    mean_pass_rate: float | None
    mean_p_mixed: float | None
    observed_pass_rate: float | None
    estimated: tuple[int, ...]
    """Prompts per bin of the estimated pass rate."""
    observed: tuple[int, ...]
    """Seen prompts per bin of their observed pass rate (successes / rollouts)."""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ProfileGroup:
        return cls(
            value=_opt(str, d.get("value")),
            prompts=int(d["prompts"]),
            seen=int(d["seen"]),
            mean_pass_rate=_opt(float, d.get("mean_pass_rate")),
            mean_p_mixed=_opt(float, d.get("mean_p_mixed")),
            observed_pass_rate=_opt(float, d.get("observed_pass_rate")),
            estimated=tuple(int(x) for x in d["estimated"]),
            observed=tuple(int(x) for x in d["observed"]),
        )


@dataclass(frozen=True, slots=True)
class Profile:
    """`GET /profile`: a run's view of its dataset's difficulty, whole and per metadata value."""

    run: str
    dataset: str
    group_size: int
    model_version: int | None
    step: int
    by: str | None
    edges: tuple[float, ...]
    overall: ProfileGroup
    groups: tuple[ProfileGroup, ...]
    other: ProfileGroup | None
    missing: ProfileGroup | None
    values: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Profile:
        def group(x: Any) -> ProfileGroup | None:
            return None if x is None else ProfileGroup.from_json(x)

        return cls(
            run=str(d["run"]),
            dataset=str(d["dataset"]),
            group_size=int(d["group_size"]),
            model_version=_opt(int, d.get("model_version")),
            step=int(d["step"]),
            by=_opt(str, d.get("by")),
            edges=tuple(float(e) for e in d["edges"]),
            overall=ProfileGroup.from_json(d["overall"]),
            groups=tuple(ProfileGroup.from_json(g) for g in d["groups"]),
            other=group(d.get("other")),
            missing=group(d.get("missing")),
            values=int(d["values"]),
        )

    def group(self, value: str) -> ProfileGroup | None:
        """The listed group of this value, if it is among the top `max_groups`."""
        return next((g for g in self.groups if g.value == value), None)


def profile_params(by: str | None, bins: int, max_groups: int) -> dict[str, Any]:
    params: dict[str, Any] = {"bins": bins, "max_groups": max_groups}
    if by is not None:
        params["by"] = by
    return params
