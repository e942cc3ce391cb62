"""A server process freezes its startup heap: full collections walked 500,000 objects."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROBE = """
import asyncio, gc
from service.heap import THRESHOLDS
from service.main import app

async def main():
    async with app.router.lifespan_context(app):
        for _ in range(300):
            if gc.get_freeze_count():
                break
            await asyncio.sleep(0.1)
        print(gc.get_freeze_count(), gc.get_threshold() == THRESHOLDS)

asyncio.run(main())
"""


def test_the_server_entry_point_settles_its_heap_once_warm(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPO_")}
    env.update(DEPO_DATA_DIR=str(tmp_path), HF_HUB_OFFLINE="1")
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    frozen, thresholds = out.stdout.split()
    assert int(frozen) > 100_000 and thresholds == "True", out.stdout
