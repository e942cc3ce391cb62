"""From dataset upload to a training loop in ~20 lines. Start a service first: `depo serve`.

DEPO_URL=http://127.0.0.1:8000 python examples/plain_loop.py
"""

import random

from depo_client import Curriculum, DepoClient

G, STEPS, BATCH = 8, 20, 16
prompts = {f"add-{a}-{b}": f"What is {a} + {b}?" for a in range(30) for b in range(10)}

with DepoClient() as depo:  # DEPO_URL / DEPO_API_KEY, or pass them here
    depo.create_dataset("arith")
    depo.upload_prompts("arith", prompts.items())
    depo.create_run("arith-demo", "arith", group_size=G)
    curriculum = Curriculum(depo, "arith-demo", prompts)  # falls back locally if depo is down
    for step in range(STEPS):
        batch = curriculum.batch(step, BATCH)
        # your rollouts go here: G completions per prompt, one reward each (fake: easy if a < 10)
        groups = {
            p.id: [
                float(random.random() < (0.9 if int(p.id.split("-")[1]) < 10 else 0.2))
                for _ in range(G)
            ]
            for p in batch
        }
        curriculum.report(step, groups)
    curriculum.close()
    s = depo.summary("arith-demo")
    print(f"{s.groups} groups, zero-variance share {s.zero_variance_share:.2f}")
