"""Unit tests: the shipped and example DAG files parse, with the tasks and Params they promise."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("folder", ["dags", "airflow_kafka_backup/example_dags"])
def test_dag_files_parse_without_errors(folder):
    from airflow_kafka_backup.compat import dag_bag_class

    bag = dag_bag_class()(dag_folder=str(REPO / folder))
    assert bag.import_errors == {}
    assert bag.dags


def test_backup_and_restore_shapes():
    from airflow_kafka_backup.compat import airflow_at_least
    from airflow_kafka_backup.dag_factories import backup_dag, restore_dag

    backup = backup_dag("shape_backup", topics=["t"], bucket="b", wait_for_backlog={"min_records": 5})
    assert {t.task_id: sorted(t.downstream_task_ids) for t in backup.tasks} == {
        "wait_for_backlog": ["plan"], "plan": ["backup", "commit", "retention"], "retention": ["backup"],
        "backup": ["commit"], "commit": ["check_rpo"], "check_rpo": []}
    assert backup.params["topics"] == ["t"] and backup.params["flush_size"] == 10_000
    restore = restore_dag("shape_restore")
    # Nothing is created or produced before the approval (Airflow 3.1+; 3.0 has no human-in-the-loop operator).
    if airflow_at_least("3.1.0"):
        assert {t.task_id: sorted(t.downstream_task_ids) for t in restore.tasks} == {
            "plan": ["approval", "create_topics", "restore_consumer_groups", "work_units"],
            "approval": ["work_units"], "work_units": ["create_topics", "restore", "verify"],
            "create_topics": ["restore"], "restore": ["verify"], "verify": ["restore_consumer_groups"],
            "restore_consumer_groups": []}
    else:
        assert {t.task_id: sorted(t.downstream_task_ids) for t in restore.tasks} == {
            "plan": ["create_topics", "restore_consumer_groups", "work_units"],
            "work_units": ["create_topics", "restore", "verify"], "create_topics": ["restore"],
            "restore": ["verify"], "verify": ["restore_consumer_groups"], "restore_consumer_groups": []}
    assert restore.schedule is None if hasattr(restore, "schedule") else True
    # work_units plans again with the plan's very settings: else the approved units would never come out again.
    plan, units = restore.get_task("plan"), restore.get_task("work_units")
    for name in ("topics", "topic_mapping", "incarnations", "from_timestamp", "until_timestamp", "offset_bounds",
                 "bucket", "prefix", "aws_conn_id", "sse_customer_key_variable"):
        assert getattr(units, name) == getattr(plan, name), name


def test_provider_info_lists_what_it_ships():
    import importlib

    from airflow_kafka_backup import get_provider_info

    info = get_provider_info()
    assert info["package-name"] == "airflow-kafka-backup"
    for group in ("operators", "sensors", "hooks", "triggers"):
        for entry in info[group]:
            for module in entry["python-modules"]:
                importlib.import_module(module)


def test_params_schema_refuses_what_the_form_can_check():
    import copy

    from airflow.sdk.definitions.param import ParamsDict

    from airflow_kafka_backup.dag_factories import backup_params

    params = backup_params(topics=["t"], bucket="b")
    ParamsDict(params).validate()  # the defaults are valid
    for name, bad in [("flush_size", 0), ("compression", "lz4"), ("offset_pad_width", 99), ("retention_days", 0),
                      ("acl", "everyone"), ("part_size", 1024), ("topics", [""]), ("flush_size", "ten")]:
        with pytest.raises(Exception):  # noqa: B017 - Airflow's ParamValidationError, whatever its module
            copy.deepcopy(params[name]).resolve(bad)


def test_restore_commit_interval_is_a_param_passed_to_plan_and_restore():
    import copy

    from airflow_kafka_backup.dag_factories import restore_dag, restore_params
    from airflow_kafka_backup.engine.errors import ConfigurationError
    from airflow_kafka_backup.engine.restore.loop import COMMIT_INTERVAL_S

    params = restore_params()
    assert params["commit_interval_seconds"].value == COMMIT_INTERVAL_S
    for good in (0, 2.5, 30):
        assert copy.deepcopy(params["commit_interval_seconds"]).resolve(good) == good
    for bad in (-1, 31, "five"):
        with pytest.raises(Exception):  # noqa: B017 - Airflow's ParamValidationError, whatever its module
            copy.deepcopy(params["commit_interval_seconds"]).resolve(bad)
    dag = restore_dag("interval_restore", commit_interval_seconds=0.5)
    assert dag.params["commit_interval_seconds"] == 0.5
    # plan checks it before creating topics; the mapped restore tasks use it
    assert dag.get_task("plan").commit_interval_seconds == "{{ params.commit_interval_seconds }}"
    assert dag.get_task("restore").partial_kwargs["commit_interval_seconds"] == "{{ params.commit_interval_seconds }}"
    with pytest.raises(ConfigurationError, match="commit_interval_seconds"):  # a bad default fails at parse time
        restore_dag("bad_interval_restore", commit_interval_seconds=60)


def test_restore_plan_refuses_a_bad_commit_interval_before_touching_s3_or_kafka():
    from airflow_kafka_backup.engine.errors import ConfigurationError
    from airflow_kafka_backup.operators.restore import KafkaRestorePlanOperator

    plan = KafkaRestorePlanOperator(task_id="plan", topics=["t"], bucket="b", commit_interval_seconds="61",
                                    aws_conn_id="no_such_connection", kafka_conn_id="no_such_connection")
    with pytest.raises(ConfigurationError, match="commit_interval_seconds .* got 61.0"):
        plan.execute({"run_id": "manual__bad_interval", "ti": None})


def test_tasks_retry_by_default_and_default_args_override_it():
    from datetime import timedelta

    from airflow_kafka_backup.dag_factories import backup_dag, restore_dag

    for dag in (backup_dag("retries_backup", topics=["t"], bucket="b"), restore_dag("retries_restore")):
        assert {(t.retries, t.retry_delay, bool(t.retry_exponential_backoff)) for t in dag.tasks} == {
            (2, timedelta(minutes=1), True)}, dag.dag_id
    quiet = backup_dag("no_retries", topics=["t"], bucket="b",
                       dag_kwargs={"default_args": {"retries": 0, "owner": "data"}})
    assert {(t.retries, t.owner) for t in quiet.tasks} == {(0, "data")}


def test_rpo_becomes_the_param_default_and_bad_values_fail_at_parse_time():
    from datetime import timedelta

    import pytest

    from airflow_kafka_backup.dag_factories import backup_dag
    from airflow_kafka_backup.engine.errors import ConfigurationError

    assert backup_dag("rpo_backup", topics=["t"], bucket="b", rpo=timedelta(hours=2)).params["rpo_seconds"] == 7200
    with pytest.raises(ConfigurationError, match="rpo_seconds must be a number of seconds greater than 0"):
        backup_dag("rpo_bad", topics=["t"], bucket="b", rpo_seconds=-5)


def test_compression_level_is_a_param_passed_to_the_plan_and_a_bad_default_fails_at_parse_time():
    import copy

    from airflow_kafka_backup.dag_factories import backup_dag, backup_params
    from airflow_kafka_backup.engine.errors import ConfigurationError

    params = backup_params(topics=["t"], bucket="b")
    assert params["compression_level"].value is None  # the codec's default for backups
    assert copy.deepcopy(params["compression_level"]).resolve(5) == 5
    with pytest.raises(Exception):  # noqa: B017 - Airflow's ParamValidationError, whatever its module
        copy.deepcopy(params["compression_level"]).resolve("high")
    dag = backup_dag("level_backup", topics=["t"], bucket="b", compression="zstd", compression_level=9)
    assert dag.params["compression_level"] == 9
    assert dag.get_task("plan").compression_level == "{{ params.compression_level }}"
    with pytest.raises(ConfigurationError, match="compression_level for compression 'gzip' must be .* got 9"):
        backup_dag("level_bad", topics=["t"], bucket="b", compression="gzip", compression_level=9)


def test_backup_plan_refuses_a_bad_compression_level_before_touching_s3_or_kafka():
    from airflow_kafka_backup.engine.errors import ConfigurationError
    from airflow_kafka_backup.operators.backup import KafkaBackupPlanOperator

    plan = KafkaBackupPlanOperator(task_id="plan", topics=["t"], bucket="b", compression="zstd",
                                   compression_level="99", aws_conn_id="no_such_connection",
                                   kafka_conn_id="no_such_connection")
    with pytest.raises(ConfigurationError, match="compression_level for compression 'zstd' .* got '99'"):
        plan.execute({"run_id": "manual__bad_level", "ti": None})
