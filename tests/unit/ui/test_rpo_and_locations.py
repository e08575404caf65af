"""ui.rpo (the colour) and ui.locations (which prefixes, and who may see them)."""

from __future__ import annotations

import pytest

from airflow_kafka_backup.ui.locations import location_key, locations_of, visible
from airflow_kafka_backup.ui.rpo import CommitMeasurement, rpo_status, topic_rpo, worst


@pytest.mark.parametrize(("lag", "rpo", "status"), [
    (10, 100, "green"), (75, 100, "green"), (75.1, 100, "amber"), (100, 100, "amber"), (100.1, 100, "red"),
    (None, 100, "unknown"), (5, None, "none")])
def test_rpo_status(lag, rpo, status):
    assert rpo_status(lag, rpo) == status


def test_worst_status_wins():
    assert worst(["green", "amber", "green"]) == "amber"
    assert worst(["green", "red", "unknown"]) == "red"
    assert worst([]) == "none"


def test_lag_is_the_oldest_waiting_record_else_the_measurement_else_the_commit():
    now = 1_000_000
    waiting = CommitMeasurement(900_000, {"t": {"records": 5, "oldest_timestamp_ms": 880_000}, "u": {"records": 0}})
    t = topic_rpo("t", 60, now, 899_000, waiting)
    assert (t.recovery_point_ms, t.lag_s, t.status, t.source, t.records_waiting) == (880_000, 120, "red",
                                                                                     "measured", 5)
    u = topic_rpo("u", 200, now, 899_000, waiting)
    assert (u.recovery_point_ms, u.lag_s, u.status) == (900_000, 100, "green")
    # A later commit in S3 than the measurement (another Airflow's): the commit time is all we know.
    stale = topic_rpo("t", 200, now, 950_000, waiting)
    assert (stale.recovery_point_ms, stale.source, stale.records_waiting, stale.status) == (
        950_000, "commit_time", None, "green")
    assert topic_rpo("t", 60, now, None, None).status == "unknown"


def test_locations_from_params_and_run_confs_and_who_may_see_them():
    dags = [
        ("orders_backup", {"bucket": "b1", "prefix": "/kb/", "aws_conn_id": "aws_eu", "rpo_seconds": 600},
         [{"bucket": "b2"}, {"prefix": "other"}, {"bucket": None}, {"prefix": "a//b"}]),
        ("payments_backup", {"bucket": "b1", "prefix": "kb", "rpo_seconds": 300,
                             "sse_customer_key_variable": "sse_key"}, []),
        ("no_bucket", {"bucket": None, "prefix": "kb"}, []),
    ]
    found = {loc.key: loc for loc in locations_of(dags)}
    assert sorted(found) == [("b1", "kb"), ("b1", "other"), ("b2", "kb")]
    shared = found[("b1", "kb")]
    assert shared.dag_ids == {"orders_backup", "payments_backup"} and shared.aws_conn_id == "aws_eu"
    assert shared.rpo == 300  # the strictest
    # A user who may read only orders_backup sees its prefixes, that DAG alone, and its RPO.
    seen = {loc.key: loc for loc in visible(found.values(), {"orders_backup"})}
    assert sorted(seen) == [("b1", "kb"), ("b1", "other"), ("b2", "kb")]
    assert seen[("b1", "kb")].dag_ids == {"orders_backup"} and seen[("b1", "kb")].rpo == 600
    assert visible(found.values(), {"payments_backup"})[0].key == ("b1", "kb")
    assert len(visible(found.values(), {"payments_backup"})) == 1
    assert visible(found.values(), set()) == []
    assert location_key({"bucket": 123, "prefix": None}) == ("123", "kafka-backup")


def test_the_cache_keeps_a_value_for_its_ttl_and_says_when_it_was_loaded():
    from airflow_kafka_backup.ui.cache import TTLCache

    now = [100.0]
    loads = []
    cache = TTLCache(60, clock=lambda: now[0])

    def load():
        loads.append(now[0])
        return len(loads)

    assert cache.get("k", load) == (1, 100_000)
    now[0] = 159.9
    assert cache.get("k", load) == (1, 100_000)  # fresh: not loaded again
    assert cache.get("k", load, refresh=True) == (2, 159_900)  # "Read S3 again"
    now[0] = 220.0
    assert cache.get("k", load) == (3, 220_000)  # expired
    assert cache.get("other", load) == (4, 220_000)
