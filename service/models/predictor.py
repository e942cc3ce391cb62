"""A fitted predictor version and the prior it gives every prompt of the run's dataset."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, LargeBinary, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, BigID, JSONType, UTCDateTime, utcnow


class PredictorVersion(Base):
    __tablename__ = "predictor_versions"
    __table_args__ = (UniqueConstraint("run_id", "version"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    trained_on: Mapped[int] = mapped_column(Integer)
    state: Mapped[bytes] = mapped_column(LargeBinary)
    priors: Mapped[bytes] = mapped_column(LargeBinary)
    calibration: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # the mixed-group classifier's P(mixed) per prompt (estimator/mixed.py); None before it learns
    mixed: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # the exposure replay the next fit continues from (predictor/tracking.py); versions stored
    # before `shifts` existed hold their shifts here too
    tracking: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # the per-prompt shifts selection reads: a tenth of the replay's bytes, read once per version
    shifts: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    fitted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
