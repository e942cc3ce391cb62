"""One rank of `tests/clients/test_trl_multiproc.py`: a real `DepoGRPOTrainer` under torchrun on CPU.

    torchrun --nproc_per_node 2 tests/_trl_worker.py URL RUN ROWS_JSON OUT_DIR STEPS PER_DEVICE G [MODE]

MODE `mixin` (default) trains a `DepoGRPOTrainer`; `stream` a plain `GRPOTrainer` on
`served_dataset` with `DepoReward` (the public route).

Each rank writes `OUT_DIR/rank<RANK>.json`: the prompt ids its reward function saw, one list per
call (one call per generation batch), plus what its sampler asked the service for.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # torchrun puts tests/clients/ first

import torch
from depo_client import Curriculum, DepoClient, RetryPolicy
from depo_client.trl_stream import DepoReward, served_dataset

from tests.fixtures.trl import tiny_stream_trainer, tiny_trainer


def main() -> None:
    # a rank still here after 4 minutes is stuck (a run takes 20-40 s): its stacks go to the
    # test's output before the test gives up on it
    faulthandler.dump_traceback_later(240, repeat=True)
    url, run, rows_path, out_dir = sys.argv[1:5]
    steps, per_device, g = (int(x) for x in sys.argv[5:8])
    mode = sys.argv[8] if len(sys.argv) > 8 else "mixin"
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    rows = json.loads(Path(rows_path).read_text())
    out = Path(out_dir)
    rolled: list[list[str]] = []

    def reward(completions: list[str], id: list[str], **_: Any) -> list[float]:
        rolled.append(list(id))
        return [float(len(c.split()) % 2) for c in completions]

    with DepoClient(url, retry=RetryPolicy(max_attempts=4, deadline=20)) as depo:
        curriculum = Curriculum(
            depo,
            run,
            [(r["id"], r["prompt"]) for r in rows],
            spool_path=out / f"spool.rank{rank}.jsonl",
        )
        if mode == "stream":
            trainer = tiny_stream_trainer(
                out / "trainer",
                served_dataset(curriculum, world * per_device // g, steps=steps),
                DepoReward(curriculum, reward),
                steps=steps,
                per_device=per_device,
                group=g,
            )
        else:
            trainer = tiny_trainer(
                out / "trainer",
                rows,
                reward,
                curriculum,
                steps=steps,
                per_device=per_device,
                group=g,
            )
        trainer.train()
        sampler = getattr(trainer, "depo_sampler", None)
        result = {
            "rank": rank,
            "world_size": world,
            "num_processes": trainer.accelerator.num_processes,
            "backend": str(getattr(trainer.accelerator.state, "backend", None)),
            "generation_batch_size": trainer.args.generation_batch_size,
            "rolled": rolled,
            "sampler_steps_asked": sampler.step if sampler is not None else None,
            "fallback_batches": curriculum.fallback_batches,
            "pending": curriculum.pending,
            "reported_on_this_rank": trainer.accelerator.is_main_process,
            "figures": [e for e in trainer.state.log_history if "depo/groups_reported" in e],
        }
        tmp = out / f"rank{rank}.json.tmp"
        tmp.write_text(json.dumps(result))
        tmp.replace(out / f"rank{rank}.json")  # whole or absent: the test polls for it
        curriculum.close()
        # Leave with the trainer still referenced. Freeing it deadlocks now and then (py-spy on
        # a stuck rank, both routes): the main thread, holding the GIL, frees DDP's reducer,
        # whose process group joins gloo's thread, which waits for the GIL to free a tensor of
        # its last allgather. The barrier first, so neither rank leaves the other mid-collective.
        if torch.distributed.is_initialized():
            torch.distributed.barrier()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
