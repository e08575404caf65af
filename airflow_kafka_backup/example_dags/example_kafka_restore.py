"""Example: the restore DAG, triggered by hand; the form asks for topics, target names and a point in time."""

from __future__ import annotations

from airflow_kafka_backup.dag_factories import restore_dag

dag = restore_dag("example_kafka_restore", bucket="my-kafka-backups", topic_configs={"retention.ms": "-1"})
