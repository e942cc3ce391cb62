"""depo-service: predict prompt difficulty before rollout and serve informative GRPO batches."""

__version__ = "0.1.0"
