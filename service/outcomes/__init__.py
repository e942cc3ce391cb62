"""Outcomes: the append-only log of rollout groups, the durable record of a run."""
