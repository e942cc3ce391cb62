"""Liveness, readiness and metrics endpoints, outside the authenticated /v1 prefix."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from service.deps import StateDep, require_api_key

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep, response: Response) -> dict[str, object]:
    checks: dict[str, str] = {}
    try:
        async with state.read_sessionmaker() as session:
            await session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # a probe reports failures, it does not raise them
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        await state.hot.ping()
        checks["cache"] = "ok"
    except Exception as exc:
        checks["cache"] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    response.status_code = 200 if ready else 503
    return {"status": "ready" if ready else "unavailable", "checks": checks}


@router.get("/metrics")
async def metrics(request: Request, state: StateDep) -> Response:
    """Behind the API key when keys are set, unless DEPO_METRICS_PUBLIC opens it."""
    if not state.settings.metrics_public:
        await require_api_key(request, state)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
