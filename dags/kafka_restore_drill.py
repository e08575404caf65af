"""The shipped restore drill DAG: proves on a schedule that the backup restores (docs/drills.md).

- ``KAFKA_BACKUP_BUCKET``: the S3 bucket (as for the backup DAG);
- ``KAFKA_DRILL_TOPICS``: comma-separated topics or ``re:`` patterns (default: every backed-up topic);
- ``KAFKA_DRILL_SCHEDULE``: a cron expression or preset (default ``@weekly``; ``none`` for manual only).

Without a bucket it is not scheduled (a drill of no bucket could only fail); trigger it with one in the conf.
"""

from __future__ import annotations

import os

from airflow_kafka_backup.dag_factories import restore_drill_dag

_bucket = os.environ.get("KAFKA_BACKUP_BUCKET") or None
_schedule = os.environ.get("KAFKA_DRILL_SCHEDULE", "@weekly")

dag = restore_drill_dag(
    "kafka_restore_drill",
    schedule=None if _schedule.lower() == "none" or _bucket is None else _schedule,
    topics=[t.strip() for t in os.environ.get("KAFKA_DRILL_TOPICS", "re:.*").split(",") if t.strip()],
    bucket=_bucket,
)
