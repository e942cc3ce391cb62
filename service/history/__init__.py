"""A run's starting point from another run's per-prompt counts: snapshot at creation, load."""
