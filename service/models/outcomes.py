"""One row per reported group; `seq` orders a run's log, `dedup_key` makes re-sends no-ops."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, BigID, JSONType, UTCDateTime, utcnow


class Outcome(Base):
    __tablename__ = "outcomes"
    __table_args__ = (
        UniqueConstraint("run_id", "dedup_key"),
        UniqueConstraint("run_id", "seq"),
        Index("ix_outcomes_run_prompt", "run_id", "prompt_id"),
        Index("ix_outcomes_run_step", "run_id", "step"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    # no foreign key: ingest resolves every id in the run's dataset first, prompts go only with
    # their dataset (and its runs' logs), and the key's row lock on a random prompt page cost
    # 20-40 ms a report of 1,000 groups at 1,000,000 prompts
    prompt_id: Mapped[int] = mapped_column(BigID)
    prompt_idx: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    batch_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    dedup_key: Mapped[str] = mapped_column(String(200))
    # random per ingest: with `seq`, tells this log's rows from those of a restored copy
    log_token: Mapped[str | None] = mapped_column(String(16), nullable=True)
    rewards: Mapped[list[float]] = mapped_column(JSONType)
    n: Mapped[int] = mapped_column(Integer)
    successes: Mapped[int] = mapped_column(Integer)
    reward_mean: Mapped[float] = mapped_column(Float)
    reward_std: Mapped[float] = mapped_column(Float)
    zero_variance: Mapped[bool] = mapped_column(Boolean)
    mean_logprob: Mapped[float | None] = mapped_column(Float, nullable=True)
    response_lengths: Mapped[list[int] | None] = mapped_column(JSONType, nullable=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
