"""Unit tests: the restore plan task refuses bad arguments before it creates any topic.

S3 (the plan from the manifests) and the Kafka admin client are faked; the integration
tests run the same task against the real broker and S3 endpoint.
"""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import ResourceType

from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.restore import planning
from airflow_kafka_backup.engine.restore.group_offsets import target_groups, validate_group_mapping
from airflow_kafka_backup.engine.restore.planning import PartitionRestore, PlannedSegment, RestorePlan
from airflow_kafka_backup.engine.restore.work_units import is_pending, read_work_unit
from airflow_kafka_backup.engine.storage.checksums import SHA256, Checksum
from airflow_kafka_backup.operators import restore as restore_operators
from airflow_kafka_backup.operators.restore import KafkaRestorePlanOperator, KafkaRestoreWorkUnitsOperator
from airflow_kafka_backup.operators.s3 import UserInputError
from tests.unit.engine.restore.test_held_manifests import _backup
from tests.unit.engine.restore.test_restore_planning import MemoryStore


class FakeFuture:
    def __init__(self, value: object = None, error: Exception | None = None) -> None:
        self.value, self.error = value, error

    def result(self) -> object:
        if self.error is not None:
            raise self.error
        return self.value


class FakeAdmin:
    """Stands in for ``confluent_kafka.admin.AdminClient``: one broker with Kafka's default topic configs, no
    group members, and the topics in ``topic_configs`` (none at first).

    Refuses ``cleanup.policy=shred`` as a real broker does; records what it validated and created.
    """

    def __init__(self) -> None:
        self.validated: list[str] = []
        self.created: list[str] = []
        self.topic_configs: dict[str, dict[str, str]] = {}  # existing topics and their effective configs
        self.broker_configs: dict[str, str | None] = {  # as Kafka 4.1 describes a broker with no overrides
            "log.cleanup.policy": "delete", "log.retention.ms": None, "log.retention.minutes": None,
            "log.retention.hours": "168", "log.message.timestamp.type": "CreateTime",
            "log.message.timestamp.before.max.ms": str(2**63 - 1), "log.message.timestamp.after.max.ms": "3600000",
        }
        self.describe_error: KafkaException | None = None
        self.held = 0

    def list_topics(self, timeout=None):
        return SimpleNamespace(topics={t: SimpleNamespace(error=None, partitions={0: object()})
                                       for t in self.topic_configs}, brokers={1: object()})

    def create_topics(self, new_topics, validate_only=False, operation_timeout=None):
        (self.validated if validate_only else self.created).extend(t.topic for t in new_topics)
        return {t.topic: FakeFuture(error=KafkaException("Invalid value shred for configuration cleanup.policy")
                                    if t.config.get("cleanup.policy") == "shred" else None) for t in new_topics}

    def describe_configs(self, resources, request_timeout=None):
        def entries(resource) -> dict:
            configs = self.broker_configs if resource.restype == ResourceType.BROKER else \
                self.topic_configs[resource.name]
            return {name: SimpleNamespace(value=value) for name, value in configs.items()}
        return {r: FakeFuture(None if self.describe_error else entries(r), self.describe_error) for r in resources}

    def describe_consumer_groups(self, groups, request_timeout=None):
        return {g: FakeFuture(SimpleNamespace(members=[])) for g in groups}

    def list_offsets(self, requests, isolation_level=None, request_timeout=None):
        """Existing targets hold ``self.held`` offsets per partition (0: empty)."""
        return {tp: FakeFuture(SimpleNamespace(offset=0 if spec.__class__.__name__ == "EarliestSpec" else self.held))
                for tp, spec in requests.items()}


DAG = {"dag": SimpleNamespace(dag_id="kafka_restore")}  # what restore_id_of reads from the context


class NoXCom:
    def xcom_push(self, key, value) -> None:
        pass


@pytest.fixture
def admin(monkeypatch) -> FakeAdmin:
    """The plan's S3 and Kafka sides faked: a backup of ``orders`` (one partition) and groups ``billing``,
    ``billing-v2``; the target topic does not exist yet."""
    admin = FakeAdmin()
    admin.segments = []  # the planned segments of orders[0]: none unless a test adds some
    offsets = {"orders": {"0": 5}}

    def plan_restore(store, prefix, settings, check_manifest=None) -> RestorePlan:
        partition = PartitionRestore("orders", settings.topic_mapping["orders"], 0, admin.segments,
                                     from_timestamp=settings.from_timestamp)
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
    plan.store = MemoryStore()
    return plan


def test_dry_run_asks_the_broker_about_topic_configs(admin):
    plan = _plan(dry_run=True, topic_configs={"cleanup.policy": "shred", "retention.ms": "-1"})
    with pytest.raises(ConfigurationError, match="refuses these topic configs: orders-restored: cleanup.policy"):
        plan.execute({**DAG, "run_id": "manual__dry", "ti": NoXCom()})
    assert admin.created == []


def test_dry_run_with_good_configs_validates_and_creates_nothing(admin):
    plan = _plan(dry_run=True, topic_configs={"retention.ms": "-1"})
    assert plan.execute({**DAG, "run_id": "manual__dry", "ti": NoXCom()}) == []
    assert set(admin.validated) == {"orders-restored"} and admin.created == []


class XComCatcher:
    def __init__(self) -> None:
        self.pushed: dict = {}

    def xcom_push(self, key, value) -> None:
        self.pushed[key] = value


def test_real_run_creates_nothing_and_hands_the_missing_target_to_create_topics(admin):
    """Nothing is created before the approval: the plan only asks the broker (validate-only), and pushes what
    create_topics makes after it, with the report the approval step shows."""
    ti = XComCatcher()
    plan = _plan(max_work_units="4")
    refs = plan.execute({**DAG, "run_id": "manual__real", "ti": ti})
    units = [read_work_unit(plan.store, ref) for ref in refs]
    assert [[p.target_topic for p in unit] for unit in units] == [["orders-restored"]]
    assert admin.created == []
    assert ti.pushed["create"] == {"orders-restored": {"partitions": 1, "configs": ti.pushed["create"][
        "orders-restored"]["configs"], "replication_factor": None}}
    assert "| orders | orders-restored | new (created after approval) | 1 |" in ti.pushed["report"]


def test_inline_units_travel_in_xcom_and_nothing_is_written(admin):
    """``work_units_inline`` (kept for users' DAG files): the units in XCom, nothing written."""
    plan = _plan(max_work_units="4", work_units_inline="True")
    units = plan.execute({**DAG, "run_id": "manual__approved", "ti": XComCatcher()})
    assert plan.store.objects == {}
    assert [[p.target_topic for p in read_work_unit(plan.store, unit)] for unit in units] == [["orders-restored"]]
    assert admin.created == []
    passed_on = KafkaRestoreWorkUnitsOperator(task_id="work_units", plan=units, bucket="b").execute({})
    assert passed_on == units  # the restore tasks read inline units as they are


def test_with_an_approval_step_ahead_nothing_is_written_and_the_units_are_written_after_it(admin, monkeypatch):
    """A run that waits for approval writes nothing before it, not even its work units: the plan hands over
    their digest and the manifests' pin (small), and the work_units task writes them after the approval."""
    monkeypatch.setattr(restore_operators, "plan_restore", planning.plan_restore)  # the real planner
    store = MemoryStore()
    _backup(store, ["orders", "payments"], runs=2, partitions=5)
    plan = _plan(max_work_units="2", approval_follows="True", prefix="p", topic_configs=KEEP)
    plan.store = store
    before = dict(store.objects)
    pending = plan.execute({**DAG, "run_id": "manual__approved", "ti": XComCatcher()})
    assert store.objects == before and admin.created == []
    assert is_pending(pending) and len(json.dumps(pending)) < 600
    _backup_run_during_the_approval(store)

    units = KafkaRestoreWorkUnitsOperator(task_id="work_units", plan=json.loads(json.dumps(pending)), bucket="b",
                                          prefix="p", topics=["orders"], topic_mapping={"orders": "orders-restored"})
    units.store = store
    refs = units.execute({})
    planned = [read_work_unit(store, ref) for ref in refs]
    assert [p.partition for unit in planned for p in unit] == [0, 2, 4, 1, 3]  # 2 units, by the plan's balance
    assert {s.last_offset for unit in planned for p in unit for s in p.segments} == {9, 19}  # not the third run
    assert all(ref["work_unit_key"].startswith("p/_restores/kafka_restore/manual__approved/work-units/")
               for ref in refs)
    # Without the approval step the plan writes the very same objects itself.
    direct = _plan(max_work_units="2", prefix="p", topic_configs=KEEP)
    direct.store = MemoryStore()
    _backup(direct.store, ["orders", "payments"], runs=2, partitions=5)
    assert direct.execute({**DAG, "run_id": "manual__approved", "ti": XComCatcher()}) == refs
    assert KafkaRestoreWorkUnitsOperator(task_id="work_units", plan=refs, bucket="b").execute({}) == refs

    # A Param rendered otherwise after the approval: the units differ, the task fails at once, writing nothing.
    units.topic_mapping = {"orders": "elsewhere"}
    units.store = store = MemoryStore()
    _backup(store, ["orders", "payments"], runs=2, partitions=5)
    with pytest.raises(UserInputError, match="not the one approved"):
        units.execute({})
    assert not any("_restores" in k for k in store.objects)


KEEP = {"retention.ms": "-1"}  # the test backup's records are from 2023


def _backup_run_during_the_approval(store: MemoryStore) -> None:
    from airflow_kafka_backup.engine.storage.manifest import PartitionRange
    from tests.unit.engine.restore.test_held_manifests import _segment
    from tests.unit.engine.restore.test_restore_planning import commit

    commit(store, "scheduled__002", [PartitionRange("orders", p, 20, 30, topic_id="id-orders") for p in range(5)],
           [_segment("orders", p, 20, 29) for p in range(5)], incarnations={"orders": ["id-orders"]})


def test_inline_units_and_an_approval_to_follow_exclude_each_other(admin):
    with pytest.raises(ConfigurationError, match="work_units_inline and approval_follows are both on"):
        _plan(work_units_inline=True, approval_follows=True).execute(
            {**DAG, "run_id": "manual__both", "ti": XComCatcher()})


def test_dry_run_pushes_the_same_report_and_nothing_to_create(admin):
    ti = XComCatcher()
    assert _plan(dry_run=True).execute({**DAG, "run_id": "manual__dry", "ti": ti}) == []
    assert ti.pushed["create"] == {} and admin.created == []
    assert ti.pushed["report"].startswith("**DRY RUN: nothing will be created or written.**")
    assert "| orders | orders-restored | new (created after approval) | 1 |" in ti.pushed["report"]


@pytest.mark.parametrize("bad,problem", [(0, "greater than 0, got 0"), (-3, "greater than 0, got -3"),
                                         ("abc", "a whole number, got 'abc'"), (True, "a whole number, got True")])
def test_max_work_units_is_refused_before_anything_is_written(admin, bad, problem):
    with pytest.raises(ConfigurationError, match=f"max_work_units must be {problem}"):
        _plan(max_work_units=bad).execute({**DAG, "run_id": "manual__units", "ti": NoXCom()})
    assert admin.validated == [] and admin.created == []


def test_max_work_units_is_refused_before_touching_s3_or_kafka():
    plan = KafkaRestorePlanOperator(task_id="plan", topics=["t"], bucket="b", max_work_units=0,
                                    aws_conn_id="no_such_connection", kafka_conn_id="no_such_connection")
    with pytest.raises(ConfigurationError, match="max_work_units"):
        plan.execute({**DAG, "run_id": "manual__units", "ti": None})


def test_group_mapping_onto_another_recorded_group_is_refused_before_topics_are_created(admin):
    plan = _plan(restore_consumer_groups=True, group_mapping={"billing": "billing-v2"})
    with pytest.raises(ConfigurationError, match="two source groups to one target group: billing and billing-v2 "
                                                 "-> billing-v2"):
        plan.execute({**DAG, "run_id": "manual__groups", "ti": NoXCom()})
    assert admin.validated == [] and admin.created == []


@pytest.mark.parametrize("mapping", [{"billing": ""}, {"billing": None}, {"billing": 5}, ["billing"]])
def test_group_mapping_targets_must_be_group_ids(admin, mapping):
    plan = _plan(restore_consumer_groups=True, group_mapping=mapping)
    with pytest.raises(ConfigurationError, match="group_mapping must map group ids to"):
        plan.execute({**DAG, "run_id": "manual__groups", "ti": NoXCom()})
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
    from airflow_kafka_backup.engine.restore.target_topics import restore_topic_configs

    recorded = {"message.timestamp.type": "LogAppendTime", "retention.ms": "1000"}
    assert restore_topic_configs("t", recorded, {"retention.ms": -1}) == {
        "message.timestamp.type": "CreateTime", "retention.ms": "-1"}
    assert restore_topic_configs("t", recorded, {"message.timestamp.type": "LogAppendTime"})[
        "message.timestamp.type"] == "LogAppendTime"
    assert restore_topic_configs("t", {"cleanup.policy": "compact"}, {}) == {"cleanup.policy": "compact"}
    # A broker whose default is LogAppendTime would restamp the records too.
    lat_broker = {"message.timestamp.type": "LogAppendTime", "retention.ms": "604800000"}
    assert restore_topic_configs("t", {"cleanup.policy": "compact"}, {}, lat_broker) == {
        "cleanup.policy": "compact", "message.timestamp.type": "CreateTime"}
    assert restore_topic_configs("t", {}, {}, {"message.timestamp.type": "CreateTime"}) == {}


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
    _plan().execute({**DAG, "run_id": "manual__lat", "ti": NoXCom()})
    assert created == {"orders-restored": {"message.timestamp.type": "CreateTime"}}


DAY_MS = 86_400_000


def _segment_days_old(days: float) -> PlannedSegment:
    """A planned segment of orders[0] whose records are ``days`` old (to a few seconds)."""
    now = int(time.time() * 1000)
    return PlannedSegment("seg", 0, 9, 10, 100,
                          Checksum(SHA256, "x"), "jsonl", "none", now - int(days * DAY_MS), now - 1000)


def test_records_older_than_a_new_targets_default_retention_are_refused_before_it_is_created(admin):
    admin.segments = [_segment_days_old(30)]
    for dry_run in (False, True):
        with pytest.raises(ConfigurationError, match=r"records to restore into orders-restored go back to 20.*"
                                                     r"older than its retention.ms=604800000 \(7 days\).*"
                                                     r'add "retention.ms": "-1" to topic_configs'):
            _plan(dry_run=dry_run).execute({**DAG, "run_id": "manual__old", "ti": NoXCom()})
    assert admin.validated == [] and admin.created == []


def test_records_within_retention_or_with_retention_off_are_restored(admin):
    admin.segments = [_segment_days_old(6)]
    _plan(dry_run=True).execute({**DAG, "run_id": "manual__recent", "ti": NoXCom()})
    admin.segments = [_segment_days_old(300)]
    _plan(dry_run=True, topic_configs={"retention.ms": "-1"}).execute({**DAG, "run_id": "manual__off", "ti": NoXCom()})
    assert set(admin.validated) == {"orders-restored"}  # the dry run went on to ask the broker about retention.ms


def test_from_timestamp_inside_retention_lets_a_restore_of_an_old_backup_through(admin):
    admin.segments = [_segment_days_old(30)]
    since = int(time.time() * 1000) - 2 * DAY_MS
    assert _plan(dry_run=True, from_timestamp=since).execute({**DAG, "run_id": "manual__since", "ti": NoXCom()}) == []


def test_an_existing_log_append_time_target_is_refused_with_the_command_that_fixes_it(admin):
    admin.topic_configs["orders-restored"] = {"message.timestamp.type": "LogAppendTime", "retention.ms": "-1"}
    with pytest.raises(ConfigurationError, match="orders-restored has message.timestamp.type=LogAppendTime.*"
                                                 "--entity-name orders-restored --add-config "
                                                 "message.timestamp.type=CreateTime"):
        _plan().execute({**DAG, "run_id": "manual__lat", "ti": NoXCom()})
    admin.topic_configs["orders-restored"]["message.timestamp.type"] = "CreateTime"
    _plan().execute({**DAG, "run_id": "manual__ct", "ti": NoXCom()})


def test_an_existing_target_is_checked_against_its_own_retention(admin):
    admin.segments = [_segment_days_old(3)]
    admin.topic_configs["orders-restored"] = {"retention.ms": str(DAY_MS), "cleanup.policy": "delete"}
    with pytest.raises(ConfigurationError, match=r"retention.ms=86400000 \(1 days\).*--add-config retention.ms=-1"):
        _plan().execute({**DAG, "run_id": "manual__short", "ti": NoXCom()})
    admin.topic_configs["orders-restored"]["cleanup.policy"] = "compact"  # compaction keeps them
    _plan().execute({**DAG, "run_id": "manual__compact", "ti": NoXCom()})


def test_unreadable_configs_are_not_checked_but_do_not_stop_the_restore(admin, caplog):
    admin.segments = [_segment_days_old(30)]
    admin.describe_error = KafkaException("Cluster authorization failed")
    _plan(dry_run=True).execute({**DAG, "run_id": "manual__acl", "ti": NoXCom()})
    assert "Could not read the broker's default topic configs" in caplog.text


def test_the_restore_id_is_the_dag_id_and_the_run_id():
    """Run ids are unique only within a DAG: two restore DAGs sharing a backup and a run id stay apart."""
    from airflow_kafka_backup.engine.restore.loop import progress_group, transactional_id
    from airflow_kafka_backup.engine.storage.key_layout import restore_prefix
    from airflow_kafka_backup.operators.restore import restore_id_of

    ids = [restore_id_of({"dag": SimpleNamespace(dag_id=dag_id), "run_id": "incident+42"})
           for dag_id in ("restore_eu", "restore_us")]
    assert ids == ["restore_eu/incident+42", "restore_us/incident+42"]
    assert [restore_prefix("bk", i) for i in ids] == ["bk/_restores/restore_eu/incident_42",
                                                      "bk/_restores/restore_us/incident_42"]
    assert [progress_group(i) for i in ids] == ["airflow-kafka-backup-restore-restore_eu=incident_42",
                                                "airflow-kafka-backup-restore-restore_us=incident_42"]
    assert len({transactional_id(i, "t", 0) for i in ids}) == 2
    # '=' cannot be in a DAG id: DAG restore + run eu_x and DAG restore_eu + run x stay apart.
    assert progress_group("restore/eu_x") != progress_group("restore_eu/x")


def test_a_group_mapping_without_restore_consumer_groups_is_called_out(admin, caplog):
    plan = _plan(dry_run=True, group_mapping={"billing": "billing-v3"})
    plan.execute({**DAG, "run_id": "manual__map", "ti": NoXCom()})
    assert "group_mapping is given but restore_consumer_groups is off" in caplog.text


def test_a_broker_defaulting_to_log_append_time_neither_restamps_nor_skips_the_checks(admin, monkeypatch):
    admin.broker_configs["log.message.timestamp.type"] = "LogAppendTime"
    admin.segments = [_segment_days_old(30)]
    with pytest.raises(ConfigurationError, match=r"retention.ms=604800000 \(7 days\)"):
        _plan(dry_run=True).execute({**DAG, "run_id": "manual__lat_default", "ti": NoXCom()})
    created: dict = {}
    monkeypatch.setattr(restore_operators, "create_topics",
                        lambda admin, partitions, configs, *a, validate_only: created.update(configs))
    _plan(topic_configs={"retention.ms": "-1"}).execute({**DAG, "run_id": "manual__lat_default", "ti": NoXCom()})
    assert created["orders-restored"]["message.timestamp.type"] == "CreateTime"


def test_work_units_go_to_s3_and_xcom_carries_their_keys(admin):
    """Each unit's segment list is an object in the restore's folder; XCom gets its key, digest and counts.
    A plan run again over the same backup writes the same keys with the same bytes."""
    admin.segments = [PlannedSegment(f"bk/orders/partition=0/orders+0+{i:010d}.jsonl", i * 10, i * 10 + 9, 10, 100,
                                     Checksum(SHA256, "ab" * 32), "jsonl", "none", 1, 2, 50) for i in range(3)]
    plan = _plan(topic_configs={"retention.ms": "-1"})
    refs = plan.execute({**DAG, "run_id": "manual__s3", "ti": XComCatcher()})
    (ref,) = refs
    assert set(ref) == {"work_unit_key", "sha256", "partitions", "segments"}
    assert (ref["partitions"], ref["segments"]) == (1, 3)
    assert ref["work_unit_key"].startswith("kafka-backup/_restores/kafka_restore/manual__s3/work-units/unit-0000-")
    assert [s.key for s in read_work_unit(plan.store, ref)[0].segments] == [s.key for s in admin.segments]
    again = _plan(topic_configs={"retention.ms": "-1"})
    assert again.execute({**DAG, "run_id": "manual__s3", "ti": XComCatcher()}) == refs
    assert again.store.objects == plan.store.objects
