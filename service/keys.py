"""API keys kept in the database: added and revoked by `depo keys`, read per request."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.common import NAME_PATTERN
from service.db import utcnow
from service.exceptions import Conflict, InvalidInput, NotFound
from service.models import ApiKey
from service.scope import DEFAULT_NAMESPACE

PREFIX = "depo_"


def hash_key(token: str) -> str:
    """sha256: a key is 256 random bits, so no salt or slow hash is needed to keep it unguessable.

    An unsalted hash is also what lets a request find its key by an index lookup.
    """
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    namespace: str
    admin: bool


def check_name(value: str, what: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        raise InvalidInput(
            f"{what} {value!r}: use letters, digits, '.', '_', ':', '-', at most 200",
            field=what,
        )
    return value


async def add(
    session: AsyncSession, namespace: str, *, admin: bool = False, name: str | None = None
) -> tuple[ApiKey, str]:
    """A new key; the token is returned once and only its hash is stored."""
    check_name(namespace, "namespace")
    name = check_name(name or f"{namespace}-{secrets.token_hex(4)}", "name")
    if (await session.execute(select(ApiKey).where(ApiKey.name == name))).first() is not None:
        raise Conflict(f"a key named {name!r} exists", field="name")
    token = PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, namespace=namespace, admin=admin, key_hash=hash_key(token))
    session.add(row)
    await session.flush()
    return row, token


async def listing(session: AsyncSession) -> list[ApiKey]:
    return list((await session.execute(select(ApiKey).order_by(ApiKey.id))).scalars())


async def revoke(session: AsyncSession, name: str) -> ApiKey:
    row = (await session.execute(select(ApiKey).where(ApiKey.name == name))).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no key named {name!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        await session.flush()
    return row


class KeyCache:
    """Per-process answers for `ttl` seconds: a revoked key stops working within that time."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], ttl: float) -> None:
        self.sessionmaker = sessionmaker
        self.ttl = ttl
        self._stored: tuple[float, bool] | None = None
        self._found: dict[str, tuple[float, Principal | None]] = {}

    async def any_stored(self) -> bool:
        """Whether any key was ever added: the first turns auth on, and revoking never opens it."""
        now = time.monotonic()
        if self._stored is not None and now - self._stored[0] < self.ttl:
            return self._stored[1]
        async with self.sessionmaker() as session:
            live = (await session.execute(select(ApiKey.id).limit(1))).first() is not None
        self._stored = (now, live)
        return live

    async def principal(self, token: str) -> Principal | None:
        digest = hash_key(token)
        now = time.monotonic()
        hit = self._found.get(digest)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        async with self.sessionmaker() as session:
            stmt = select(ApiKey).where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
            row = (await session.execute(stmt)).scalar_one_or_none()
        found = Principal(row.namespace, row.admin) if row is not None else None
        if len(self._found) > 10_000:  # wrong keys must not grow it without bound
            self._found.clear()
        self._found[digest] = (now, found)
        return found


def static_principal(token: str, keys: list[str]) -> Principal | None:
    """DEPO_API_KEYS, compared in constant time: admin keys of the default namespace."""
    if any(hmac.compare_digest(token.encode(), k.encode()) for k in keys):
        return Principal(DEFAULT_NAMESPACE, admin=True)
    return None
