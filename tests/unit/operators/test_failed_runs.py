"""Unit tests: what decides whether a lock holder is finished, user errors that skip retries, the RPO guard."""

from __future__ import annotations

import pytest

from airflow_kafka_backup.compat import AirflowFailException
from airflow_kafka_backup.engine.backup.backlog import TopicLag, rpo_breaches
from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.storage.writer_lock import LockHolder
from airflow_kafka_backup.operators import backup as backup_operators
from airflow_kafka_backup.operators.backup import (
    KafkaBackupRpoGuardOperator,
    RpoExceededError,
    _finished_run_state,
    validate_rpo_seconds,
)
from airflow_kafka_backup.operators.s3 import UserInputError, fail_fast_on_user_errors


class FakeTaskInstance:
    def __init__(self, states: dict[tuple[str, str], str]) -> None:
        self.states = states
        self.asked: list[tuple[str, str]] = []

    def get_dagrun_state(self, dag_id: str, run_id: str) -> str:
        self.asked.append((dag_id, run_id))
        if (dag_id, run_id) not in self.states:
            raise RuntimeError("404 Not Found")
        return self.states[(dag_id, run_id)]


def test_only_a_finished_run_of_this_airflow_counts_as_finished(monkeypatch):
    monkeypatch.setattr(backup_operators, "airflow_instance_id", lambda: "this-airflow")
    ti = FakeTaskInstance({("d", "failed-run"): "failed", ("d", "done"): "success", ("d", "busy"): "running"})
    finished = _finished_run_state({"ti": ti})
    assert finished(LockHolder("failed-run", 0, "d", "this-airflow")) == "failed"
    assert finished(LockHolder("done", 0, "d", "this-airflow")) == "success"
    assert finished(LockHolder("busy", 0, "d", "this-airflow")) is None
    assert finished(LockHolder("gone", 0, "d", "this-airflow")) is None  # unknown here: the lease stands
    assert finished(LockHolder("failed-run", 0, "d", "another-airflow")) is None
    assert finished(LockHolder("failed-run", 0, None, None)) is None  # a lock from before holders said more
    assert ti.asked == [("d", "failed-run"), ("d", "done"), ("d", "busy"), ("d", "gone")]


def test_a_configuration_error_skips_the_retries_and_keeps_its_type_and_message():
    @fail_fast_on_user_errors
    def execute(self, context):
        raise ConfigurationError("bucket is required")

    with pytest.raises(UserInputError, match="^bucket is required$") as raised:
        execute(None, {})
    assert isinstance(raised.value, ConfigurationError) and isinstance(raised.value, AirflowFailException)

    @fail_fast_on_user_errors
    def transient(self, context):
        raise OSError("connection reset")

    with pytest.raises(OSError):  # anything else is left to the retries
        transient(None, {})


def test_rpo_breaches_name_each_topic_and_its_lag():
    lags = {"orders": TopicLag(12, 1_000_000), "payments": TopicLag(0, None), "audit": TopicLag(3, 1_590_000)}
    assert rpo_breaches(lags, 300, now_ms=1_600_000) == ["orders: 12 records not backed up, the oldest 600s old"]
    assert rpo_breaches(lags, 601, now_ms=1_600_000) == []


def test_the_rpo_guard_fails_without_retries_and_passes_without_an_rpo():
    old = {"orders": {"records": 5, "oldest_timestamp_ms": 1_000, "age_s": 1.0}}
    with pytest.raises(RpoExceededError, match="RPO of 60s exceeded: orders: 5 records not backed up"):
        KafkaBackupRpoGuardOperator(task_id="g", lag=old, rpo_seconds=60).execute({})
    assert issubclass(RpoExceededError, AirflowFailException)
    assert KafkaBackupRpoGuardOperator(task_id="g", lag=old, rpo_seconds=None).execute({})["breaches"] == []
    with pytest.raises(RpoExceededError, match="could not be measured"):
        KafkaBackupRpoGuardOperator(task_id="g", lag=None, rpo_seconds="60").execute({})
    assert validate_rpo_seconds("None") is None and validate_rpo_seconds("90") == 90.0
    for bad in (0, -1, "soon", True):
        with pytest.raises(ConfigurationError, match="rpo_seconds must be"):
            validate_rpo_seconds(bad)
