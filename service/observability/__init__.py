"""Health probes and Prometheus metrics."""
