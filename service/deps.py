"""Annotated dependency aliases shared by every router."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from service.common import storable
from service.db import session_scope
from service.exceptions import AdminUnauthorized, Forbidden, InvalidInput, Unauthorized
from service.keys import KeyCache, Principal, check_name, static_principal
from service.scope import DEFAULT_NAMESPACE, Scope
from service.state import AppState

NAMESPACE_HEADER = "x-depo-namespace"


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
    description="an API key (DEPO_API_KEYS or `depo keys add`); only when the service has keys",
)
BearerScheme = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
"""Declares the bearer scheme in the OpenAPI schema on every route that takes it."""


def key_cache(request: Request, state: AppState) -> KeyCache:
    """The process's key cache, made on first use beside the app's state."""
    cache: KeyCache | None = getattr(request.app.state, "depo_keys", None)
    if cache is None:
        cache = KeyCache(state.read_sessionmaker, state.settings.key_cache_seconds)
        request.app.state.depo_keys = cache
    return cache


async def _auth_on(request: Request, state: AppState) -> bool:
    return bool(state.settings.api_keys) or await key_cache(request, state).any_stored()


async def _principal(request: Request, state: AppState, token: str) -> Principal | None:
    found = static_principal(token, state.settings.api_keys)
    return found or await key_cache(request, state).principal(token)


async def authenticate(
    request: Request, state: StateDep, _scheme: BearerScheme = None
) -> Principal | None:
    """The key's principal; None while no key is configured anywhere (auth off)."""
    if not await _auth_on(request, state):
        return None
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <key>'")
    found = await _principal(request, state, token)
    if found is None:
        raise Unauthorized("invalid API key")
    return found


require_api_key = authenticate
"""The /v1 guard: the same callable as ScopeDep's, so FastAPI checks a key once per request."""


async def authenticate_admin(request: Request, state: StateDep) -> Principal | None:
    """A browser can send the key as Basic auth's password (any user name), or as a bearer."""
    if not await _auth_on(request, state):
        return None
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    token = value if scheme.lower() == "bearer" else ""
    if scheme.lower() == "basic":
        try:
            token = base64.b64decode(value, validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            token = ""
    found = await _principal(request, state, token) if token else None
    if found is None:
        raise AdminUnauthorized("the admin pages take the API key as the Basic auth password")
    return found


def scope_for(principal: Principal | None, requested: str | None) -> Scope:
    """A namespace key stays in its namespace; an admin key (or no auth) may name any."""
    if requested is not None:
        check_name(requested, "namespace")
    if principal is None or principal.admin:
        home = requested or (principal.namespace if principal else DEFAULT_NAMESPACE)
        return Scope(home=home, admin=True, explicit=requested is not None)
    if requested is not None and requested != principal.namespace:
        raise Forbidden(
            f"this key belongs to namespace {principal.namespace!r}; only an admin key may "
            "name another",
            field="namespace",
        )
    return Scope(home=principal.namespace, admin=False, explicit=True)


async def get_scope(
    principal: Annotated[Principal | None, Depends(authenticate)],
    namespace: Annotated[
        str | None,
        Header(
            alias="X-Depo-Namespace",
            description=(
                "the namespace to create in and look names up in; a namespace key may name "
                "only its own, an admin key any (without it: its own first, then the one "
                "other namespace holding the name)"
            ),
        ),
    ] = None,
) -> Scope:
    return scope_for(principal, namespace)


ScopeDep = Annotated[Scope, Depends(get_scope)]
"""Every /v1 lookup by name takes this: another namespace's objects answer 404."""


async def get_admin_scope(
    request: Request, principal: Annotated[Principal | None, Depends(authenticate_admin)]
) -> Scope:
    """The pages take the namespace as `?ns=` too, since a browser cannot add a header."""
    requested = request.headers.get(NAMESPACE_HEADER) or request.query_params.get("ns")
    return scope_for(principal, requested)


AdminScopeDep = Annotated[Scope, Depends(get_admin_scope)]


async def storable_path(request: Request) -> None:
    """Names and ids in the path meet the body's rule: `%00` is a 422, never a database error."""
    for name, value in request.path_params.items():
        if isinstance(value, str):
            try:
                storable(value)
            except ValueError as exc:
                raise InvalidInput(f"{name}: {exc}", field=name) from None
