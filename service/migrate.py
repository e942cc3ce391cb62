"""Run Alembic migrations to head, on PostgreSQL or SQLite, from the CLI or at startup."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from alembic import command
from alembic.config import Config

from service.config import Settings


def alembic_config(settings: Settings) -> Config:
    """alembic.ini from DEPO_ALEMBIC_INI, the working directory, or beside the package."""
    candidates = [
        os.environ.get("DEPO_ALEMBIC_INI"),
        "alembic.ini",
        str(Path(__file__).resolve().parents[1] / "alembic.ini"),
    ]
    ini = next((Path(c) for c in candidates if c and Path(c).is_file()), None)
    if ini is None:
        raise FileNotFoundError(
            "alembic.ini not found: run from the project root or set DEPO_ALEMBIC_INI"
        )
    cfg = Config(str(ini))
    cfg.set_main_option("script_location", str(ini.parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", settings.async_database_url.replace("%", "%%"))
    cfg.attributes["settings"] = settings
    return cfg


def upgrade_sync(settings: Settings, revision: str = "head") -> None:
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings), revision)


async def upgrade(settings: Settings, revision: str = "head") -> None:
    """Alembic's env runs its own event loop, so keep it on a worker thread."""
    await asyncio.to_thread(upgrade_sync, settings, revision)
