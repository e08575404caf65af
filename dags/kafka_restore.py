"""The shipped restore DAG: trigger it by hand from the UI form (or with a run conf) in an incident."""

from __future__ import annotations

import os

from airflow_kafka_backup.dag_factories import restore_dag

dag = restore_dag("kafka_restore", bucket=os.environ.get("KAFKA_BACKUP_BUCKET") or None)
