"""Unit tests: the restore plan task refuses bad arguments before it creates any topic.

S3 (the plan from the manifests) and the Kafka admin client are faked; the integration
tests run the same task against the real broker and S3 endpoint.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaException

from airflow_kafka_backup.errors import ConfigurationError
from airflow_kafka_backup.group_offsets import target_groups, validate_group_mapping
from airflow_kafka_backup.operators import restore as restore_operators
from airflow_kafka_backup.operators.restore import KafkaRestorePlanOperator
from airflow_kafka_backup.restore_planning import PartitionRestore, RestorePlan


class FakeFuture:
    def __init__(self, value: object = None, error: Exception | None = None) -> None:
        self.value, self.error = value, error

    def result(self) -> object:
        if self.error is not None:
            raise self.error
        return self.value


class FakeAdmin:
    """Stands in for ``confluent_kafka.admin.AdminClient``: one broker, no topics yet, no group members.

    Refuses ``cleanup.policy=shred`` as a real broker does; records what it validated and created.
    """

    def __init__(self) -> None:
        self.validated: list[str] = []
        self.created: list[str] = []

    def list_topics(self, timeout=None):
        return SimpleNamespace(topics={}, brokers={1: object()})

    def create_topics(self, new_topics, validate_only=False, operation_timeout=None):
        (self.validated if validate_only else self.created).extend(t.topic for t in new_topics)
        return {t.topic: FakeFuture(error=KafkaException("Invalid value shred for configuration cleanup.policy")
                                    if t.config.get("cleanup.policy") == "shred" else None) for t in new_topics}

    def describe_consumer_groups(self, groups, request_timeout=None):
        return {g: FakeFuture(SimpleNamespace(members=[])) for g in groups}


class NoXCom:
    def xcom_push(self, key, value) -> None:
        pass


@pytest.fixture
def admin(monkeypatch) -> FakeAdmin:
    """The plan's S3 and Kafka sides faked: a backup of ``orders`` (one partition) and groups ``billing``,
    ``billing-v2``; the target topic does not exist yet."""
    admin = FakeAdmin()
    offsets = {"orders": {"0": 5}}

    def plan_restore(store, prefix, settings, check_manifest=None) -> RestorePlan:
        partition = PartitionRestore("orders", settings.topic_mapping["orders"], 0)
        return RestorePlan([partition], {"orders": 1}, dict(settings.topic_mapping),
                           group_offsets={"billing": offsets, "billing-v2": offsets})

    monkeypatch.setattr(restore_operators, "plan_restore", plan_restore)
    monkeypatch.setattr(restore_operators, "KafkaAdminClientHook",
                        lambda kafka_config_id: SimpleNamespace(get_conn=admin))
    monkeypatch.setattr(KafkaRestorePlanOperator, "check_bucket", lambda self: None)
    return admin


def _plan(**kwargs) -> KafkaRestorePlanOperator:
    plan = KafkaRestorePlanOperator(task_id="plan", topics=["orders"], bucket="b",
                                    topic_mapping={"orders": "orders-restored"}, **kwargs)
    plan.store = object()  # never used: plan_restore is faked
    return plan


def test_dry_run_asks_the_broker_about_topic_configs(admin):
    plan = _plan(dry_run=True, topic_configs={"cleanup.policy": "shred", "retention.ms": "-1"})
    with pytest.raises(ConfigurationError, match="refuses these topic configs: orders-restored: cleanup.policy"):
        plan.execute({"run_id": "manual__dry", "ti": NoXCom()})
    assert admin.created == []


def test_dry_run_with_good_configs_validates_and_creates_nothing(admin):
    plan = _plan(dry_run=True, topic_configs={"retention.ms": "-1"})
    assert plan.execute({"run_id": "manual__dry", "ti": NoXCom()}) == []
    assert admin.validated == ["orders-restored"] and admin.created == []


def test_real_run_creates_the_missing_target(admin, monkeypatch):
    monkeypatch.setattr(restore_operators, "create_topics", lambda admin, partitions, *a, validate_only: (
        admin.created.extend([] if validate_only else partitions)))
    units = _plan(max_work_units="4").execute({"run_id": "manual__real", "ti": NoXCom()})
    assert [[p["target_topic"] for p in unit] for unit in units] == [["orders-restored"]]
    assert admin.created == ["orders-restored"]


@pytest.mark.parametrize("bad,problem", [(0, "greater than 0, got 0"), (-3, "greater than 0, got -3"),
                                         ("abc", "a whole number, got 'abc'"), (True, "a whole number, got True")])
def test_max_work_units_is_refused_before_anything_is_written(admin, bad, problem):
    with pytest.raises(ConfigurationError, match=f"max_work_units must be {problem}"):
        _plan(max_work_units=bad).execute({"run_id": "manual__units", "ti": NoXCom()})
    assert admin.validated == [] and admin.created == []


def test_max_work_units_is_refused_before_touching_s3_or_kafka():
    plan = KafkaRestorePlanOperator(task_id="plan", topics=["t"], bucket="b", max_work_units=0,
                                    aws_conn_id="no_such_connection", kafka_conn_id="no_such_connection")
    with pytest.raises(ConfigurationError, match="max_work_units"):
        plan.execute({"run_id": "manual__units", "ti": None})


def test_group_mapping_onto_another_recorded_group_is_refused_before_topics_are_created(admin):
    plan = _plan(restore_consumer_groups=True, group_mapping={"billing": "billing-v2"})
    with pytest.raises(ConfigurationError, match="two source groups to one target group: billing and billing-v2 "
                                                 "-> billing-v2"):
        plan.execute({"run_id": "manual__groups", "ti": NoXCom()})
    assert admin.validated == [] and admin.created == []


@pytest.mark.parametrize("mapping", [{"billing": ""}, {"billing": None}, {"billing": 5}, ["billing"]])
def test_group_mapping_targets_must_be_group_ids(admin, mapping):
    plan = _plan(restore_consumer_groups=True, group_mapping=mapping)
    with pytest.raises(ConfigurationError, match="group_mapping must map group ids to"):
        plan.execute({"run_id": "manual__groups", "ti": NoXCom()})
    assert admin.validated == [] and admin.created == []


def test_target_groups():
    offsets = {"billing": {}, "billing-v2": {}, "audit": {}}
    assert target_groups(offsets, {"billing": "billing-v3"}) == {
        "audit": "audit", "billing": "billing-v3", "billing-v2": "billing-v2"}
    assert target_groups(offsets, {"billing": "billing-v2", "billing-v2": "billing"})["billing"] == "billing-v2"
    with pytest.raises(ConfigurationError, match="audit and billing -> shared; billing-v2 and x -> y"):
        target_groups({**offsets, "x": {}}, {"audit": "shared", "billing": "shared", "x": "y", "billing-v2": "y"})
    with pytest.raises(ConfigurationError, match="'billing' -> ''"):
        validate_group_mapping({"billing": ""})
    assert validate_group_mapping(None) == {}


def test_a_log_append_time_source_is_recreated_as_create_time_unless_topic_configs_says_otherwise():
    from airflow_kafka_backup.target_topics import restore_topic_configs

    recorded = {"message.timestamp.type": "LogAppendTime", "retention.ms": "1000"}
    assert restore_topic_configs("t", recorded, {"retention.ms": -1}) == {
        "message.timestamp.type": "CreateTime", "retention.ms": "-1"}
    assert restore_topic_configs("t", recorded, {"message.timestamp.type": "LogAppendTime"})[
        "message.timestamp.type"] == "LogAppendTime"
    assert restore_topic_configs("t", {"cleanup.policy": "compact"}, {}) == {"cleanup.policy": "compact"}


def test_the_plan_creates_targets_of_log_append_time_sources_as_create_time(admin, monkeypatch):
    created: dict = {}
    monkeypatch.setattr(restore_operators, "create_topics",
                        lambda admin, partitions, configs, *a, validate_only: created.update(configs))
    real_plan = restore_operators.plan_restore

    def plan_restore(*args, **kwargs) -> RestorePlan:
        plan = real_plan(*args, **kwargs)
        plan.topic_metadata = {"orders": {"configs": {"message.timestamp.type": "LogAppendTime"}}}
        return plan

    monkeypatch.setattr(restore_operators, "plan_restore", plan_restore)
    _plan().execute({"run_id": "manual__lat", "ti": NoXCom()})
    assert created == {"orders-restored": {"message.timestamp.type": "CreateTime"}}
