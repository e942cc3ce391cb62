"""Where embedding, fits and hot-stats refreshes run: this process, or `depo worker`s via a queue.

Both sides name work the same way, a task and an integer (`fit`, run id), so the code that asks
for work never knows where it runs. In-process (the default) it is today's `Jobs`; with
`DEPO_WORKERS=true` it is a message on a dramatiq queue in Redis, taken by a `depo worker`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from service.hotstats.store import HotStore, held
from service.jobs import Jobs

if TYPE_CHECKING:
    from dramatiq.brokers.redis import RedisBroker

    from service.config import Settings

log = logging.getLogger(__name__)

Handler = Callable[[int], Awaitable[object]]

QUEUE = "depo"
ACTOR = "depo_task"
BUSY_RETRY_SECONDS = 1.0
"""A job whose key another worker is running waits this long, then asks again."""
HEARTBEAT_SECONDS = 5.0
WORKERS_KEY = "workers"
"""The sorted set, under DEPO_REDIS_PREFIX, of each worker's last heartbeat."""


class Background(Protocol):
    """Runs named work off the request path; one job per key (`fit:7`) at a time."""

    mode: str

    def handle(self, task: str, handler: Handler) -> None:
        """What `task` does with its argument, in whichever process runs it."""

    def submit(self, task: str, arg: int, delay: float = 0.0) -> None:
        """Run `task(arg)` (after `delay` s); asked while it runs, it runs once more after."""

    async def idle(self) -> None:
        """Until nothing this process started is pending (tests wait on it)."""

    async def close(self) -> None: ...


class LocalBackground:
    """The embedded default and the single-process deployment: the API's own event loop."""

    mode = "in-process"

    def __init__(self, jobs: Jobs) -> None:
        self.jobs = jobs
        self._handlers: dict[str, Handler] = {}

    def handle(self, task: str, handler: Handler) -> None:
        self._handlers[task] = handler

    def submit(self, task: str, arg: int, delay: float = 0.0) -> None:
        work = functools.partial(self._handlers[task], arg)
        if delay > 0:
            self.jobs.spawn_after(f"{task}:{arg}", delay, work)
        else:
            self.jobs.spawn(f"{task}:{arg}", work)

    async def idle(self) -> None:
        await self.jobs.idle()

    async def close(self) -> None:
        await self.jobs.close()


def lock_seconds(settings: Settings) -> float:
    """A job's or fit's lock of its key, renewed while it runs: a killed holder's lapses within
    this, about when the queue hands its job on."""
    return min(30.0, settings.worker_heartbeat_seconds)


def make_broker(settings: Settings) -> RedisBroker:
    """dramatiq's Redis broker with its one actor; the same in the API (to send) and workers."""
    import dramatiq
    import redis
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.middleware import AsyncIO

    assert settings.redis_url is not None  # Settings refuses DEPO_WORKERS without it
    # bounded calls: a stalled Redis fails a send (logged; the next request sends again) and
    # the consumer reconnects, instead of a thread waiting on the socket for ever
    client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=10, socket_connect_timeout=2, health_check_interval=15
    )
    broker = RedisBroker(  # type: ignore[no-untyped-call]
        client=client,
        namespace=f"{settings.redis_prefix}:queue",
        heartbeat_timeout=int(settings.worker_heartbeat_seconds * 1000),
        # 1 in 10 fetches looks for dead workers' jobs (the default, 1 in 1000, can take minutes)
        maintenance_chance=100_000,
    )
    broker.add_middleware(AsyncIO())
    dramatiq.set_broker(broker)
    dramatiq.actor(
        broker=broker,
        actor_name=ACTOR,
        queue_name=QUEUE,
        max_retries=5,
        min_backoff=1_000,
        max_backoff=60_000,
        time_limit=6 * 3600 * 1000,  # a fit of a huge run: the lock, not a timer, guards it
    )(_run_message)
    return broker


_WORKER: QueueBackground | None = None
"""The worker process's queue, which the actor hands each message to."""


async def _run_message(task: str, arg: int) -> None:
    """The dramatiq actor: runs on the worker's event loop thread."""
    for _ in range(600):  # a message may arrive while the worker still opens its state
        if _WORKER is not None:
            await _WORKER.run(task, arg)
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("depo_task ran outside a started `depo worker`")


class QueueBackground:
    """`DEPO_WORKERS=true`: work becomes a dramatiq message; a `depo worker` runs it.

    Coalescing like `Jobs.spawn`: a mark in Redis (SET NX) says a job of the key is queued, so
    a second request while it waits adds nothing; the worker clears the mark as the job
    starts, so a request while it runs queues exactly one more run. A job whose key another
    worker is running goes back on the queue for a second instead of being dropped.
    """

    mode = "queue"

    def __init__(
        self, settings: Settings, hot: HotStore, broker: RedisBroker | None = None
    ) -> None:
        # a worker passes the broker it consumes with: its heartbeat is then the consumer's
        self.broker = broker or make_broker(settings)
        self.hot = hot
        self.prefix = settings.redis_prefix
        self.heartbeat_seconds = settings.worker_heartbeat_seconds
        self.lock_seconds = lock_seconds(settings)
        self._handlers: dict[str, Handler] = {}
        self._sending: set[asyncio.Task[None]] = set()

    def handle(self, task: str, handler: Handler) -> None:
        self._handlers[task] = handler

    def _mark(self, key: str) -> str:
        return f"{self.prefix}:queued:{key}"

    def submit(self, task: str, arg: int, delay: float = 0.0) -> None:
        sending = asyncio.create_task(self._send(task, arg, delay), name=f"send:{task}:{arg}")
        self._sending.add(sending)
        sending.add_done_callback(self._sending.discard)

    async def _send(self, task: str, arg: int, delay: float) -> None:
        try:
            # the broker's client is synchronous: a stalled Redis must not hold the loop
            sent = await asyncio.to_thread(self._send_sync, task, arg, delay)
        except Exception:
            log.exception("could not queue %s:%s", task, arg)
            return
        if sent:
            log.debug("queued %s:%s in %.1f s", task, arg, delay)

    def _send_sync(self, task: str, arg: int, delay: float) -> bool:
        client: Any = self.broker.client
        mark = self._mark(f"{task}:{arg}")
        # the mark outlives the wait, so a lost message only delays the key's next run
        if not client.set(mark, "1", nx=True, ex=int(delay) + 600):
            return False
        try:
            actor: Any = self.broker.get_actor(ACTOR)
            actor.send_with_options(args=(task, arg), delay=int(delay * 1000) or None)
        except BaseException:
            client.delete(mark)
            raise
        return True

    async def run(self, task: str, arg: int) -> None:
        """One message, in a worker: clear the mark, hold the key, run the handler."""
        key = f"{task}:{arg}"
        await asyncio.to_thread(self.broker.client.delete, self._mark(key))
        async with held(self.hot, f"job:{key}", self.lock_seconds) as mine:
            if not mine:  # another worker runs this key: run after it, never instead
                self.submit(task, arg, BUSY_RETRY_SECONDS)
                await self.idle()
                return
            await self._handlers[task](arg)

    async def idle(self) -> None:
        while self._sending:
            await asyncio.gather(*list(self._sending), return_exceptions=True)

    async def close(self) -> None:
        await self.idle()

    async def depth(self) -> dict[str, int]:
        """Jobs waiting (now and delayed) and workers heard from within their heartbeat."""

        def read() -> dict[str, int]:
            client: Any = self.broker.client
            ns = self.broker.namespace
            now = time.time()
            beats = f"{self.prefix}:{WORKERS_KEY}"
            alive = client.zcount(beats, now - self.heartbeat_seconds, "+inf")
            return {
                "queued": int(client.llen(f"{ns}:{QUEUE}")),
                "delayed": int(client.hlen(f"{ns}:{QUEUE}.DQ.msgs")),
                "workers": int(alive),
            }

        return await asyncio.to_thread(read)

    def beat(self, worker_id: str) -> None:
        """A worker's heartbeat: in the set `depth` counts, and in dramatiq's own (a long job
        fetches nothing, so dramatiq alone would think the worker dead and hand its job on)."""
        client: Any = self.broker.client
        beats = f"{self.prefix}:{WORKERS_KEY}"
        client.zadd(beats, {worker_id: time.time()})
        client.zremrangebyscore(beats, "-inf", time.time() - 10 * self.heartbeat_seconds)
        self.broker.do_qsize(QUEUE)

    def serve(self) -> None:
        """Make this process the one whose handlers the actor calls (`depo worker`)."""
        global _WORKER
        _WORKER = self


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
