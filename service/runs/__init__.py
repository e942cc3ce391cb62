"""Runs: a training run over one dataset, owning outcomes, stats and batches."""
