"""Test DAG: the backup factory with retries turned off through default_args, so a killed task fails its run."""

from airflow_kafka_backup.dag_factories import backup_dag

no_retries = backup_dag("kafka_backup_no_retries", dag_kwargs={"default_args": {"retries": 0}})
