"""Hot state behind one interface: Redis when configured, a process-local dict otherwise."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from typing import NamedTuple, Protocol, TypeVar, cast

import numpy as np
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from service.estimator.beta import MISSING, PromptStats, RunStats, StatsColumns, add_group

SEQ_FIELD = "_seq"
TOKEN_FIELD = "_tok"
_POSITION = (SEQ_FIELD, TOKEN_FIELD)
SCAN_CHUNK = 10_000  # hash fields per HSCAN call when a whole run is read
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
_EXTEND = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)

Group = tuple[int, int, int, int]
"""(prompt idx, step, n, successes) of one logged outcome."""

T = TypeVar("T")

log = logging.getLogger(__name__)


class Position(NamedTuple):
    """Where in a run's log the stats are: the last folded row's `seq` and its ingest's token.

    The token tells a log restored from a dump, or one that lost commits in a failover, from
    the log the stats were folded from, even where the two reached the same `seq`.
    """

    seq: int
    token: str


START = Position(0, "")


def _fold(
    current: dict[int, PromptStats], groups: Sequence[Group], discount: float
) -> dict[int, PromptStats]:
    changed: dict[int, PromptStats] = {}
    for idx, step, n, k in groups:
        changed[idx] = add_group(changed.get(idx, current.get(idx)), step, n, k, discount)
    return changed


class HotStore(Protocol):
    """Per-run prompt stats plus the log position they reflect."""

    async def position(self, run_id: int) -> Position: ...

    async def apply(
        self,
        run_id: int,
        expect: Position,
        new: Position,
        groups: Sequence[Group],
        discount: float,
    ) -> bool:
        """Fold groups in atomically if the stored position is still `expect`."""
        ...

    async def reset(self, run_id: int, expect: Position) -> bool:
        """Drop a run's stats (to rebuild them from the log) if its position is still `expect`."""
        ...

    async def get_many(self, run_id: int, idxs: Sequence[int]) -> list[PromptStats | None]: ...

    async def get_columns(self, run_id: int, idxs: Sequence[int]) -> StatsColumns:
        """`get_many` as arrays: what scoring thousands of candidates reads."""
        ...

    async def get_all(self, run_id: int) -> dict[int, PromptStats]: ...

    async def get_table(self, run_id: int) -> RunStats:
        """`get_all` as arrays: what a fit over a whole run reads."""
        ...

    async def try_lock(self, name: str, ttl: float) -> str | None:
        """A token if this caller now holds `name` (expiring after ttl seconds), else None."""
        ...

    async def unlock(self, name: str, token: str) -> None: ...

    async def extend(self, name: str, token: str, ttl: float) -> bool:
        """Keep holding `name` for ttl seconds more; False if it expired and was lost."""
        ...

    async def ping(self) -> bool: ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...


class MemoryHotStore:
    """The embedded default: one process, so a dict and a lock are the whole story."""

    def __init__(self) -> None:
        self._runs: dict[int, tuple[Position, dict[int, PromptStats]]] = {}
        self._lock = asyncio.Lock()
        self._locks: dict[str, tuple[str, float]] = {}

    async def position(self, run_id: int) -> Position:
        return self._runs.get(run_id, (START, {}))[0]

    async def apply(
        self,
        run_id: int,
        expect: Position,
        new: Position,
        groups: Sequence[Group],
        discount: float,
    ) -> bool:
        async with self._lock:
            at, data = self._runs.get(run_id, (START, {}))
            if at != expect:
                return False
            data = dict(data)
            data.update(_fold(data, groups, discount))
            self._runs[run_id] = (new, data)
            return True

    async def reset(self, run_id: int, expect: Position) -> bool:
        async with self._lock:
            if self._runs.get(run_id, (START, {}))[0] != expect:
                return False
            self._runs.pop(run_id, None)
            return True

    async def get_many(self, run_id: int, idxs: Sequence[int]) -> list[PromptStats | None]:
        data = self._runs.get(run_id, (START, {}))[1]
        return [data.get(i) for i in idxs]

    async def get_columns(self, run_id: int, idxs: Sequence[int]) -> StatsColumns:
        return StatsColumns.of(await self.get_many(run_id, idxs))

    async def get_all(self, run_id: int) -> dict[int, PromptStats]:
        return dict(self._runs.get(run_id, (START, {}))[1])

    async def get_table(self, run_id: int) -> RunStats:
        return RunStats.of(self._runs.get(run_id, (START, {}))[1])

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

    async def extend(self, name: str, token: str, ttl: float) -> bool:
        held = self._locks.get(name)
        if held is None or held[0] != token or held[1] <= time.monotonic():
            return False
        self._locks[name] = (token, time.monotonic() + ttl)
        return True

    async def ping(self) -> bool:
        return True

    async def flush(self) -> None:
        async with self._lock:
            self._runs.clear()

    async def close(self) -> None:
        return None


class RedisHotStore:
    """One hash per run: a field per prompt idx plus `_seq` and `_tok`, updated with WATCH/MULTI.

    Every call is bounded by `timeout` seconds, retries included: a stalled Redis fails the
    request (a 503) instead of holding it, and the run's lock with it, for as long as it stalls.
    """

    def __init__(self, redis: Redis, prefix: str, timeout: float = 1.5) -> None:
        self.redis = redis
        self.prefix = prefix
        self.timeout = timeout

    def _key(self, run_id: int) -> str:
        # "stats2": binary values; a text hash an older version left is ignored and rebuilt
        return f"{self.prefix}:run:{run_id}:stats2"

    async def _bounded(self, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.timeout):
                return await call
        except TimeoutError:
            raise RedisTimeoutError(f"Redis did not answer within {self.timeout} s") from None

    async def position(self, run_id: int) -> Position:
        raw = await self._bounded(self.redis.hmget(self._key(run_id), [SEQ_FIELD, TOKEN_FIELD]))
        return _position(raw[0], raw[1])

    async def apply(
        self,
        run_id: int,
        expect: Position,
        new: Position,
        groups: Sequence[Group],
        discount: float,
    ) -> bool:
        return await self._bounded(self._apply(run_id, expect, new, groups, discount))

    async def _apply(
        self,
        run_id: int,
        expect: Position,
        new: Position,
        groups: Sequence[Group],
        discount: float,
    ) -> bool:
        key = self._key(run_id)
        idxs = sorted({g[0] for g in groups})
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                raw_seq, raw_token = await pipe.hmget(key, [SEQ_FIELD, TOKEN_FIELD])
                if _position(raw_seq, raw_token) != expect:
                    await pipe.unwatch()  # type: ignore[no-untyped-call]
                    return False
                raw = await pipe.hmget(key, [str(i) for i in idxs]) if idxs else []
                current = {i: PromptStats.decode(v) for i, v in zip(idxs, raw, strict=True) if v}
                changed = _fold(current, groups, discount)
                mapping: dict[str, bytes | str] = {str(i): s.encode() for i, s in changed.items()}
                mapping[SEQ_FIELD] = str(new.seq)
                mapping[TOKEN_FIELD] = new.token
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
                await pipe.execute()
                return True
            except WatchError:
                return False

    async def reset(self, run_id: int, expect: Position) -> bool:
        return await self._bounded(self._reset(run_id, expect))

    async def _reset(self, run_id: int, expect: Position) -> bool:
        key = self._key(run_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                raw_seq, raw_token = await pipe.hmget(key, [SEQ_FIELD, TOKEN_FIELD])
                if _position(raw_seq, raw_token) != expect:
                    await pipe.unwatch()  # type: ignore[no-untyped-call]
                    return False
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.delete(key)
                await pipe.execute()
                return True
            except WatchError:
                return False

    async def get_many(self, run_id: int, idxs: Sequence[int]) -> list[PromptStats | None]:
        if not idxs:
            return []
        raw = await self._bounded(self.redis.hmget(self._key(run_id), [str(i) for i in idxs]))
        return [PromptStats.decode(v) if v is not None else None for v in raw]

    async def get_columns(self, run_id: int, idxs: Sequence[int]) -> StatsColumns:
        if not idxs:
            return StatsColumns.of([])
        ids = ",".join(map(str, idxs))
        joined = await self._bounded(
            self.redis.eval(_GET_JOINED, 1, self._key(run_id), ids, MISSING)
        )
        return StatsColumns.parse_joined(joined, len(idxs))

    async def get_all(self, run_id: int) -> dict[int, PromptStats]:
        # a whole run can be 1,000,000 prompts: decoding it must not hold the event loop
        return await asyncio.to_thread(_decode_all, await self._scan(run_id))

    async def get_table(self, run_id: int) -> RunStats:
        return await asyncio.to_thread(_table, await self._scan(run_id))

    async def _scan(self, run_id: int) -> dict[bytes | str, bytes | str]:
        """HSCAN in chunks, each bounded: one HGETALL of a 1,000,000-prompt run outlasts the
        timeout and stalls Redis for every other client while it runs. Each field is as of the
        chunk that read it, which a fit's view (read beside live reports) already allows."""
        key = self._key(run_id)
        raw: dict[bytes | str, bytes | str] = {}
        cursor = 0
        while True:
            cursor, chunk = await self._bounded(self.redis.hscan(key, cursor, count=SCAN_CHUNK))
            raw.update(cast("dict[bytes | str, bytes | str]", chunk))
            if not cursor:
                break
        return raw

    async def try_lock(self, name: str, ttl: float) -> str | None:
        token = uuid.uuid4().hex
        key = f"{self.prefix}:lock:{name}"
        ok = await self._bounded(self.redis.set(key, token, nx=True, px=int(ttl * 1000)))
        return token if ok else None

    async def unlock(self, name: str, token: str) -> None:
        key = f"{self.prefix}:lock:{name}"
        await self._bounded(self.redis.eval(_UNLOCK, 1, key, token))

    async def extend(self, name: str, token: str, ttl: float) -> bool:
        key = f"{self.prefix}:lock:{name}"
        return bool(await self._bounded(self.redis.eval(_EXTEND, 1, key, token, int(ttl * 1000))))

    async def ping(self) -> bool:
        return bool(await self._bounded(self.redis.ping()))

    async def flush(self) -> None:
        keys = [k async for k in self.redis.scan_iter(match=f"{self.prefix}:*", count=1000)]
        if keys:
            await self._bounded(self.redis.delete(*keys))

    async def close(self) -> None:
        await self.redis.aclose()


@asynccontextmanager
async def held(store: HotStore, name: str, ttl: float) -> AsyncIterator[bool]:
    """Hold lock `name` while the block runs, renewed every ttl/3 s: a crashed holder's lock
    lapses within ttl, a live one's never. Yields whether it was had (False: someone holds it)."""
    token = await store.try_lock(name, ttl)
    if token is None:
        yield False
        return

    async def renew() -> None:
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                if not await store.extend(name, token, ttl):
                    log.warning("lock %s lapsed while held", name)
                    return
            except Exception:  # a Redis blip: try again next round, the ttl covers two
                log.warning("could not renew lock %s", name, exc_info=True)

    renewing = asyncio.create_task(renew(), name=f"renew:{name}")
    try:
        yield True
    finally:
        renewing.cancel()
        await asyncio.gather(renewing, return_exceptions=True)
        await store.unlock(name, token)


def create_store(redis_url: str | None, prefix: str, timeout: float = 1.5) -> HotStore:
    if redis_url is None:
        return MemoryHotStore()
    # Fail fast when Redis stalls (a request may hold a run's lock while it waits), retry once
    # on a dropped connection, and ping connections idle for a while (stale after a restart);
    # the store bounds each call, retries and pings included, by `timeout`.
    redis = Redis.from_url(
        redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=min(timeout, 1.0),
        health_check_interval=15,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=1),
    )
    return RedisHotStore(redis, prefix, timeout)


def _decode_all(raw: dict[bytes | str, bytes | str]) -> dict[int, PromptStats]:
    return {
        int(k): PromptStats.decode(v)
        for k, v in raw.items()
        if (k.decode() if isinstance(k, bytes) else k) not in _POSITION
    }


def _table(raw: dict[bytes | str, bytes | str]) -> RunStats:
    fields = [k for k in raw if (k.decode() if isinstance(k, bytes) else k) not in _POSITION]
    idx = np.fromiter((int(k) for k in fields), dtype=np.int64, count=len(fields))
    values = [raw[k] for k in fields]
    if any(isinstance(v, str) for v in values):  # a client decoding replies mangles the bytes
        raise TypeError("encoded stats are bytes")
    return RunStats.parse(idx, b"".join(cast("list[bytes]", values)))


def _position(raw_seq: bytes | str | None, raw_token: bytes | str | None) -> Position:
    token = raw_token.decode() if isinstance(raw_token, bytes) else raw_token
    return Position(int(raw_seq) if raw_seq is not None else 0, token or "")
