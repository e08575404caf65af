"""Unit tests: the drill DAG factory and what the drill task says when a drill fails."""

from __future__ import annotations

import pytest

from airflow_kafka_backup.compat import AirflowFailException
from airflow_kafka_backup.engine.drill.report import DrillReport
from airflow_kafka_backup.engine.errors import ConfigurationError, KafkaBackupError
from airflow_kafka_backup.operators.drill import KafkaRestoreDrillOperator, tool_versions


def test_the_factory_builds_one_scheduled_drill_task_and_is_re_exported():
    from airflow_kafka_backup import dag_factories
    from airflow_kafka_backup.drill_dag import restore_drill_dag

    assert dag_factories.restore_drill_dag is restore_drill_dag
    dag = restore_drill_dag("shape_drill", bucket="b", topics=["orders"], records_per_partition=50)
    assert [t.task_id for t in dag.tasks] == ["drill"]
    assert isinstance(dag.tasks[0], KafkaRestoreDrillOperator)
    assert dag.params["records_per_partition"] == 50 and dag.params["target_kafka_conn_id"] is None
    assert dag.max_active_runs == 1
    with pytest.raises(AttributeError):
        dag_factories.no_such_factory  # noqa: B018


@pytest.mark.parametrize("defaults, message", [
    ({"records_per_partition": 0}, "records_per_partition"),
    ({"scratch_prefix": ""}, "scratch_prefix"),
    ({"commit_interval_seconds": 99}, "commit_interval_seconds"),
    ({"prefix": "a//b"}, "prefix"),
])
def test_bad_defaults_are_refused_when_the_dag_file_is_parsed(defaults, message):
    from airflow_kafka_backup.drill_dag import restore_drill_dag

    with pytest.raises(ConfigurationError, match=message):
        restore_drill_dag("bad_drill", bucket="b", **defaults)


def report(failure: dict) -> DrillReport:
    return DrillReport("d/r", "2026-12-03T10:00:00+00:00", {"bucket": "bk", "prefix": "p"}, "a", "a", {},
                       failure=failure)


def test_a_difference_fails_without_retries_naming_partition_and_offset():
    error = KafkaRestoreDrillOperator._failure(report(
        {"partition": "orders[2]", "source_offset": 1234, "target_offset": 34, "reason": "value differs"}), "k")
    assert isinstance(error, AirflowFailException)
    assert str(error) == ("Restore drill failed: orders[2] differs first at source offset 1234 (target offset 34): "
                          "value differs. Report: s3://bk/k")


def test_an_error_during_the_drill_may_be_retried():
    error = KafkaRestoreDrillOperator._failure(report({"error": "IntegrityError: sha256 mismatch"}), "k")
    assert isinstance(error, KafkaBackupError) and not isinstance(error, AirflowFailException)
    assert "IntegrityError: sha256 mismatch" in str(error)


def test_the_report_names_the_tool_versions():
    versions = tool_versions()
    assert {"airflow-kafka-backup", "apache-airflow", "confluent-kafka", "librdkafka", "python"} <= set(versions)


def test_the_shipped_drill_dag_is_scheduled_only_with_a_bucket(monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "dags" / "kafka_restore_drill.py"

    def load():
        spec = importlib.util.spec_from_file_location("shipped_drill", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.dag

    monkeypatch.delenv("KAFKA_BACKUP_BUCKET", raising=False)
    monkeypatch.delenv("KAFKA_DRILL_SCHEDULE", raising=False)
    assert type(load().timetable).__name__ == "NullTimetable"  # no bucket: manual only
    monkeypatch.setenv("KAFKA_BACKUP_BUCKET", "backups")
    scheduled = load()
    assert scheduled.params["bucket"] == "backups" and type(scheduled.timetable).__name__ != "NullTimetable"
    monkeypatch.setenv("KAFKA_DRILL_SCHEDULE", "none")
    assert type(load().timetable).__name__ == "NullTimetable"


def test_drill_metrics_count_the_verdict_and_gauge_the_projected_rto(monkeypatch):
    from airflow_kafka_backup import metrics

    calls = []
    fake = type("Stats", (), {"incr": staticmethod(lambda name, **kw: calls.append(("incr", name, kw))),
                              "gauge": staticmethod(lambda name, value, **kw: calls.append(("gauge", name, value)))})
    monkeypatch.setattr(metrics, "Stats", fake)
    metrics.emit_drill("orders_drill", True, 812.5)
    metrics.emit_drill("orders_drill", False, None)
    assert calls == [("incr", "kafka_backup.drill_ok.orders_drill", {"tags": {"dag_id": "orders_drill"}}),
                     ("gauge", "kafka_backup.drill_rto_seconds.orders_drill", 812.5),
                     ("incr", "kafka_backup.drill_failed.orders_drill", {"tags": {"dag_id": "orders_drill"}})]
