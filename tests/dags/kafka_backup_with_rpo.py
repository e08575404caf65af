"""Test DAG: the backup factory with an RPO and the verify task, for the "Kafka backups" page's tests."""

import os
from datetime import timedelta

from airflow_kafka_backup.dag_factories import backup_dag

# The page's tests judge the colour against this RPO; the browser test waits it out, so it is short.
with_rpo = backup_dag("kafka_backup_with_rpo", rpo=timedelta(seconds=float(os.environ.get("AKB_TEST_RPO_S", "20"))),
                      verify=True, dag_kwargs={"default_args": {"retries": 0}})
