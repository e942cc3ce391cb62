"""`depo worker`: a process that takes embedding, fits and refreshes off the dramatiq queue."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from service.config import Settings

if TYPE_CHECKING:
    from service.background import QueueBackground
    from service.state import AppState

log = logging.getLogger(__name__)

WORKERS_KEY = "workers"  # service.background.WORKERS_KEY, without loading what that loads


def check(settings: Settings) -> int:
    """The container healthcheck: 0 when a worker of this host beat within its heartbeat time.

    Reads Redis only, so it neither loads the models nor waits on the database."""
    if not settings.redis_url:
        return 2
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, decode_responses=True)
    try:
        beats = client.zrangebyscore(
            f"{settings.redis_prefix}:{WORKERS_KEY}",
            time.time() - settings.worker_heartbeat_seconds,
            "+inf",
        )
    finally:
        client.close()
    host = socket.gethostname() + ":"
    return 0 if any(str(b).startswith(host) for b in beats) else 1


def run_worker(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT; jobs in hand finish, a killed worker's go back on the queue."""
    if not settings.workers or not settings.redis_url:
        log.error("`depo worker` needs DEPO_WORKERS=true and DEPO_REDIS_URL: no queue to take from")
        return 2
    from dramatiq import Worker
    from dramatiq.asyncio import get_event_loop_thread
    from dramatiq.middleware import Middleware

    from service import __version__, heap
    from service.background import HEARTBEAT_SECONDS, QueueBackground, make_broker, worker_id
    from service.bootstrap import close_state, open_state
    from service.metrics import Metrics

    if settings.worker_nice:
        os.nice(settings.worker_nice)  # requests on a shared host come first
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    # the state lives on dramatiq's event-loop thread, where every async actor call runs
    loop_thread: Any = None
    state: AppState | None = None
    me = worker_id()

    async def heartbeat(queue: QueueBackground) -> None:
        while True:
            try:
                await asyncio.to_thread(queue.beat, me)
            except Exception:
                log.warning("worker heartbeat failed", exc_info=True)
            await asyncio.sleep(min(HEARTBEAT_SECONDS, settings.worker_heartbeat_seconds / 4))

    async def start() -> AppState:
        opened = await open_state(settings, Metrics(), broker)
        queue = opened.background
        assert isinstance(queue, QueueBackground)
        queue.serve()
        opened.jobs.spawn("heartbeat", lambda: heartbeat(queue))
        await opened.embedding_jobs.resume_all()
        return opened

    class CloseState(Middleware):
        """Close the state on its loop, before dramatiq's AsyncIO middleware stops that loop."""

        def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
            if state is not None and loop_thread is not None:
                loop_thread.run_coroutine(close_state(state))

    # one broker consumes and sends what jobs queue in turn: one heartbeat covers both
    broker = make_broker(settings)
    broker.add_middleware(CloseState())
    worker = Worker(broker, worker_threads=settings.worker_threads)
    worker.start()
    loop_thread = get_event_loop_thread()
    state = loop_thread.run_coroutine(start())
    heap.settle()
    log.info(
        "depo worker %s (%s): %d threads on queue %s",
        me,
        __version__,
        settings.worker_threads,
        broker.namespace,
    )
    stop.wait()
    log.info("depo worker %s stopping: jobs in hand finish first", me)
    worker.stop(timeout=60_000)
    return 0
