"""Database engine, declarative base and the per-request session that commits or rolls back."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
    DateTime,
    Integer,
    MetaData,
    Select,
    Table,
    any_,
    bindparam,
    event,
    func,
    insert,
    select,
    true,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from service.config import Settings

log = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BigID = BigInteger().with_variant(Integer(), "sqlite")
JSONType = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware timestamps on both PostgreSQL and SQLite (which drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def create_engine(settings: Settings, *, readonly: bool = False) -> AsyncEngine:
    """Engine for the configured store; SQLite gets WAL and write-locking transactions.

    `readonly` matters on SQLite only: plain deferred transactions, so long reads in the
    background (loading a dataset's embeddings) never hold the write lock.
    """
    url = settings.async_database_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 60})
        _configure_sqlite(engine, immediate=not readonly)
        return engine
    return create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_pre_ping=True,
    )


def _configure_sqlite(engine: AsyncEngine, *, immediate: bool) -> None:
    """BEGIN IMMEDIATE serialises writers across processes, since SQLite ignores FOR UPDATE."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def session_scope(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One transaction: committed when the caller finishes, rolled back if it raises."""
    async with sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()


def one_of(session: AsyncSession, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    """`column IN values`, as one array parameter on PostgreSQL: thousands of ids stay cheap."""
    if session.get_bind().dialect.name == "postgresql":
        param = bindparam(None, list(values), type_=postgresql.ARRAY(column.type))
        return cast(ColumnElement[bool], column == any_(param))
    return cast(ColumnElement[bool], column.in_(list(values)))


def by_unique_key(
    session: AsyncSession, scope: ColumnElement[Any], key: Any, keys: Sequence[Any], *cols: Any
) -> Select[Any]:
    """Rows whose unique (scope, key) pair has one of `keys`: (key, *cols) per row found.

    `scope` is the pair's first column compared with its value (`Prompt.dataset_id == 3`). On
    PostgreSQL each key is one probe of the pair's unique index (a LIMIT 1 lateral per key), so
    the cost is the keys' own whatever the plan statistics say: `key = ANY(:array)` let the
    planner scan the whole scope when its statistics were stale (with autovacuum off, never
    analysed) and test every row against the array, 2 s per 1,000 outcomes in a run of 100,000.
    """
    if session.get_bind().dialect.name != "postgresql":
        return select(key.label("key"), *cols).where(scope, key.in_(list(keys)))
    param = bindparam(None, list(keys), type_=postgresql.ARRAY(key.type))
    wanted = func.unnest(param).table_valued("key").render_derived(name="wanted")
    found = select(key.label("key"), *cols).where(scope, key == wanted.c.key).limit(1)
    hit = found.lateral("hit")
    return select(*hit.c).select_from(wanted).join(hit, true())


async def asyncpg_connection(session: AsyncSession) -> Any | None:
    """The session's asyncpg connection on PostgreSQL, for reads and writes too large for rows."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    conn = await session.connection()
    return (await conn.get_raw_connection()).driver_connection


async def vacuum(engine: AsyncEngine, table: str) -> None:
    """VACUUM (ANALYZE) a table a bulk pass rewrote, on PostgreSQL; nothing on SQLite.

    An embedding pass updates every prompt row: until vacuumed, each lookup of a prompt by
    client id visits its dead version and sets hint bits (1,000 lookups took 270-470 ms on a
    never-vacuumed table of 1,000,000 updated rows, 6-10 ms after). Autovacuum would get to
    it eventually, where it is on at all."""
    if engine.dialect.name != "postgresql":
        return
    t0 = time.perf_counter()
    async with engine.connect() as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await auto.exec_driver_sql(f"VACUUM (ANALYZE) {table}")
    log.info("vacuumed %s in %.1f s", table, time.perf_counter() - t0)


async def bulk_insert(session: AsyncSession, table: Table, rows: list[dict[str, Any]]) -> None:
    """Append rows in the session's transaction: COPY on PostgreSQL, a Core insert elsewhere.

    On 1,000 outcome rows the multi-VALUES insert took 80 ms on PostgreSQL and COPY 54 ms, of
    which about 45 ms was the server's own work (then two foreign keys, since one: migration
    a6d2c8e4f1b7). COPY runs on the raw asyncpg connection, so it needs the transaction to be
    open already (callers hold a row lock), and plain Python values: binary COPY refuses numpy
    scalars such as `np.bool_`.
    Every row has the first row's keys in the same order (one dict literal builds them).
    """
    if not rows:
        return
    driver = await asyncpg_connection(session)
    if driver is not None and driver.is_in_transaction():
        columns = list(rows[0])
        as_json = [i for i, c in enumerate(columns) if isinstance(table.c[c].type, JSON)]
        await driver.copy_records_to_table(
            table.name, records=_records(rows, as_json), columns=columns
        )
        return
    await session.execute(insert(table), rows)


def _records(rows: list[dict[str, Any]], as_json: list[int]) -> list[tuple[Any, ...]]:
    """Rows as COPY tuples, JSON columns as text: None becomes JSON null, as a Core insert has it.

    Positional, not per column by name: half the 6 ms a report of 1,000 groups took."""
    dumps = json.dumps
    out = []
    for row in rows:
        values = list(row.values())
        for i in as_json:
            v = values[i]
            values[i] = "null" if v is None else dumps(v)
        out.append(tuple(values))
    return out


T = TypeVar("T")


async def insert_unless_raced(
    session: AsyncSession, row: T, find: Callable[[], Awaitable[T | None]]
) -> tuple[T, bool]:
    """Insert `row`; if a concurrent request inserted the same key first, return that row."""
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
        return row, True
    except IntegrityError:
        winner = await find()
        if winner is None:
            raise
        return winner, False
