"""Route queries to model tiers by predicted difficulty (1 - predicted pass rate)."""
