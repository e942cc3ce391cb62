"""Application factory: stores opened at startup, routers mounted, errors rendered as JSON."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request, Response

from service import __version__, exception_handlers, heap, openapi
from service.admin.router import router as admin_router
from service.batches.router import router as batches_router
from service.body_limit import BodyLimit, payload_too_large
from service.bootstrap import close_state, open_state
from service.config import Settings
from service.datasets.router import router as datasets_router
from service.deps import require_api_key, storable_path
from service.estimator.model import warmup
from service.export.router import router as export_router
from service.metrics import Metrics
from service.migrate import upgrade
from service.observability.router import router as health_router
from service.outcomes.router import router as outcomes_router
from service.predictions.router import router as predictor_router
from service.profile.router import router as profile_router
from service.routing.router import router as routing_router
from service.runs.router import router as runs_router
from service.stats.router import router as stats_router

log = logging.getLogger(__name__)

UNMATCHED = "<unmatched>"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def create_app(settings: Settings | None = None, *, settle_heap: bool = False) -> FastAPI:
    """`settle_heap`: freeze the startup heap once warm (a server process; not a test's app)."""
    settings = settings or Settings()

    async def warm() -> None:
        await asyncio.to_thread(warmup)
        if settle_heap:
            heap.settle()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.run_migrations_on_start:
            await upgrade(settings)
        state = await open_state(settings, metrics)
        app.state.depo = state
        await state.embedding_jobs.resume_all()
        state.jobs.spawn("warmup", warm)
        log.info(
            "depo-service %s on %s, cache %s, background work %s",
            __version__,
            state.engine.url.render_as_string(hide_password=True),
            "redis" if settings.redis_url else "in-process",
            "in `depo worker`s" if settings.workers else "in-process",
        )
        try:
            yield
        finally:
            await close_state(state)

    metrics = Metrics()
    app = FastAPI(
        title="depo-service",
        version=__version__,
        summary="Predict GRPO prompt difficulty before rollout; serve informative batches.",
        lifespan=lifespan,
    )
    exception_handlers.install(app)
    openapi.install(app)

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key), Depends(storable_path)])
    routers = (
        datasets_router,
        runs_router,
        batches_router,
        outcomes_router,
        stats_router,
        predictor_router,
        export_router,
        routing_router,
        profile_router,
    )
    for router in routers:
        v1.include_router(router)
    app.include_router(v1)
    app.include_router(health_router)
    app.include_router(admin_router, dependencies=[Depends(storable_path)])

    # innermost: an unhandled error becomes its 500 here, which `observe` then counts
    app.add_middleware(exception_handlers.CatchAll)
    # inside `observe`: a body cut off at the limit still shows in the latency metrics
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    @app.middleware("http")
    async def observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            return payload_too_large(length, settings.max_body_bytes)
        start = time.perf_counter()
        response = await call_next(request)
        metrics.request_latency.labels(
            _method(request), _route_template(request), str(response.status_code)
        ).observe(time.perf_counter() - start)
        return response

    return app


def _route_template(request: Request) -> str:
    """The matched route's template (`/v1/runs/{run}`): never a value from the request itself,
    so anyone can send any path and the series stay as few as the routes."""
    if request.scope.get("route") is None:
        return UNMATCHED
    # an included router's route knows its path below the prefix; FastAPI's context of the
    # match knows the whole template (tests/service/test_metrics.py checks both stay so)
    context = request.scope.get("fastapi", {}).get("effective_route_context")
    for matched in (context, request.scope["route"]):
        template = getattr(matched, "path_format", None)
        if isinstance(template, str):
            return template
    return UNMATCHED


def _method(request: Request) -> str:
    """Any token is a valid method on the wire: the label keeps the standard few."""
    return request.method if request.method in METHODS else "other"
