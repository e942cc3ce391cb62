"""A run's starting point taken from another run's per-prompt counts (`history_from`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, UTCDateTime, utcnow


class RunHistory(Base):
    """The source's counts as they were when the run was created: durable, never rebuilt.

    A copy rather than a reference to the source's log, so the run's prior stays the same
    whatever the source does next, and a hot-stats loss rebuilds nothing here.
    """

    __tablename__ = "run_histories"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    source_run_id: Mapped[int] = mapped_column(BigInteger)
    source_name: Mapped[str] = mapped_column(String(200))
    source_seq: Mapped[int] = mapped_column(Integer)  # the source's log position copied
    source_step: Mapped[int] = mapped_column(Integer)  # counts are discounted to this step
    prompts: Mapped[int] = mapped_column(Integer)
    counts: Mapped[bytes] = mapped_column(LargeBinary)  # estimator.history.Snapshot.encode
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
