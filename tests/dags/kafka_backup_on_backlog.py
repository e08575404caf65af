"""Test DAGs: the backup factory with a backlog sensor, deferrable and poking. Ten lines, as users write them."""

from airflow_kafka_backup.dag_factories import backup_dag

deferred = backup_dag("kafka_backup_on_backlog", wait_for_backlog={
    "min_records": 50, "deferrable": True, "poke_interval": 1, "timeout": 300})
poking = backup_dag("kafka_backup_on_backlog_poke", wait_for_backlog={
    "min_records": 50, "mode": "poke", "poke_interval": 1, "timeout": 300})
verified = backup_dag("kafka_backup_verified", verify=True)
rescheduling = backup_dag("kafka_backup_on_backlog_reschedule", wait_for_backlog={
    "min_records": 50, "mode": "reschedule", "poke_interval": 1, "timeout": 300})
