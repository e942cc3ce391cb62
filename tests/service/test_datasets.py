"""Datasets and prompt upload: idempotent creation, upsert counts, lookups."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from service import embedding
from service.embedding import decode, decode_inputs, decode_sparse, encode, encode_rows
from service.state import AppState
from tests.fixtures.api import make_dataset


async def test_create_is_idempotent_and_conflicts_on_other_settings(
    client: httpx.AsyncClient, uid: str
) -> None:
    r1 = await client.post("/v1/datasets", json={"name": f"ds-{uid}", "embedder": "hashing"})
    assert r1.status_code == 201
    r2 = await client.post("/v1/datasets", json={"name": f"ds-{uid}", "embedder": "hashing"})
    assert r2.status_code == 200
    assert r2.json()["created_at"] == r1.json()["created_at"]
    r3 = await client.post("/v1/datasets", json={"name": f"ds-{uid}", "embedder": "minilm"})
    assert r3.status_code == 409
    assert r3.json()["field"] == "embedder"
    # no embedder: matches the dataset whatever it was made with (the default may change)
    r4 = await client.post("/v1/datasets", json={"name": f"ds-{uid}"})
    assert r4.status_code == 200 and r4.json()["embedder"] == "hashing"
    r5 = await client.post("/v1/datasets", json={"name": f"new-{uid}"})
    assert r5.status_code == 201 and r5.json()["embedder"] == "ngrams"


def test_stored_rows_clip_to_float16_instead_of_turning_inf() -> None:
    import scipy.sparse as sp

    big = np.array([[1e6, -1e6, 0.5]], dtype=np.float32)  # e.g. a count feature of a huge text
    dense = decode([encode(big[0])])
    sparse = decode_sparse(encode_rows(sp.csr_matrix(big)), 3).toarray()
    for out in (dense, sparse):
        assert np.all(np.isfinite(out)) and out[0, 0] > 6e4 and out[0, 1] < -6e4


async def test_upload_counts_inserted_updated_unchanged(
    client: httpx.AsyncClient, uid: str
) -> None:
    name = f"ds-{uid}"
    await make_dataset(client, name, 5)
    r = await client.post(
        f"/v1/datasets/{name}/prompts",
        json={
            "prompts": [
                {"id": "p0", "text": "Problem 0: compute 0 + 0."},  # unchanged
                {"id": "p1", "text": "a new text"},  # updated
                {
                    "id": "p2",
                    "text": "Problem 2: compute 2 + 1.",
                    "metadata": {"level": 3},
                },  # updated
                {"id": 17, "text": "brand new"},  # inserted, int id stored as string
            ]
        },
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"inserted": 1, "updated": 2, "unchanged": 1, "prompt_count": 6}
    got = await client.get(f"/v1/datasets/{name}/prompts/17")
    assert got.status_code == 200
    assert got.json()["text"] == "brand new"
    assert got.json()["index"] == 5
    p2 = (await client.get(f"/v1/datasets/{name}/prompts/p2")).json()
    assert p2["metadata"] == {"level": 3}
    info = (await client.get(f"/v1/datasets/{name}")).json()
    assert info["prompt_count"] == 6 and info["name"] == name


async def test_reupload_is_a_no_op(client: httpx.AsyncClient, uid: str) -> None:
    prompts = await make_dataset(client, f"ds-{uid}", 50)
    r = await client.post(f"/v1/datasets/ds-{uid}/prompts", json={"prompts": prompts})
    assert r.json() == {"inserted": 0, "updated": 0, "unchanged": 50, "prompt_count": 50}


async def test_concurrent_creates_are_idempotent(client: httpx.AsyncClient, uid: str) -> None:
    """Ranks that create the same dataset and run at once all succeed; one of them creates it."""
    import asyncio

    replies = await asyncio.gather(
        *[client.post("/v1/datasets", json={"name": f"ds-{uid}"}) for _ in range(6)]
    )
    assert sorted(r.status_code for r in replies) == [200] * 5 + [201]
    run = {"name": f"run-{uid}", "dataset": f"ds-{uid}", "group_size": 8}
    replies = await asyncio.gather(*[client.post("/v1/runs", json=run) for _ in range(6)])
    assert sorted(r.status_code for r in replies) == [200] * 5 + [201], [r.text for r in replies]


def test_stored_vectors_round_trip_and_mixed_widths_are_refused() -> None:
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((5, 7)).astype(np.float32)
    out = decode([encode(v) for v in vecs])
    assert out.shape == (5, 7)
    np.testing.assert_allclose(out, vecs.astype(np.float16).astype(np.float32))
    assert decode([]).shape[0] == 0
    with pytest.raises(ValueError, match="width"):
        decode([encode(vecs[0]), encode(vecs[1, :3])])


def test_sparse_rows_round_trip_and_corrupt_blobs_are_refused() -> None:
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    dense = np.where(rng.random((6, 50)) < 0.9, 0.0, rng.random((6, 50))).astype(np.float32)
    dense[2] = 0.0  # a row with no entries
    blobs = encode_rows(sp.csr_matrix(dense))
    assert len(blobs) == 6 and blobs[2] == b""
    out = decode_sparse(blobs, 50)
    np.testing.assert_allclose(out.toarray(), dense.astype(np.float16).astype(np.float32))
    assert decode_sparse([], 50).shape == (0, 50)
    with pytest.raises(ValueError, match="partial"):
        decode_sparse([blobs[0][:-1]], 50)
    with pytest.raises(ValueError, match="outside"):
        decode_sparse(blobs, 10)
    # each embedder's rows decode as the model reads them
    assert decode_inputs("ngrams", []).shape[1] > 2**18
    assert isinstance(decode_inputs("hashing", [encode(dense[0])]), np.ndarray)


async def test_embedding_goes_by_keyset_and_a_rewrite_behind_it_is_embedded(
    client: httpx.AsyncClient, state: AppState, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import select, text

    from service.datasets.service import get_by_name
    from service.models import Prompt
    from service.scope import OPEN

    monkeypatch.setattr(embedding, "CHUNK", 4)  # several chunks, each past the last
    name = f"ds-{uid}"
    await make_dataset(client, name, 11)
    await state.jobs.idle()
    assert (await client.get(f"/v1/datasets/{name}")).json()["embedded"] == 11
    r = await client.post(
        f"/v1/datasets/{name}/prompts", json={"prompts": [{"id": "p1", "text": "rewritten"}]}
    )
    assert r.json()["updated"] == 1
    await state.jobs.idle()  # a new pass from the front finds idx 1 again
    async with state.read_sessionmaker() as session:
        ds = await get_by_name(session, OPEN, name)
        assert await embedding.embedded_count(session, ds) == 11
        stored = (
            await session.execute(
                select(Prompt.embedding).where(Prompt.dataset_id == ds.id, Prompt.idx == 1)
            )
        ).scalar_one()
        embedder = await state.embedding_jobs.embedders.get(ds.embedder)
        assert stored == embedding.embed_blobs(embedder, ["rewritten"])[0]
        # each chunk is found through the partial index, not by reading embedded rows
        conn = await session.connection()
        stmt = embedding.next_chunk(ds.id, 5).compile(
            conn.engine, compile_kwargs={"literal_binds": True}
        )
        if conn.dialect.name == "postgresql":
            await session.execute(text("SET LOCAL enable_seqscan = off"))
            plan = (await session.execute(text(f"EXPLAIN {stmt}"))).scalars().all()
        else:
            plan = [str(r) for r in (await session.execute(text(f"EXPLAIN QUERY PLAN {stmt}")))]
        assert "ix_prompts_unembedded" in " ".join(plan)
