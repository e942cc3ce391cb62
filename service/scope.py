"""Which namespaces a caller sees; every lookup of a dataset or run by name goes through here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from service.exceptions import Conflict
from service.models import Dataset, Run

DEFAULT_NAMESPACE = "default"

Named = TypeVar("Named", Dataset, Run)


@dataclass(frozen=True)
class Scope:
    """The caller's namespace and reach; another namespace's objects are simply not found.

    `home` is where the caller creates objects and looks names up first. A namespace key sees
    only its home. An admin key (and every caller while auth is off) sees all namespaces: a
    name not in its home is found in the one other namespace that has it, unless the request
    named its namespace (`explicit`), which confines it there.
    """

    home: str = DEFAULT_NAMESPACE
    admin: bool = True
    explicit: bool = False

    def visible(self, column: Any) -> ColumnElement[bool]:
        """Filter for listings: the home alone, or everything for an admin not confined."""
        if self.admin and not self.explicit:
            return true()
        return column == self.home  # type: ignore[no-any-return]


OPEN = Scope()
"""Auth off: the default namespace first, every namespace visible, as before tenants."""


async def find(
    session: AsyncSession, model: type[Named], scope: Scope, name: str, *, lock: bool = False
) -> Named | None:
    """The named object the caller may see; ambiguous for an admin only across namespaces."""
    stmt = select(model).where(model.name == name, model.namespace == scope.home)
    if lock:
        stmt = stmt.with_for_update()
    found = (await session.execute(stmt)).scalar_one_or_none()
    if found is not None or not scope.admin or scope.explicit:
        return found
    others = select(model).where(model.name == name, model.namespace != scope.home).limit(2)
    if lock:
        others = others.with_for_update()
    rows = list((await session.execute(others)).scalars())
    if len(rows) > 1:
        spaces = sorted(r.namespace for r in rows)
        raise Conflict(
            f"{model.__tablename__[:-1]} {name!r} exists in namespaces {spaces}: name one "
            "with the X-Depo-Namespace header (or ?ns= on the admin pages)",
            field="namespace",
        )
    return rows[0] if rows else None
