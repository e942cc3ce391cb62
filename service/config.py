"""One settings object for the whole service, read from DEPO_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Service configuration; unset stores mean the embedded default (SQLite + in-process cache)."""

    model_config = SettingsConfigDict(env_prefix="DEPO_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        Path(".depo"),
        description=(
            "directory of the embedded default's SQLite file (depo.db), used while "
            "DEPO_DATABASE_URL is unset; created when missing"
        ),
    )
    database_url: str | None = Field(
        None,
        description=(
            "the database: postgresql://user@host/db (any PostgreSQL driver prefix is "
            "rewritten to asyncpg) or sqlite:///path; unset: SQLite in DEPO_DATA_DIR"
        ),
    )
    redis_url: str | None = Field(
        None,
        description=(
            "Redis for the hot per-prompt stats and the fit locks, e.g. redis://host:6379/0; "
            "unset: an in-process cache (replicas need Redis)"
        ),
    )
    redis_prefix: str = Field(
        "depo",
        description=(
            "prefix of every Redis key; on PostgreSQL the database's oid is appended, so a "
            "recreated database never reads another's stats"
        ),
    )
    redis_timeout_seconds: float = Field(
        1.5,
        gt=0,
        le=60,
        description=(
            "longest one call to Redis may take, retry included: past it the request answers "
            "503 with Retry-After, so a stalled Redis holds no request (or run lock) longer"
        ),
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "comma-separated API keys, admin keys of the default namespace (see `depo keys` for "
            "namespaced ones); with these or a live `depo keys` key, every /v1 call needs "
            "'Authorization: Bearer <key>' and the admin pages take a key as the Basic auth "
            "password; neither: no auth"
        ),
    )
    key_cache_seconds: float = Field(
        2.0,
        ge=0,
        le=60,
        description=(
            "how long a process keeps its answer about a key from `depo keys`: a key added "
            "or revoked takes effect within this time, without a restart"
        ),
    )
    metrics_public: bool = Field(
        False,
        description=(
            "serve GET /metrics without a key; by default it needs the API key like /v1 (when "
            "DEPO_API_KEYS is set): Prometheus sends it as authorization credentials"
        ),
    )
    lease_seconds: float = Field(
        600.0,
        description=(
            "how long a served prompt stays leased to its batch when no outcome arrives; a "
            "run's selection.lease_seconds overrides it"
        ),
    )
    max_prompts_per_request: int = Field(
        10_000, description="most prompts one POST /v1/datasets/{ds}/prompts may upload (413 above)"
    )
    max_body_bytes: int = Field(
        64 * 1024 * 1024,
        description=(
            "largest request body in bytes (64 MiB), counted as it arrives, chunked or not; "
            "413 above"
        ),
    )
    run_migrations_on_start: bool = Field(
        True,
        description=(
            "upgrade the schema when the server starts; turn off with several replicas and run "
            "`depo migrate` once instead"
        ),
    )
    db_pool_size: int = Field(
        10,
        description=(
            "PostgreSQL connections per process, and as many again in overflow (not used on SQLite)"
        ),
    )
    refit_min_seconds: float = Field(
        30.0,
        description=(
            "least time between two predictor fits of a run; a fit due sooner runs when that "
            "time is up, whether or not more outcomes arrive"
        ),
    )
    fit_threads: int = Field(
        1, description="torch threads a predictor fit uses, so fits leave cores to requests"
    )

    workers: bool = Field(
        False,
        description=(
            "hand embedding, predictor fits and hot-stats refreshes to `depo worker` processes "
            "through a dramatiq queue on DEPO_REDIS_URL (required); the API then runs none of "
            "them. Off: they run in the API process, as on the embedded default"
        ),
    )
    worker_threads: int = Field(
        2,
        ge=1,
        le=64,
        description="jobs one `depo worker` process runs at once (each fit uses DEPO_FIT_THREADS)",
    )
    worker_nice: int = Field(
        10,
        ge=0,
        le=19,
        description=(
            "CPU niceness of a `depo worker` process: where it shares cores with API replicas "
            "(one host), requests come first and fits take the idle time; 0 to weigh them alike"
        ),
    )
    worker_heartbeat_seconds: float = Field(
        60.0,
        ge=1,
        le=3600,
        description=(
            "a `depo worker` silent this long counts as dead: the jobs it held go back on the "
            "queue for another worker, and its locks of runs expire within this time"
        ),
    )

    @model_validator(mode="after")
    def _workers_need_redis(self) -> Self:
        if self.workers and not self.redis_url:
            raise ValueError(
                "DEPO_WORKERS=true needs DEPO_REDIS_URL: the job queue lives in Redis "
                "(unset DEPO_WORKERS to run background work in this process)"
            )
        return self

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
