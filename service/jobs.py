"""Background work off the request path: one task per key, re-run once if asked again meanwhile."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Work = Callable[[], Awaitable[object]]


class Jobs:
    """Tracks tasks so shutdown can cancel them and tests can wait for quiet."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def spawn(self, key: str, work: Work) -> None:
        """Run `work` now, or once more after the running job of this key finishes."""
        task = self._tasks.get(key)
        if task is not None and not task.done():
            self._again.add(key)
            return
        self._tasks[key] = asyncio.create_task(self._loop(key, work), name=key)

    def spawn_after(self, key: str, delay: float, work: Work) -> None:
        """Spawn `work` as job `key` in `delay` seconds; a timer already set for `key` stands."""
        if key in self._timers:
            return

        def fire() -> None:
            del self._timers[key]
            self.spawn(key, work)

        self._timers[key] = asyncio.get_running_loop().call_later(max(delay, 0.0), fire)

    async def _loop(self, key: str, work: Work) -> None:
        while True:
            self._again.discard(key)
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background job %s failed", key)
            if key not in self._again:
                return

    async def settle(self, key: str) -> None:
        """Wait until the job of this key, if any, has finished (its re-runs included)."""
        task = self._tasks.get(key)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def idle(self) -> None:
        """Wait until no job runs (new jobs spawned meanwhile are waited for too).

        Timers of `spawn_after` that have not fired are not waited for: a deferred retry
        must not hold up a caller for its whole delay.
        """
        while pending := [t for t in self._tasks.values() if not t.done()]:
            await asyncio.gather(*pending, return_exceptions=True)

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
