"""kill -9 of Redis, of the service and of both under load loses and double-counts nothing."""

from __future__ import annotations

import shutil

import pytest

from tests.fixtures.backends import BACKENDS, PG_ADMIN_URL

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        "postgres" not in BACKENDS or shutil.which("redis-server") is None,
        reason="needs PostgreSQL and a redis-server binary",
    ),
]


def test_kill_9_of_redis_and_of_the_service_under_load_loses_and_double_counts_nothing() -> None:
    """`python -m benchmarks.durability` at a small scale: one fault of each kind."""
    from benchmarks import durability

    result = durability.probe(
        1000, 3, size=16, pool=200, faults=("redis", "service", "both"), pg_admin_url=PG_ADMIN_URL
    )
    assert sorted(result.faults) == ["both", "redis", "service"]
    assert len(result.ledger.acked) >= 1000 and result.ledger.resends > 0
    a = result.audit
    assert (a.lost, a.double_counted, a.unacked_in_log, a.reward_mismatches) == (0, 0, 0, 0), (
        a.examples
    )
    assert a.stats_mismatches == 0, a.examples
    assert a.in_log == len(result.ledger.acked)
    assert result.ok


def test_the_audit_sees_a_lost_group_and_hot_stats_counted_twice() -> None:
    """The zeros above mean something: a row taken out of the log and a group folded twice."""
    import httpx
    import redis

    from benchmarks import durability
    from service.estimator.beta import PromptStats, add_group

    def corrupt(cluster: durability.Cluster, run: str, ledger: durability.Ledger) -> None:
        ledger.acked[(10**6, "0", "p0")] = [1.0] * 4  # acknowledged, never logged: a lost group
        httpx.get(f"{cluster.url}/v1/runs/{run}/summary").raise_for_status()  # stats caught up
        r = redis.Redis(port=cluster.redis_port)
        [key] = r.keys("*:stats2")
        field = next(f for f in r.hkeys(key) if f not in (b"_seq", b"_tok"))
        s = PromptStats.decode(r.hget(key, field))
        r.hset(key, field, add_group(s, s.last_step, 4, 0, 1.0).encode())  # folded twice
        r.close()

    result = durability.probe(
        200, 2, size=16, pool=100, faults=(), pg_admin_url=PG_ADMIN_URL, before_audit=corrupt
    )
    a = result.audit
    assert a.lost == 1 and a.in_log == len(result.ledger.acked) - 1
    assert a.double_counted == 1 and a.stats_mismatches == 1, a.examples
    assert not result.ok
