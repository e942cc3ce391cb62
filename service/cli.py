"""`depo` command line: serve, migrate, and the demo that drives a simulated run."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="depo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the HTTP service",
        epilog=_settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    serve.add_argument("--log-level", default="info")

    migrate = sub.add_parser("migrate", help="upgrade the database schema to the newest revision")
    migrate.add_argument("--revision", default="head")

    return parser


def _settings_help() -> str:
    """The DEPO_* settings with their defaults, read from the settings class so they stay true."""
    from service.config import Settings

    lines = ["settings (environment variables, or a .env file):"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = str(default) if isinstance(default, Path) else repr(default)
        lines.append(f"  DEPO_{name.upper():<26} default: {shown}")
    lines.append(
        "unset DEPO_DATABASE_URL and DEPO_REDIS_URL: SQLite in DEPO_DATA_DIR, cache in-process"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "serve":
        import uvicorn

        uvicorn.run(
            "service.main:app",
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
        )
        return 0
    if args.command == "migrate":
        from service.config import Settings
        from service.migrate import upgrade_sync

        upgrade_sync(Settings(), args.revision)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
