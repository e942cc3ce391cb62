"""Read-only admin pages: runs, difficulty distributions, calibration and rollout savings."""
