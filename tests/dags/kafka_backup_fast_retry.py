"""Test DAG: the backup factory retrying after seconds, not minutes, so a task whose worker died is retried
on another worker within a test (tests/integration/airflow/test_celery.py)."""

from datetime import timedelta

from airflow_kafka_backup.dag_factories import backup_dag

fast_retry = backup_dag("kafka_backup_fast_retry", dag_kwargs={"default_args": {
    "retries": 2, "retry_delay": timedelta(seconds=2), "max_retry_delay": timedelta(seconds=5)}})
