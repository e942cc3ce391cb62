"""Annotated dependency aliases shared by every router."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from service.common import storable
from service.db import session_scope
from service.exceptions import InvalidInput, Unauthorized
from service.state import AppState


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.depo
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    async with session_scope(state.sessionmaker) as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
"""Committed when the handler returns, before the response is sent: an ack means durable."""


async def get_read_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    async with session_scope(state.read_sessionmaker) as session:
        yield session


ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]
"""For handlers that only read: on SQLite they don't queue behind writers."""


bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="a key of DEPO_API_KEYS; needed only when the service has keys set",
)
BearerScheme = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
"""Declares the bearer scheme in the OpenAPI schema on every route that takes it."""


async def require_api_key(request: Request, state: StateDep, _scheme: BearerScheme = None) -> None:
    keys = state.settings.api_keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <key>'")
    if not key_is_valid(token, keys):
        raise Unauthorized("invalid API key")


def key_is_valid(token: str, keys: list[str]) -> bool:
    """Constant-time against every configured key."""
    return any(hmac.compare_digest(token.encode(), k.encode()) for k in keys)


async def storable_path(request: Request) -> None:
    """Names and ids in the path meet the body's rule: `%00` is a 422, never a database error."""
    for name, value in request.path_params.items():
        if isinstance(value, str):
            try:
                storable(value)
            except ValueError as exc:
                raise InvalidInput(f"{name}: {exc}", field=name) from None
