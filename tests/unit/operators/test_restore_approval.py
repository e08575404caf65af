"""Unit tests: the restore's approval step (Airflow 3.1+) and the topic creation that waits for it.

Version-aware, not skipped: on Airflow 3.0 there is no human-in-the-loop operator, and the tests
check the restore DAG then goes plan -> create_topics without an approval step.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from airflow_kafka_backup.compat import AirflowSkipException, airflow_at_least
from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.operators import restore as restore_operators
from airflow_kafka_backup.operators.restore import KafkaRestoreCreateTopicsOperator
from airflow_kafka_backup.operators.restore_approval import KafkaRestoreApprovalOperator, approval_wanted

HITL = airflow_at_least("3.1.0")


def test_nobody_is_asked_in_a_dry_run_or_with_approval_off():
    assert approval_wanted(True, False) is None
    assert approval_wanted("True", "False") is None  # as a DAG without native rendering renders them
    assert "Dry run" in approval_wanted(True, True)
    assert "require_approval is off" in approval_wanted(False, False)
    with pytest.raises(ConfigurationError, match="require_approval must be true or false"):
        approval_wanted(None, False)


def test_the_approval_operator_exists_exactly_where_airflow_has_human_in_the_loop():
    from airflow_kafka_backup.dag_factories import restore_dag

    dag = restore_dag("approval_shape", topics=["t"], bucket="b")
    assert (KafkaRestoreApprovalOperator is not None) == HITL
    assert ("approval" in dag.task_ids) == HITL
    assert dag.params["require_approval"] is True
    assert restore_dag("approval_off", require_approval=False).params["require_approval"] is False
    if HITL:
        approval = dag.get_task("approval")
        assert approval.body == "{{ ti.xcom_pull(task_ids='plan', key='report') }}"
        assert approval.ignore_downstream_trigger_rules is True  # a rejection skips verify and the groups too
        assert approval.options == ["Approve", "Reject"]
        assert (approval.require_approval, approval.dry_run) == ("{{ params.require_approval }}",
                                                                 "{{ params.dry_run }}")
        assert sorted(approval.get_flat_relative_ids(upstream=False)) == [
            "create_topics", "restore", "restore_consumer_groups", "verify", "work_units"]
        # Its work units are written after it (the plan hands over only their digest and the manifests' pin).
        assert dag.get_task("plan").approval_follows == "{{ params.require_approval }}"
        assert dag.get_task("plan").work_units_inline is False


def test_approval_asks_only_when_it_must(monkeypatch):
    if not HITL:  # Airflow 3.0: no operator to ask with; the restore goes ahead (see the DAG shape test)
        assert KafkaRestoreApprovalOperator is None
        return
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    asked = []
    monkeypatch.setattr(ApprovalOperator, "execute", lambda self, context: asked.append(self.body) or "waiting")

    def approval(**kwargs):
        return KafkaRestoreApprovalOperator(task_id="approval", body="the report", **kwargs)

    assert approval(require_approval=True, dry_run=False).execute({}) == "waiting" and asked == ["the report"]
    assert approval(require_approval=False, dry_run=False).execute({}) is None and len(asked) == 1
    with pytest.raises(AirflowSkipException, match="Dry run"):
        approval(require_approval=True, dry_run=True).execute({})
    assert len(asked) == 1


def _create(topics) -> KafkaRestoreCreateTopicsOperator:
    return KafkaRestoreCreateTopicsOperator(task_id="create_topics", topics=topics)


def test_create_topics_creates_what_the_plan_found_missing(monkeypatch):
    created = {}
    monkeypatch.setattr(restore_operators, "KafkaAdminClientHook", lambda kafka_config_id: SimpleNamespace(get_conn=1))
    monkeypatch.setattr(restore_operators, "missing_target_topics", lambda admin, parts, create: sorted(parts))
    monkeypatch.setattr(restore_operators, "create_topics",
                        lambda admin, partitions, configs, factors: created.update(partitions=partitions,
                                                                                   configs=configs, factors=factors))
    spec = {"orders-r": {"partitions": 3, "configs": {"retention.ms": "-1"}, "replication_factor": 1}}
    assert _create(spec).execute({}) == ["orders-r"]
    assert created == {"partitions": {"orders-r": 3}, "configs": {"orders-r": {"retention.ms": "-1"}},
                       "factors": {"orders-r": 1}}
    assert _create({}).execute({}) == []  # every target existed


def test_create_topics_refuses_a_new_target_that_took_records_since_the_plan(monkeypatch):
    monkeypatch.setattr(restore_operators, "KafkaAdminClientHook", lambda kafka_config_id: SimpleNamespace(get_conn=1))
    monkeypatch.setattr(restore_operators, "missing_target_topics", lambda admin, partitions, create: [])
    monkeypatch.setattr(restore_operators, "target_record_counts", lambda admin, targets: {"orders-r": 12})
    monkeypatch.setattr(restore_operators, "create_topics", lambda *a: pytest.fail("must not create"))
    with pytest.raises(ConfigurationError, match=r"orders-r \(12 records\)"):
        _create({"orders-r": {"partitions": 1, "configs": {}, "replication_factor": None}}).execute({})
