"""Liveness, readiness and metrics endpoints, outside the authenticated /v1 prefix."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy import text

from service.background import QueueBackground
from service.deps import BearerScheme, StateDep, require_api_key
from service.exceptions import Forbidden
from service.state import AppState

router = APIRouter(tags=["health"])

PROBE_SECONDS = 1.0
"""Within the 2 s that load balancers and Kubernetes probes commonly wait."""


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str]
    background: dict[str, int | str] = Field(
        description=(
            "where embedding and fits run: `mode` in-process, or queue with the jobs `queued` "
            "and `delayed` and the `workers` heard from within DEPO_WORKER_HEARTBEAT_SECONDS "
            "(none alive does not make the API unready: jobs wait for a worker)"
        )
    )


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "a check failed; it names which"}},
)
async def readyz(state: StateDep, response: Response) -> Readiness:
    """Both checks at once, each bounded, so a stalled backend answers within a probe's timeout."""
    database, cache = await asyncio.gather(
        _check(_database(state), PROBE_SECONDS), _check(state.hot.ping(), PROBE_SECONDS)
    )
    checks = {"database": database, "cache": cache}
    ready = all(v == "ok" for v in checks.values())
    response.status_code = 200 if ready else 503
    return Readiness(
        status="ready" if ready else "unavailable",
        checks=checks,
        background=await _background(state),
    )


async def _background(state: AppState) -> dict[str, int | str]:
    """Queue depth and live workers, bounded like the checks; only the mode where unknown."""
    out: dict[str, int | str] = {"mode": state.background.mode}
    if isinstance(state.background, QueueBackground):
        try:
            async with asyncio.timeout(PROBE_SECONDS):
                out |= await state.background.depth()
        except Exception as exc:  # the cache check reports Redis; this adds nothing then
            out["error"] = type(exc).__name__
    return out


async def _database(state: AppState) -> None:
    async with state.read_sessionmaker() as session:
        await session.execute(text("SELECT 1"))


async def _check(probe: Awaitable[object], seconds: float) -> str:
    try:
        async with asyncio.timeout(seconds):
            await probe
    except TimeoutError:
        return f"error: no answer within {seconds} s"
    except Exception as exc:  # a probe reports failures, it does not raise them
        return f"error: {type(exc).__name__}"
    return "ok"


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request, state: StateDep, _scheme: BearerScheme = None) -> Response:
    """Behind an admin key when keys are set (its labels name every namespace's runs), unless
    DEPO_METRICS_PUBLIC opens it."""
    if not state.settings.metrics_public:
        caller = await require_api_key(request, state)
        if caller is not None and not caller.admin:
            raise Forbidden("/metrics names every namespace's runs: it needs an admin key")
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
