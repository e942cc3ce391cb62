"""Dataset and prompt tables; a prompt's `idx` is its dense position, stable for life."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    column,
)
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, BigID, JSONType, UTCDateTime, utcnow


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("namespace", "name"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    namespace: Mapped[str] = mapped_column(String(200), default="default", server_default="default")
    name: Mapped[str] = mapped_column(String(200))
    embedder: Mapped[str] = mapped_column(String(50))
    prompt_count: Mapped[int] = mapped_column(Integer, default=0)
    # a numeric metadata field read as each prompt's known difficulty: {name, easiest, hardest}
    difficulty_field: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    # bumped by every upload that writes a known difficulty, so cached labels know they're stale
    label_rev: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Prompt(Base):
    __tablename__ = "prompts"
    __table_args__ = (
        # unique per dataset; on PostgreSQL it also carries the key and position, so resolving a
        # report's client ids reads the index alone (migration c8f4e1a6b3d9); SQLite keeps the
        # unique constraint it was created with
        Index(
            "ix_prompts_client_lookup",
            "dataset_id",
            "client_id",
            unique=True,
            postgresql_include=["id", "idx"],
        ),
        UniqueConstraint("dataset_id", "idx"),
        # the embedding pass's next chunk, found among the unembedded rows only
        Index(
            "ix_prompts_unembedded",
            "dataset_id",
            "idx",
            postgresql_where=column("embedding").is_(None),
            sqlite_where=column("embedding").is_(None),
        ),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    idx: Mapped[int] = mapped_column(Integer)
    client_id: Mapped[str] = mapped_column(String(512))
    text: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONType, nullable=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # a known difficulty sent with the prompt or read from its metadata: the estimate's prior
    prior_pass_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
