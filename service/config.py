"""One settings object for the whole service, read from DEPO_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Service configuration; unset stores mean the embedded default (SQLite + in-process cache)."""

    model_config = SettingsConfigDict(env_prefix="DEPO_", env_file=".env", extra="ignore")

    data_dir: Path = Path(".depo")
    database_url: str | None = None
    redis_url: str | None = None
    redis_prefix: str = "depo"
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    lease_seconds: float = 600.0
    max_prompts_per_request: int = 10_000
    max_body_bytes: int = 64 * 1024 * 1024
    run_migrations_on_start: bool = True
    db_pool_size: int = 10
    refit_min_seconds: float = 30.0
    fit_threads: int = 1

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @property
    def async_database_url(self) -> str:
        """SQLAlchemy URL with an async driver, whatever form the user gave."""
        url = self.database_url or f"sqlite:///{(self.data_dir / 'depo.db').resolve()}"
        for plain, driver in (
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
            ("postgresql+psycopg://", "postgresql+asyncpg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if url.startswith(plain):
                return driver + url[len(plain) :]
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.async_database_url.startswith("sqlite")
