"""The main job: start the service on the embedded default and drive a short simulated run.

`make demo` runs this. It needs no external server: SQLite and an in-process cache back a
real `depo serve` process on a free port, and a simulated GRPO policy (starting from the
real pass rates in ../shared/data) trains through it with three selection methods.
"""

from __future__ import annotations

import sys
import time

from benchmarks import efficacy
from benchmarks.simulator import DATA


def main() -> None:
    if not DATA.exists():
        sys.exit(f"demo data not found at {DATA}: the repository expects ../shared/data beside it")
    args = efficacy.parser().parse_args(
        [
            "--seeds",
            "1",
            "--pool",
            "2000",
            "--heldout",
            "500",
            "--steps",
            "60",
            "--methods",
            "uniform GRPO,DAPO dynamic sampling,informative",
            "--defaults",
            "--plot",
            str(efficacy.RESULTS / "demo.png"),
        ]
    )
    print(
        "depo-service demo: embedded default (SQLite + in-process cache), simulated GRPO run",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    efficacy.run_all(args)
    print(
        f"""
Done in {time.perf_counter() - t0:.0f} s. Where to look next:
  - the full comparison, six methods, several seeds:  .venv/bin/python -m benchmarks.efficacy
  - API latency on PostgreSQL + Redis:                 make bench
  - run the service yourself:                          .venv/bin/depo serve  (docs at http://127.0.0.1:8000/docs)
  - plug it into a trainer:                            examples/plain_loop.py, docs/clients.md"""
    )


if __name__ == "__main__":
    main()
