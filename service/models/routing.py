"""One row per accepted `POST /route` call: what share of its queries each tier took."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, BigID, JSONType, UTCDateTime, utcnow


class RouteLog(Base):
    __tablename__ = "route_log"
    __table_args__ = (Index("ix_route_log_run_id", "run_id", "id"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the caller's, if sent
    items: Mapped[int] = mapped_column(Integer)
    unrouted: Mapped[int] = mapped_column(Integer)
    # [[tier name, count], ...] in the request's tier order
    tiers: Mapped[list[Any]] = mapped_column(JSONType)
