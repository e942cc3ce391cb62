"""Upload a verl parquet's prompts under their `extra_info.index` ids and create the run.

DEPO_URL=http://127.0.0.1:8000 python examples/verl09_upload.py train.parquet RUN [GROUP_SIZE]
"""

import sys

import pandas as pd
from depo_client import DepoClient

path, run = sys.argv[1], sys.argv[2]
group_size = int(sys.argv[3]) if len(sys.argv) > 3 else 8
frame = pd.read_parquet(path)
ids = [str(extra["index"]) for extra in frame["extra_info"]]  # what DepoDataset reads back
texts = [str(msgs[-1]["content"]) for msgs in frame["prompt"]]  # the user turn, for the embedder
with DepoClient() as depo:
    depo.create_dataset(run)
    depo.upload_prompts(run, zip(ids, texts, strict=True))
    depo.create_run(run, run, group_size=group_size)  # = actor_rollout_ref.rollout.n
print(f"{len(ids)} prompts uploaded; run {run!r} ready")
