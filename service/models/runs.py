"""The run row doubles as the per-run lock and the home of its log positions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, BigID, JSONType, UTCDateTime, utcnow


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("namespace", "name"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    # a run lives in its dataset's namespace; `init_from` and `history_from` name runs of it
    namespace: Mapped[str] = mapped_column(String(200), default="default", server_default="default")
    name: Mapped[str] = mapped_column(String(200))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    group_size: Mapped[int] = mapped_column(Integer)
    success_threshold: Mapped[float] = mapped_column(Float)
    strategy: Mapped[str] = mapped_column(String(50))
    selection: Mapped[dict[str, Any]] = mapped_column(JSONType)
    init_from: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # the run whose per-prompt counts this one's prior starts from (a RunHistory row holds them)
    history_from: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    # Log positions and selection cursor; only written while the row is locked.
    outcome_seq: Mapped[int] = mapped_column(Integer, default=0)
    batch_seq: Mapped[int] = mapped_column(Integer, default=0)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    epoch_cursor: Mapped[int] = mapped_column(Integer, default=0)
    epoch_size: Mapped[int] = mapped_column(Integer, default=0)
    epoch_head: Mapped[list[int]] = mapped_column(JSONType, default=list)

    # Counters kept on ingest so GET /runs/{run} costs one row.
    groups: Mapped[int] = mapped_column(Integer, default=0)
    rollouts: Mapped[int] = mapped_column(Integer, default=0)
    successes: Mapped[int] = mapped_column(Integer, default=0)
    zero_variance_groups: Mapped[int] = mapped_column(Integer, default=0)
    max_step: Mapped[int] = mapped_column(Integer, default=-1)
