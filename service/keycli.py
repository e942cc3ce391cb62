"""`depo keys`: the database's key table from the command line, one short transaction each."""

from __future__ import annotations

import argparse
import sys

from service import keys
from service.config import Settings
from service.db import create_engine, create_sessionmaker, session_scope
from service.exceptions import DepoError
from service.migrate import upgrade


async def run_keys(args: argparse.Namespace) -> int:
    settings = Settings()
    if settings.run_migrations_on_start:
        await upgrade(settings)  # as `depo serve` would: the table may be new
    engine = create_engine(settings)
    out: list[str] = []  # printed after the commit: a key shown is a key stored
    note = ""
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            if args.keys_command == "add":
                row, token = await keys.add(
                    session, args.namespace, admin=args.admin, name=args.name
                )
                kind = "admin key" if row.admin else "key"
                note = f"{kind} {row.name!r} of namespace {row.namespace!r} (shown once):"
                out = [token]  # alone on stdout, so `KEY=$(depo keys add ...)` works
            elif args.keys_command == "list":
                out.append("name\tnamespace\tadmin\tcreated\trevoked")
                for k in await keys.listing(session):
                    revoked = k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "-"
                    created = k.created_at.isoformat(timespec="seconds")
                    admin = str(k.admin).lower()
                    out.append(f"{k.name}\t{k.namespace}\t{admin}\t{created}\t{revoked}")
            else:
                row = await keys.revoke(session, args.name)
                note = f"revoked {row.name!r} (namespace {row.namespace!r})"
    except DepoError as exc:
        print(f"depo keys: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()
    if note:
        print(note, file=sys.stderr)
    if out:
        print("\n".join(out))
    return 0
