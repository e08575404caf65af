"""Unit test: the import paths users' DAG files, serialized DAGs and deferred triggers name keep working."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "airflow_kafka_backup.dag_factories": ["backup_dag", "restore_dag", "backup_params", "restore_params",
                                           "restore_drill_dag"],
    "airflow_kafka_backup.drill_dag": ["restore_drill_dag", "drill_params"],
    "airflow_kafka_backup.operators.drill": ["KafkaRestoreDrillOperator"],
    "airflow_kafka_backup.operators.backup": [
        "KafkaBackupPlanOperator", "KafkaBackupOperator", "KafkaBackupCommitOperator", "KafkaBackupRetentionOperator",
        "KafkaBackupVerifyOperator", "KafkaBackupRpoGuardOperator", "checkpoint_variable_key"],
    "airflow_kafka_backup.operators.restore": [
        "KafkaRestorePlanOperator", "KafkaRestoreOperator", "KafkaRestoreVerifyOperator",
        "KafkaRestoreGroupOffsetsOperator", "KafkaRestoreCreateTopicsOperator", "KafkaRestoreWorkUnitsOperator"],
    "airflow_kafka_backup.operators.restore_approval": ["KafkaRestoreApprovalOperator"],  # None on Airflow 3.0
    "airflow_kafka_backup.sensors.backlog": ["KafkaBacklogSensor"],
    "airflow_kafka_backup.triggers.backlog": ["KafkaBacklogTrigger"],
    "airflow_kafka_backup.hooks.kafka": ["KafkaRangeConsumerHook", "KafkaTransactionalProducerHook"],
    "airflow_kafka_backup.cli": ["main"],
    "airflow_kafka_backup": ["get_provider_info"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_paths_still_import(module):
    loaded = importlib.import_module(module)
    assert [name for name in PUBLIC[module] if not hasattr(loaded, name)] == []


def test_the_provider_info_names_modules_that_exist():
    from airflow_kafka_backup import get_provider_info

    info = get_provider_info()
    for kind in ("operators", "sensors", "triggers", "hooks"):
        for entry in info[kind]:
            for module in entry["python-modules"]:
                importlib.import_module(module)


def test_a_trigger_serialized_by_the_previous_release_still_loads():
    """A deferred sensor's trigger row holds this classpath and these kwargs (no exclude_topics, no topic_ids)."""
    from airflow_kafka_backup.triggers.backlog import KafkaBacklogTrigger

    classpath = "airflow_kafka_backup.triggers.backlog.KafkaBacklogTrigger"
    module, _, name = classpath.rpartition(".")
    trigger_class = getattr(importlib.import_module(module), name)
    assert trigger_class is KafkaBacklogTrigger
    trigger = trigger_class(kafka_conn_id="kafka_default", topics=["orders"], checkpoints={"orders": {"0": 5}},
                            isolation_level="read_committed", min_records=10, max_age_s=None, poll_interval_s=5.0)
    assert trigger.serialize()[0] == classpath
