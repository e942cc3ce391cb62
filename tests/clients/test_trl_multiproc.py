"""`DepoGRPOTrainer` under `torchrun --nproc_per_node 2` (gloo on CPU) against a live service.

Both ranks must roll out prompts of the same served batch for each step, and every group must be
reported exactly once (by the main process, after gathering the other rank's rewards).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("trl")

from depo_client import DepoClient

from tests.fixtures.live import REPO_ROOT, LiveServer, free_port
from tests.fixtures.trl import open_run

pytestmark = pytest.mark.slow  # a real server process or trainer: `make test-fast` skips it

NPROC = 2
G = 4
# Completions per rank per step; the generation batch is NPROC * PER_DEVICE = B * G. 6 is not a
# multiple of G, so the middle prompt's group is split across the ranks: rank 0 rolls out two of
# its completions, rank 1 the other two, and the main process must report all four together.
PER_DEVICE = 6
B = NPROC * PER_DEVICE // G  # unique prompts per generation batch (3)
STEPS = 3
RUN_LIMIT_S = 420  # two tiny ranks take 20-40 s
EXIT_GRACE_S = 30


def torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    if exe.exists():
        return [str(exe)]
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun not found")
    return [sys.executable, "-m", "torch.distributed.run"]


def run_ranks(cmd: list[str], env: dict[str, str], results: list[Path]) -> tuple[int, str]:
    """Run torchrun to its end, or until every rank wrote its result and then stalled.

    A rank's exit can deadlock in torch's teardown (`_trl_worker.py` leaves before it; this is
    the backstop), which says nothing of the code under test: once every result file is there,
    a grace period, then the process group is killed with a warning and the results are
    checked. A rank stuck before its result fails the test with the stacks its faulthandler
    dumped, not a bare timeout (one CI run sat 10 minutes with no stack to show where).
    Returns (exit status, output tail).
    """
    log = results[0].parent / "torchrun.log"
    rc: int | None = None
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + RUN_LIMIT_S
        written_at: float | None = None
        while rc is None and time.monotonic() < deadline:
            try:
                rc = proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                if written_at is None and all(p.exists() for p in results):
                    written_at = time.monotonic()
                if written_at is not None and time.monotonic() - written_at > EXIT_GRACE_S:
                    warnings.warn(
                        f"torchrun: every rank wrote its result, then sat {EXIT_GRACE_S} s in "
                        "its exit; killed",
                        stacklevel=1,
                    )
                    rc = 0  # every rank finished its work; only the exit stalled
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    tail = log.read_text(errors="replace")[-12000:]
    if rc is None:
        return -1, f"torchrun ran past {RUN_LIMIT_S} s before every rank wrote its result\n{tail}"
    return rc, tail


@pytest.mark.parametrize("mode", ["mixin", "stream"])
def test_two_ranks_roll_out_the_served_batches_and_report_each_group_once(
    tmp_path: Path, mode: str
) -> None:
    name = uuid.uuid4().hex[:10]
    rows = [
        {"id": f"add-{a}-{b}", "prompt": f"what is {a} plus {b} ?"}
        for a in range(5)
        for b in range(4)
    ]
    rows_path = tmp_path / "rows.json"
    rows_path.write_text(json.dumps(rows))
    out = tmp_path / "out"
    out.mkdir()
    server = LiveServer(tmp_path / "data").start()
    try:
        with DepoClient(server.url) as depo:
            open_run(depo, name, [(r["id"], r["prompt"]) for r in rows], G)

            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("DEPO_")},
                "OMP_NUM_THREADS": "1",
                "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
                "CUDA_VISIBLE_DEVICES": "",
            }
            cmd = [
                *torchrun(),
                *("--nproc_per_node", str(NPROC), "--master_addr", "127.0.0.1"),
                *("--master_port", str(free_port())),
                str(REPO_ROOT / "tests" / "clients" / "_trl_worker.py"),
                *(server.url, f"run-{name}", str(rows_path), str(out)),
                *(str(STEPS), str(PER_DEVICE), str(G), mode),
            ]
            rc, output = run_ranks(cmd, env, [out / f"rank{r}.json" for r in range(NPROC)])
            assert rc == 0, output

            ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(NPROC)]
            assert [r["num_processes"] for r in ranks] == [NPROC] * NPROC
            assert [r["reported_on_this_rank"] for r in ranks] == [True, False]
            assert all(r["generation_batch_size"] == B * G for r in ranks)
            assert all(r["fallback_batches"] == 0 and r["pending"] == 0 for r in ranks)

            served = {s: depo.next_batch(f"run-{name}", s, B) for s in range(STEPS)}
            for r in ranks:  # one reward call per generation batch, on every rank
                assert len(r["rolled"]) == STEPS, r
            for step in range(STEPS):
                batch = set(served[step].ids)
                per_rank = [r["rolled"][step] for r in ranks]
                for ids in per_rank:  # each rank's slice comes from this step's served batch
                    assert len(ids) == PER_DEVICE and set(ids) <= batch, (step, ids, batch)
                together = Counter(i for ids in per_rank for i in ids)
                # TRL's layout: the generation batch is the served batch, each prompt G times,
                # split across the ranks in order (rank 0 the first PER_DEVICE completions)
                assert together == {pid: G for pid in batch}, (step, together)
                flat = [i for ids in per_rank for i in ids]
                assert flat == [pid for pid in served[step].ids for _ in range(G)]

            run = depo.get_run(f"run-{name}")
            assert (run.outcomes, run.rollouts) == (STEPS * B, STEPS * B * G)
            # the main process's figures reach the log history of every rank (TRL gathers them)
            for r in ranks:
                assert [(e["step"], e["depo/groups_reported"]) for e in r["figures"]] == [
                    (s + 1, B) for s in range(STEPS)
                ]
            for step, batch_ in served.items():
                for pid in batch_.ids:
                    stats = depo.prompt_stats(f"run-{name}", pid)
                    hist = [h for h in stats.history if h.step == step]
                    assert [(h.n, h.batch_id) for h in hist] == [(G, batch_.batch_id)]
    finally:
        server.stop()
