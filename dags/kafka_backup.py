"""The shipped backup DAG. Set the defaults through the environment, or per run in the form:

- ``KAFKA_BACKUP_TOPICS``: comma-separated topics;
- ``KAFKA_BACKUP_BUCKET``: the S3 bucket;
- ``KAFKA_BACKUP_SCHEDULE``: a cron expression or preset (default ``@hourly``; ``none`` for manual only).
"""

from __future__ import annotations

import os

from airflow_kafka_backup.dag_factories import backup_dag

_schedule = os.environ.get("KAFKA_BACKUP_SCHEDULE", "@hourly")

dag = backup_dag(
    "kafka_backup",
    schedule=None if _schedule.lower() == "none" else _schedule,
    topics=[t.strip() for t in os.environ.get("KAFKA_BACKUP_TOPICS", "").split(",") if t.strip()],
    bucket=os.environ.get("KAFKA_BACKUP_BUCKET") or None,
)
