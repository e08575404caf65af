"""Metrics through Airflow's own stats facility, so StatsD and OpenTelemetry users get them with no set-up.

Each name carries the DAG id (and the topic), as Airflow's own per-DAG metrics do
(``dagrun.duration.success.<dag_id>``), so plain StatsD tells DAGs and topics apart; the same
values carry ``dag_id``/``topic`` tags for StatsD flavours and OpenTelemetry that read tags.
A deployment with ``[metrics] metrics_allow_list`` set must allow the ``kafka_backup`` prefix.

    kafka_backup.records.<dag_id>                 counter  records a backup run committed
    kafka_backup.bytes.<dag_id>                   counter  bytes of its segments
    kafka_backup.segments.<dag_id>                counter  segments it committed
    kafka_backup.run_seconds.<dag_id>             timer    from the run's start to its commit
    kafka_backup.lag_records.<dag_id>.<topic>     gauge    records not yet in a committed backup
    kafka_backup.lag_seconds.<dag_id>.<topic>     gauge    age of the oldest of them (0: none waiting)
    kafka_backup.drill_ok.<dag_id>                counter  restore drills that passed
    kafka_backup.drill_failed.<dag_id>            counter  restore drills that failed
    kafka_backup.drill_rto_seconds.<dag_id>       gauge    the RTO a drill projects for the whole backup
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta

from airflow_kafka_backup.compat import Stats
from airflow_kafka_backup.engine.backup.backlog import TopicLag

PREFIX = "kafka_backup"
log = logging.getLogger(__name__)


def emit_run(dag_id: str, records: int, bytes_: int, segments: int, seconds: float | None) -> None:
    tags = {"dag_id": dag_id}
    Stats.incr(f"{PREFIX}.records.{dag_id}", count=records, tags=tags)
    Stats.incr(f"{PREFIX}.bytes.{dag_id}", count=bytes_, tags=tags)
    Stats.incr(f"{PREFIX}.segments.{dag_id}", count=segments, tags=tags)
    if seconds is not None:
        Stats.timing(f"{PREFIX}.run_seconds.{dag_id}", timedelta(seconds=seconds), tags=tags)


def emit_lag(dag_id: str, lags: Mapping[str, TopicLag], now_ms: int) -> None:
    for topic, lag in sorted(lags.items()):
        tags = {"dag_id": dag_id, "topic": topic}
        Stats.gauge(f"{PREFIX}.lag_records.{dag_id}.{topic}", lag.records, tags=tags)
        Stats.gauge(f"{PREFIX}.lag_seconds.{dag_id}.{topic}", max(lag.age_s(now_ms) or 0.0, 0.0), tags=tags)


def emit_drill(dag_id: str, passed: bool, projected_rto_seconds: float | None) -> None:
    tags = {"dag_id": dag_id}
    Stats.incr(f"{PREFIX}.drill_{'ok' if passed else 'failed'}.{dag_id}", tags=tags)
    if projected_rto_seconds is not None:
        Stats.gauge(f"{PREFIX}.drill_rto_seconds.{dag_id}", projected_rto_seconds, tags=tags)
