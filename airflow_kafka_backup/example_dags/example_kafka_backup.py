"""Example: hourly backup of two topics, waiting (in the triggerer) for at least 10k new records or an hour.

Airflow 3.3 lists this file among the provider's example DAGs when examples are loaded.
"""

from __future__ import annotations

from airflow_kafka_backup.dag_factories import backup_dag

dag = backup_dag(
    "example_kafka_backup",
    schedule="@hourly",
    topics=["orders", "payments"],
    bucket="my-kafka-backups",
    compression="zstd",
    retention_days=35,
    wait_for_backlog={"min_records": 10_000, "max_age_s": 3600, "deferrable": True},
)
