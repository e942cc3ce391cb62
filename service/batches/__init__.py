"""Batches: what was served to which trainer at which step, and the leases it holds."""
