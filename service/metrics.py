"""Prometheus metrics in a registry of the app's own, so tests and apps don't collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_latency = Histogram(
            "depo_request_duration_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.groups_ingested = Counter(
            "depo_groups_ingested_total", "Outcome groups accepted", registry=self.registry
        )
        self.groups_duplicate = Counter(
            "depo_groups_duplicate_total",
            "Outcome groups ignored as re-sends",
            registry=self.registry,
        )
        self.batches_served = Counter(
            "depo_batches_served_total", "Batches created", registry=self.registry
        )
        self.prompts_served = Counter(
            "depo_prompts_served_total", "Prompts served in new batches", registry=self.registry
        )
        self.zero_variance_share = Gauge(
            "depo_zero_variance_share",
            "Share of a run's groups whose rewards were all equal",
            ["run"],
            registry=self.registry,
        )
        self.fit_duration = Histogram(
            "depo_fit_duration_seconds",
            "Wall time of a background predictor fit, from reading its inputs to storing it",
            registry=self.registry,
            buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
        )
        self.fit_lag_groups = Histogram(
            "depo_fit_lag_groups",
            "Outcome groups logged while a fit ran: what its version misses when it lands",
            registry=self.registry,
            buckets=(0, 10, 100, 500, 1000, 2500, 5000, 10000, 50000),
        )
        self.predictor_version = Gauge(
            "depo_predictor_version",
            "Newest predictor version a run has stored",
            ["run"],
            registry=self.registry,
        )
