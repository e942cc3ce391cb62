"""Hot state behind one interface: Redis when configured, a process-local dict otherwise."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import WatchError

from service.estimator.beta import MISSING, PromptStats, StatsColumns, add_group

SEQ_FIELD = "_seq"
# HMGET of many fields as one joined string: one argument to pack and one reply to parse, where
# redis-py packs and decodes a field at a time (about 20 ms for 8,192 fields on 2 cores, profiled);
# the values are fixed-width binary, so the reply is one array with no separators
_GET_JOINED = """
local out, ids = {}, {}
local function flush()
  if #ids == 0 then return end
  local vals = redis.call('HMGET', KEYS[1], unpack(ids))
  for i = 1, #ids do out[#out + 1] = vals[i] or ARGV[2] end
  ids = {}
end
for id in string.gmatch(ARGV[1], "[^,]+") do
  ids[#ids + 1] = id
  if #ids == 4000 then flush() end  -- unpack's limit is about 8,000 values
end
flush()
return table.concat(out)
"""
_UNLOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end"

Group = tuple[int, int, int, int]
"""(prompt idx, step, n, successes) of one logged outcome."""


def _fold(
    current: dict[int, PromptStats], groups: Sequence[Group], discount: float
) -> dict[int, PromptStats]:
    changed: dict[int, PromptStats] = {}
    for idx, step, n, k in groups:
        changed[idx] = add_group(changed.get(idx, current.get(idx)), step, n, k, discount)
    return changed


class HotStore(Protocol):
    """Per-run prompt stats plus the log position (`seq`) they reflect."""

    async def applied_seq(self, run_id: int) -> int: ...

    async def apply(
        self, run_id: int, expect_seq: int, new_seq: int, groups: Sequence[Group], discount: float
    ) -> bool:
        """Fold groups in atomically if the stored seq is still `expect_seq`."""
        ...

    async def get_many(self, run_id: int, idxs: Sequence[int]) -> list[PromptStats | None]: ...

    async def get_columns(self, run_id: int, idxs: Sequence[int]) -> StatsColumns:
        """`get_many` as arrays: what scoring thousands of candidates reads."""
        ...

    async def get_all(self, run_id: int) -> dict[int, PromptStats]: ...

    async def try_lock(self, name: str, ttl: float) -> str | None:
        """A token if this caller now holds `name` (expiring after ttl seconds), else None."""
        ...

    async def unlock(self, name: str, token: str) -> None: ...

    async def ping(self) -> bool: ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...


class MemoryHotStore:
    """The embedded default: one process, so a dict and a lock are the whole story."""

    def __init__(self) -> None:
        self._runs: dict[int, tuple[int, dict[int, PromptStats]]] = {}
        self._lock = asyncio.Lock()
        self._locks: dict[str, tuple[str, float]] = {}

    async def applied_seq(self, run_id: int) -> int:
        return self._runs.get(run_id, (0, {}))[0]

    async def apply(
        self, run_id: int, expect_seq: int, new_seq: int, groups: Sequence[Group], discount: float
    ) -> bool:
        async with self._lock:
            seq, data = self._runs.get(run_id, (0, {}))
            if seq != expect_seq:
                return False
            data = dict(data)
            data.update(_fold(data, groups, discount))
            self._runs[run_id] = (new_seq, data)
            return True

    async def get_many(self, run_id: int, idxs: Sequence[int]) -> list[PromptStats | None]:
        data = self._runs.get(run_id, (0, {}))[1]
        return [data.get(i) for i in idxs]

    async def get_columns(self, run_id: int, idxs: Sequence[int]) -> StatsColumns:
        return StatsColumns.of(await self.get_many(run_id, idxs))

    async def get_all(self, run_id: int) -> dict[int, PromptStats]:
        return dict(self._runs.get(run_id, (0, {}))[1])

    async def try_lock(self, name: str, ttl: float) -> str | None:
        now = time.monotonic()
        held = self._locks.get(name)
        if held is not None and held[1] > now:
            return None
        token = uuid.uuid4().hex
        self._locks[name] = (token, now + ttl)
        return token

    async def unlock(self, name: str, token: str) -> None:
        if self._locks.get(name, ("", 0.0))[0] == token:
            del self._locks[name]

    async def ping(self) -> bool:
        return True

    async def flush(self) -> None:
        async with self._lock:
            self._runs.clear()

    async def close(self) -> None:
        return None


class RedisHotStore:
    """One hash per run: a field per prompt idx plus `_seq`, updated with WATCH/MULTI."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def _key(self, run_id: int) -> str:
        # "stats2": binary values; a text hash an older version left is ignored and rebuilt
        return f"{self.prefix}:run:{run_id}:stats2"

    async def applied_seq(self, run_id: int) -> int:
        raw = await self.redis.hget(self._key(run_id), SEQ_FIELD)
        return int(raw) if raw is not None else 0

    async def apply(
        self, run_id: int, expect_seq: int, new_seq: int, groups: Sequence[Group], discount: float
    ) -> bool:
        key = self._key(run_id)
        idxs = sorted({g[0] for g in groups})
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                raw_seq = await pipe.hget(key, SEQ_FIELD)
                if (int(raw_seq) if raw_seq is not None else 0) != expect_seq:
                    await pipe.unwatch()  # type: ignore[no-untyped-call]
                    return False
                raw = await pipe.hmget(key, [str(i) for i in idxs]) if idxs else []
                current = {i: PromptStats.decode(v) for i, v in zip(idxs, raw, strict=True) if v}
                changed = _fold(current, groups, discount)
                mapping: dict[str, bytes | str] = {str(i): s.encode() for i, s in changed.items()}
                mapping[SEQ_FIELD] = str(new_seq)
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
                await pipe.execute()
                return True
            except WatchError:
                return False

    async def get_many(self, run_id: int, idxs: Sequence[int]) -> list[PromptStats | None]:
        if not idxs:
            return []
        raw = await self.redis.hmget(self._key(run_id), [str(i) for i in idxs])
        return [PromptStats.decode(v) if v is not None else None for v in raw]

    async def get_columns(self, run_id: int, idxs: Sequence[int]) -> StatsColumns:
        if not idxs:
            return StatsColumns.of([])
        ids = ",".join(map(str, idxs))
        joined = await self.redis.eval(_GET_JOINED, 1, self._key(run_id), ids, MISSING)
        return StatsColumns.parse_joined(joined, len(idxs))

    async def get_all(self, run_id: int) -> dict[int, PromptStats]:
        raw = await self.redis.hgetall(self._key(run_id))
        # a whole run can be 100k prompts: decoding it must not hold the event loop
        return await asyncio.to_thread(_decode_all, raw)

    async def try_lock(self, name: str, ttl: float) -> str | None:
        token = uuid.uuid4().hex
        ok = await self.redis.set(f"{self.prefix}:lock:{name}", token, nx=True, px=int(ttl * 1000))
        return token if ok else None

    async def unlock(self, name: str, token: str) -> None:
        await self.redis.eval(_UNLOCK, 1, f"{self.prefix}:lock:{name}", token)

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def flush(self) -> None:
        keys = [k async for k in self.redis.scan_iter(match=f"{self.prefix}:*", count=1000)]
        if keys:
            await self.redis.delete(*keys)

    async def close(self) -> None:
        await self.redis.aclose()


def create_store(redis_url: str | None, prefix: str) -> HotStore:
    if redis_url is None:
        return MemoryHotStore()
    # Fail fast when Redis stalls (a request may hold a run's lock while it waits), retry once
    # on a dropped connection, and ping connections idle for a while (stale after a restart).
    redis = Redis.from_url(
        redis_url,
        socket_timeout=2,
        socket_connect_timeout=1,
        health_check_interval=15,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=1),
    )
    return RedisHotStore(redis, prefix)


def _decode_all(raw: dict[bytes | str, bytes | str]) -> dict[int, PromptStats]:
    return {
        int(k): PromptStats.decode(v)
        for k, v in raw.items()
        if (k.decode() if isinstance(k, bytes) else k) != SEQ_FIELD
    }
