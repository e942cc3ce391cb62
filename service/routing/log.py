"""The route log: each accepted `/route` call's tier counts, for the admin page's shares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import RouteLog
from service.routing.schemas import RouteResponse


def record(session: AsyncSession, run_id: int, step: int | None, routed: RouteResponse) -> None:
    """Added to the request's write session: committed with the answer, never for a rejected one."""
    session.add(
        RouteLog(
            run_id=run_id,
            step=step,
            items=len(routed.items),
            unrouted=routed.unrouted,
            tiers=[[t.name, t.count] for t in routed.tiers],
        )
    )


@dataclass(frozen=True)
class LoggedCall:
    id: int
    at: datetime
    step: int | None
    items: int
    unrouted: int
    tiers: Sequence[tuple[str, int]]


async def recent(session: AsyncSession, run_id: int, limit: int) -> list[LoggedCall]:
    """The run's newest `limit` calls, oldest first (an index range on (run_id, id))."""
    rows = await session.execute(
        select(RouteLog).where(RouteLog.run_id == run_id).order_by(RouteLog.id.desc()).limit(limit)
    )
    out = [
        LoggedCall(
            r.id, r.created_at, r.step, r.items, r.unrouted, [(str(n), int(c)) for n, c in r.tiers]
        )
        for r in rows.scalars()
    ]
    return out[::-1]
