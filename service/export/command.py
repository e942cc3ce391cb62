"""`depo export`: download a run's export to a file, with a progress line on stderr.

Plain httpx (a service dependency), since the service image does not ship the client.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

FORMATS = ("jsonl", "csv", "parquet")
ORDER_KEYS = ("idx", "pass_rate", "uncertainty", "p_informative", "prior", "observations")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="download a run's per-prompt estimates and counts (JSONL, CSV or Parquet)",
        description="Streams GET /v1/runs/{run}/export into a file: written as <file>.part, "
        "renamed when complete. The format defaults to the file's suffix.",
    )
    p.add_argument("run")
    p.add_argument("-o", "--output", required=True, type=Path, help="the file to write")
    p.add_argument("--url", default=os.environ.get("DEPO_URL", "http://127.0.0.1:8000"))
    p.add_argument("--api-key", default=os.environ.get("DEPO_API_KEY"))
    p.add_argument("--format", choices=FORMATS)
    p.add_argument("--min-pass-rate", type=float)
    p.add_argument("--max-pass-rate", type=float)
    p.add_argument("--min-p-informative", type=float)
    seen = p.add_mutually_exclusive_group()
    seen.add_argument("--seen", action="store_const", const=True, dest="seen")
    seen.add_argument("--unseen", action="store_const", const=False, dest="seen")
    p.add_argument("--limit", type=int)
    p.add_argument("--order-by", choices=ORDER_KEYS)
    p.add_argument("--descending", action="store_true")
    p.add_argument("--text", action="store_true", help="include each prompt's text")
    p.add_argument("--no-metadata", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress line")


def _params(args: argparse.Namespace, fmt: str) -> dict[str, str]:
    params: dict[str, Any] = {
        "format": fmt,
        "min_pass_rate": args.min_pass_rate,
        "max_pass_rate": args.max_pass_rate,
        "min_p_informative": args.min_p_informative,
        "limit": args.limit,
        "order_by": args.order_by,
        "seen": None if args.seen is None else str(args.seen).lower(),
        "descending": "true" if args.descending else None,
        "include_text": "true" if args.text else None,
        "include_metadata": "false" if args.no_metadata else None,
    }
    return {k: str(v) for k, v in params.items() if v is not None}


def run(args: argparse.Namespace) -> int:
    import httpx

    suffix = args.output.suffix.lstrip(".").lower()
    fmt = args.format or (suffix if suffix in FORMATS else "jsonl")
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    part = args.output.with_name(args.output.name + ".part")
    url = f"{args.url.rstrip('/')}/v1/runs/{args.run}/export"
    t0 = time.monotonic()
    rows = size = 0
    last = 0.0
    with (
        httpx.Client(headers=headers, timeout=httpx.Timeout(60.0)) as client,
        client.stream("GET", url, params=_params(args, fmt)) as resp,
    ):
        if not resp.is_success:
            resp.read()
            try:
                detail = json.dumps(resp.json())
            except ValueError:
                detail = resp.text[:500]
            print(f"depo export: {resp.status_code} {detail}", file=sys.stderr)
            return 1
        pool = resp.headers.get("x-depo-prompts", "?")
        with part.open("wb") as out:
            for data in resp.iter_bytes():
                out.write(data)
                size += len(data)
                rows += data.count(b"\n") if fmt != "parquet" else 0
                now = time.monotonic()
                if not args.quiet and now - last > 0.2:
                    last = now
                    _progress(rows, size, pool, now - t0, fmt)
    part.replace(args.output)
    if not args.quiet:
        _progress(rows, size, pool, time.monotonic() - t0, fmt)
        print(f"\nwrote {args.output}", file=sys.stderr)
    return 0


def _progress(rows: int, size: int, pool: str, seconds: float, fmt: str) -> None:
    what = f"{rows:,} rows" if fmt != "parquet" else f"{size / 2**20:,.1f} MiB"
    sys.stderr.write(f"\rexport: {what} of a {pool}-prompt dataset, {seconds:.1f} s")
    sys.stderr.flush()
