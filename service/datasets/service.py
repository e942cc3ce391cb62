"""Create datasets and upsert their prompts in bulk; services flush, the request commits."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.datasets.schemas import DEFAULT_EMBEDDER, DatasetCreate, PromptIn
from service.db import (
    asyncpg_connection,
    bulk_insert,
    by_unique_key,
    insert_unless_raced,
    utcnow,
)
from service.embedding import encode
from service.estimator import N_FEATURES
from service.estimator.inputs import model_inputs
from service.exceptions import Conflict, InvalidInput, NotFound
from service.models import Dataset, Prompt
from service.scope import Scope, find

LOOKUP_CHUNK = 5_000
# one probe of the covering index per id (an index-only scan once the prompts are vacuumed), the
# rows as asyncpg records: 1,000 ids at 1,000,000 prompts took 20-25 ms as SQLAlchemy rows with
# a heap visit each (benchmarks.scale, docs/benchmarks.md#scale)
RESOLVE_SQL = (
    "SELECT w.key, p.id, p.idx FROM unnest($2::text[]) AS w(key) JOIN LATERAL "
    "(SELECT id, idx FROM prompts WHERE dataset_id = $1 AND client_id = w.key LIMIT 1) p ON true"
)


def content_hash(text: str, metadata: dict[str, Any] | None, label: float | None = None) -> str:
    """Hash of what the client sent, so a re-upload of the same prompt is a no-op.

    An unlabelled prompt hashes as before labels existed, so old uploads stay unchanged.
    """
    content: list[Any] = [text, metadata] if label is None else [text, metadata, label]
    payload = json.dumps(content, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


EASIEST_RATE, HARDEST_RATE = 0.9, 0.1


def known_difficulty(dataset: Dataset, p: PromptIn, i: int) -> float | None:
    """The prompt's own `prior_pass_rate`, else its dataset's difficulty field mapped linearly.

    A value beyond either end maps to that end; a prompt without the field has no label.
    """
    if p.prior_pass_rate is not None:
        return p.prior_pass_rate
    spec = dataset.difficulty_field
    if spec is None or p.metadata is None or spec["name"] not in p.metadata:
        return None
    value = p.metadata[spec["name"]]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(
            f"metadata field {spec['name']!r} is this dataset's difficulty field: "
            f"it must be a number, not {type(value).__name__}",
            field=f"prompts.{i}.metadata.{spec['name']}",
        )
    lo, hi = float(spec["easiest"]), float(spec["hardest"])
    frac = min(max((float(value) - lo) / (hi - lo), 0.0), 1.0)
    return EASIEST_RATE + (HARDEST_RATE - EASIEST_RATE) * frac


async def get_by_name(
    session: AsyncSession, scope: Scope, name: str, *, lock: bool = False
) -> Dataset:
    """Another namespace's dataset is not found, as if it did not exist."""
    dataset = await find(session, Dataset, scope, name, lock=lock)
    if dataset is None:
        raise NotFound(f"dataset {name!r} not found")
    return dataset


async def _find(session: AsyncSession, namespace: str, name: str) -> Dataset | None:
    stmt = select(Dataset).where(Dataset.namespace == namespace, Dataset.name == name)
    return (await session.execute(stmt)).scalar_one_or_none()


async def create(session: AsyncSession, scope: Scope, body: DatasetCreate) -> tuple[Dataset, bool]:
    """Idempotent: the same request returns the existing dataset; other settings conflict.

    Without an embedder the request matches an existing dataset whatever it was created
    with, so a default that changes between versions never makes a retry conflict. It is
    made in the caller's home namespace, where names are unique.
    """
    ns = scope.home
    found = await _find(session, ns, body.name)
    field = body.difficulty_field.model_dump() if body.difficulty_field is not None else None
    if found is not None:
        existing = found
    else:
        row = Dataset(
            namespace=ns,
            name=body.name,
            embedder=body.embedder or DEFAULT_EMBEDDER,
            prompt_count=0,
            difficulty_field=field,
            label_rev=0,
        )
        existing, created = await insert_unless_raced(
            session, row, lambda: _find(session, ns, body.name)
        )
        if created:
            return existing, True
    if body.embedder is not None and existing.embedder != body.embedder:
        raise Conflict(
            f"dataset {body.name!r} exists with embedder {existing.embedder!r}",
            field="embedder",
        )
    if field is not None and existing.difficulty_field != field:
        raise Conflict(
            f"dataset {body.name!r} exists with difficulty_field {existing.difficulty_field!r}",
            field="difficulty_field",
        )
    return existing, False


@dataclass(frozen=True)
class UpsertCounts:
    inserted: int
    updated: int
    unchanged: int


async def upsert_prompts(
    session: AsyncSession, scope: Scope, dataset_name: str, prompts: Sequence[PromptIn]
) -> tuple[Dataset, UpsertCounts]:
    """Insert new prompts at the end of the dense index; rewrite changed ones in place."""
    seen: set[str] = set()
    for i, p in enumerate(prompts):
        if p.id in seen:
            raise InvalidInput(f"prompt id {p.id!r} appears twice", field=f"prompts.{i}.id")
        seen.add(p.id)
    dataset = await get_by_name(session, scope, dataset_name, lock=True)
    _check_vectors(dataset, prompts)
    await _check_stored_width(session, dataset, prompts)
    labels = [known_difficulty(dataset, p, i) for i, p in enumerate(prompts)]
    existing: dict[str, tuple[int, str, float | None]] = {}
    ids = [p.id for p in prompts]
    for start in range(0, len(ids), LOOKUP_CHUNK):
        rows = await session.execute(
            by_unique_key(
                session,
                Prompt.dataset_id == dataset.id,
                Prompt.client_id,
                ids[start : start + LOOKUP_CHUNK],
                Prompt.id,
                Prompt.content_hash,
                Prompt.prior_pass_rate,
            )
        )
        existing.update({r.key: (r.id, r.content_hash, r.prior_pass_rate) for r in rows})
    now = utcnow()
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    unchanged = 0
    relabelled = False
    for p, label in zip(prompts, labels, strict=True):
        h = content_hash(p.text, p.metadata, label)
        found = existing.get(p.id)
        if found is None:
            inserts.append(
                {
                    "dataset_id": dataset.id,
                    "idx": dataset.prompt_count + len(inserts),
                    "client_id": p.id,
                    "text": p.text,
                    "metadata": p.metadata,  # the column's name: rows go to the table itself
                    "content_hash": h,
                    "embedding": _vector(p),
                    "prior_pass_rate": label,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            relabelled |= label is not None
        elif found[1] != h:
            relabelled |= label is not None or found[2] is not None
            updates.append(
                {
                    "id": found[0],
                    "text": p.text,
                    "meta": p.metadata,
                    "content_hash": h,
                    "embedding": _vector(p),
                    "prior_pass_rate": label,
                    "updated_at": now,
                }
            )
        else:
            unchanged += 1
    if inserts:  # COPY on PostgreSQL: the dataset row is locked, so the transaction is open
        await bulk_insert(session, Prompt.__table__, inserts)  # type: ignore[arg-type]
        dataset.prompt_count += len(inserts)
    if updates:
        await session.execute(update(Prompt), updates)
    if relabelled:
        dataset.label_rev += 1
    await session.flush()
    return dataset, UpsertCounts(len(inserts), len(updates), unchanged)


def _check_vectors(dataset: Dataset, prompts: Sequence[PromptIn]) -> None:
    """Client vectors are all-or-nothing and of one width per request."""
    client = dataset.embedder == "client"
    widths = {len(p.embedding) for p in prompts if p.embedding is not None}
    for i, p in enumerate(prompts):
        if client and p.embedding is None:
            raise InvalidInput(
                "this dataset's embedder is 'client': send an embedding with every prompt",
                field=f"prompts.{i}.embedding",
            )
        if not client and p.embedding is not None:
            raise InvalidInput(
                f"embeddings are computed by the service for embedder {dataset.embedder!r}",
                field=f"prompts.{i}.embedding",
            )
    if len(widths) > 1:
        raise InvalidInput(f"embeddings of several widths {sorted(widths)}", field="prompts")


async def _check_stored_width(
    session: AsyncSession, dataset: Dataset, prompts: Sequence[PromptIn]
) -> None:
    """One width per dataset: the predictor reads all its vectors as one matrix."""
    sent = next((len(p.embedding) for p in prompts if p.embedding is not None), None)
    if sent is None:
        return
    stored = (
        await session.execute(
            select(func.length(Prompt.embedding))
            .where(Prompt.dataset_id == dataset.id, Prompt.embedding.is_not(None))
            .limit(1)
        )
    ).scalar_one_or_none()
    width = None if stored is None else int(stored) // 2 - N_FEATURES  # float16 + features
    if width is not None and width != sent:
        raise InvalidInput(
            f"dataset {dataset.name!r} holds {width}-wide vectors, these are {sent} wide; "
            "a new embedding model needs a new dataset",
            field="prompts.0.embedding",
        )


def _vector(p: PromptIn) -> bytes | None:
    """A client vector, unit-normed, with the same text features the service appends."""
    if p.embedding is None:
        return None
    v = np.asarray([p.embedding], dtype=np.float32)
    v /= max(float(np.linalg.norm(v)), 1e-12)
    return encode(model_inputs(v, [p.text])[0])


async def labelled_count(session: AsyncSession, dataset: Dataset) -> int:
    """Prompts with a known difficulty; no scan of a dataset no upload ever labelled."""
    if not dataset.label_rev:
        return 0
    stmt = select(func.count(Prompt.prior_pass_rate)).where(Prompt.dataset_id == dataset.id)
    return int((await session.execute(stmt)).scalar_one())


async def get_prompt(session: AsyncSession, dataset: Dataset, client_id: str) -> Prompt:
    prompt = (
        await session.execute(
            select(Prompt).where(Prompt.dataset_id == dataset.id, Prompt.client_id == client_id)
        )
    ).scalar_one_or_none()
    if prompt is None:
        raise NotFound(f"prompt {client_id!r} not found in dataset {dataset.name!r}")
    return prompt


async def resolve_ids(
    session: AsyncSession, dataset_id: int, client_ids: Sequence[str]
) -> dict[str, tuple[int, int]]:
    """Map client ids to (primary key, dense idx); ids not in the dataset are left out."""
    out: dict[str, tuple[int, int]] = {}
    unique = list(dict.fromkeys(client_ids))
    driver = await asyncpg_connection(session)
    if driver is not None:
        for start in range(0, len(unique), LOOKUP_CHUNK):
            records = await driver.fetch(
                RESOLVE_SQL, dataset_id, unique[start : start + LOOKUP_CHUNK]
            )
            out.update({r[0]: (r[1], r[2]) for r in records})
        return out
    for start in range(0, len(unique), LOOKUP_CHUNK):
        rows = await session.execute(
            by_unique_key(
                session,
                Prompt.dataset_id == dataset_id,
                Prompt.client_id,
                unique[start : start + LOOKUP_CHUNK],
                Prompt.id,
                Prompt.idx,
            )
        )
        out.update({r.key: (r.id, r.idx) for r in rows})
    return out


class PromptRef(NamedTuple):
    pk: int
    client_id: str
    text: str


async def prompts_by_pos(
    session: AsyncSession, dataset_id: int, idxs: Sequence[int]
) -> dict[int, PromptRef]:
    """Key, client id and text of the prompts at these dense positions."""
    out: dict[int, PromptRef] = {}
    for start in range(0, len(idxs), LOOKUP_CHUNK):
        rows = await session.execute(
            by_unique_key(
                session,
                Prompt.dataset_id == dataset_id,
                Prompt.idx,
                idxs[start : start + LOOKUP_CHUNK],
                Prompt.id,
                Prompt.client_id,
                Prompt.text,
            )
        )
        out.update({r.key: PromptRef(r.id, r.client_id, r.text) for r in rows})
    return out
