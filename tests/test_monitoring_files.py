"""The `monitoring` compose profile and the Grafana dashboard, checked without Docker.

The dashboard's queries are held against the metrics the service really exports (its own
registry), so renaming a metric or a label in service/metrics.py fails here, not in Grafana.
With a Docker engine on the machine, `docker compose --profile monitoring config` runs too.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.metrics import Metrics

REPO = Path(__file__).resolve().parents[1]
MON = REPO / "docs" / "monitoring"
PROFILE = {"prometheus", "grafana", "postgres-exporter", "redis-exporter"}
EXPORTER_PREFIXES = ("pg_", "redis_")  # postgres-exporter's and redis_exporter's metrics
PROMQL_WORDS = {
    "sum", "by", "rate", "histogram_quantile", "max", "le", "up", "without", "avg", "min",
}  # fmt: skip


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def test_monitoring_profile_services_mount_files_that_exist(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= PROFILE
    for name, svc in services.items():
        if name in PROFILE:
            assert svc.get("profiles") == ["monitoring"], name
            for vol in svc.get("volumes", []):
                src = vol.split(":")[0]
                if src.startswith("./"):
                    assert (REPO / src).is_file(), f"{name} mounts missing {src}"
                else:
                    assert src in compose["volumes"], f"{name}: undeclared volume {src}"
            for dep in svc.get("depends_on", {}):
                assert dep in services
        else:
            assert "profiles" not in svc, f"{name} must start without a profile"
    assert services["prometheus"]["ports"] == ["9090:9090"]
    assert services["grafana"]["ports"] == ["3000:3000"]


def test_prometheus_scrapes_every_replica_and_the_exporters() -> None:
    cfg = yaml.safe_load((MON / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    depo = jobs["depo"]
    assert depo["metrics_path"] == "/metrics"
    assert depo["dns_sd_configs"] == [{"names": ["depo"], "type": "A", "port": 8000}]
    assert jobs["postgres"]["static_configs"][0]["targets"] == ["postgres-exporter:9187"]
    assert jobs["redis"]["static_configs"][0]["targets"] == ["redis-exporter:9121"]


def _exported() -> dict[str, set[str]]:
    """Sample name -> label names, of every metric the service's registry holds."""
    out: dict[str, set[str]] = {}
    for metric in vars(Metrics()).values():
        name = getattr(metric, "_name", None)
        if name is None:
            continue
        labels = set(metric._labelnames)
        kind = metric._type
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
        for suffix in suffixes.get(kind, [""]):
            out[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return out


def test_dashboard_queries_only_metrics_and_labels_that_exist() -> None:
    dash = json.loads((MON / "grafana-dashboard.json").read_text())
    source = yaml.safe_load((MON / "grafana" / "datasource.yml").read_text())
    uid = source["datasources"][0]["uid"]
    exported = _exported()
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dash["templating"]["list"]]
    assert len(exprs) >= 10
    used: set[str] = set()
    for p in dash["panels"]:
        assert p["datasource"]["uid"] == uid, p["title"]
        assert {"x", "y", "w", "h"} <= set(p["gridPos"])
    for expr in exprs:
        for name, labels in re.findall(r"([a-z_][a-z0-9_]*)\s*(?:\{([^}]*)\})?", expr):
            if name.startswith("depo_"):
                assert name in exported, f"{name} is not exported by service/metrics.py"
                used.add(name)
                for label in re.findall(r"([a-z_]+)\s*=~?", labels):
                    assert label in exported[name], f"{name} has no label {label}"
            elif not name.startswith(EXPORTER_PREFIXES) and name not in PROMQL_WORDS:
                known = {"label_values", "route", "status", "run", "instance", "datname"}
                assert name in known or name.startswith("__"), name  # Grafana's $__ variables
    # the panels the issue asks for: request rates and latencies, zero-variance per run
    assert {
        "depo_request_duration_seconds_count",
        "depo_request_duration_seconds_bucket",
        "depo_zero_variance_share",
    } <= used
    titles = " ".join(p["title"] for p in dash["panels"])
    assert "PostgreSQL" in titles and "Redis" in titles


def _compose_cli() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(not _compose_cli(), reason="no `docker compose` on this machine")
def test_docker_compose_config_accepts_the_profile() -> None:
    r = subprocess.run(
        ["docker", "compose", "--profile", "monitoring", "config", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
