"""Served batches; an unreported, unexpired item is a lease on its prompt."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, BigID, JSONType, UTCDateTime, utcnow


class Batch(Base):
    __tablename__ = "batches"
    __table_args__ = (
        UniqueConstraint("run_id", "step", "partition"),
        UniqueConstraint("run_id", "seq"),
        Index("ix_batches_run_expires", "run_id", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    partition: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(Integer)
    strategy: Mapped[str] = mapped_column(String(50))
    epoch: Mapped[int] = mapped_column(Integer)
    stats: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class BatchItem(Base):
    __tablename__ = "batch_items"
    __table_args__ = (Index("ix_batch_items_run_prompt", "run_id", "prompt_idx"),)

    batch_id: Mapped[str] = mapped_column(
        ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(Integer)
    prompt_id: Mapped[int] = mapped_column(BigID)  # no foreign key: see Outcome.prompt_id
    prompt_idx: Mapped[int] = mapped_column(Integer)
    predicted: Mapped[float] = mapped_column(Float)
    suggested_n: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reported: Mapped[bool] = mapped_column(Boolean, default=False)
