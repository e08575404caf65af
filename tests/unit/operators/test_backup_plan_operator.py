"""Unit tests: the backup plan task refuses bad input before it writes anything.

- A run under another SSE-C key than the backup's (or a key where it has none): a restore
  reads a prefix with one key, so a prefix whose runs used two keys (or a key and none)
  could not be restored in one go.
- A time window that holds no instant.

S3 and Kafka are faked; the integration tests run SSE-C backups and restores through a
proxy to the real S3 endpoint.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from botocore.exceptions import ClientError

from airflow_kafka_backup.engine.errors import ConfigurationError, IntegrityError
from airflow_kafka_backup.engine.storage.checksums import SHA256, Checksum
from airflow_kafka_backup.engine.storage.commit_log import read_commit, record_commit
from airflow_kafka_backup.engine.storage.key_layout import (
    commit_key,
    run_objects_prefix,
    unit_segments_key,
    work_unit_key,
)
from airflow_kafka_backup.engine.storage.manifest import (
    PartitionRange,
    RunManifest,
    SegmentInfo,
    SegmentSettings,
    manifest_key,
)
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from airflow_kafka_backup.engine.storage.run_objects import ObjectRef, get_json, put_json
from airflow_kafka_backup.engine.storage.s3_settings import S3WriteSettings, key_fingerprint
from airflow_kafka_backup.engine.storage.writer_lock import ConcurrentRunError
from airflow_kafka_backup.engine.topics.offsets import OffsetBounds
from airflow_kafka_backup.operators import backup as backup_operators
from airflow_kafka_backup.operators.backup import (
    KafkaBackupCommitOperator,
    KafkaBackupPlanOperator,
    checkpoint_variable_key,
)

KEY_A, KEY_B = b"A" * 32, b"B" * 32


class FakeStore:
    """A bucket that, like moto, does not check SSE-C keys on reads: the manifests' fingerprints must."""

    bucket = "b"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.writes: list[str] = []
        self.client = SimpleNamespace(put_object=lambda Bucket, Key, Body, **kwargs: self.put_bytes(Key, Body))

    def write_args(self) -> dict:
        return {}

    def list_keys(self, prefix: str, start_after: str | None = None):
        return sorted(k for k in self.objects if k.startswith(prefix) and k > (start_after or ""))

    def create_if_absent(self, key: str, data: bytes) -> bool:
        if key in self.objects:
            return False
        self.put_bytes(key, data)
        return True

    def get_bytes_if_exists(self, key: str) -> bytes | None:
        return self.objects.get(key)

    def head(self, key: str):
        return {} if key in self.objects else None

    def get_bytes(self, key: str) -> bytes:
        if key not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": "gone"}}, "GetObject")
        return self.objects[key]

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        if getattr(self, "manifests_fail", False) and "/_manifests/" in key:
            raise RuntimeError("worker killed before the manifest")
        self.writes.append(key)
        self.objects[key] = data

    def delete_prefix(self, prefix: str) -> int:
        keys = [k for k in self.objects if k.startswith(prefix)]
        for key in keys:
            del self.objects[key]
        return len(keys)


@pytest.fixture
def plan_with(monkeypatch):
    """``plan_with(existing_key, run_key)``: plan a scheduled run with ``run_key`` over a one-run backup written
    with ``existing_key`` (None: no SSE-C), its checkpoint Variable up to date; returns the store."""
    variables = {checkpoint_variable_key("b", "kafka-backup"): {"checkpoints": {"orders": {"0": 5}}, "manifests": 1}}
    admin = SimpleNamespace(list_topics=lambda timeout=None: SimpleNamespace(topics={
        "orders": SimpleNamespace(error=None, partitions={0: SimpleNamespace(replicas=[1])})}))
    monkeypatch.setattr(backup_operators, "KafkaAdminClientHook", lambda kafka_config_id: SimpleNamespace(
        get_conn=admin))
    # Faked, the Variable works alike on every Airflow (on 3.0 the real one cannot hold a key with "/").
    monkeypatch.setattr(backup_operators, "variable_keys_may_contain_slash", lambda: True)
    monkeypatch.setattr(backup_operators, "Variable", SimpleNamespace(
        get=lambda key, default=None, deserialize_json=False: variables.get(key, default),
        set=lambda key, value, **kwargs: variables.__setitem__(key, value)))
    monkeypatch.setattr(backup_operators, "snapshot_offsets", lambda admin, tps, isolation: {
        ("orders", 0): OffsetBounds(0, 9)})
    monkeypatch.setattr(backup_operators, "describe_topics", lambda admin, topics, ids=None: [])
    monkeypatch.setattr(backup_operators, "topic_ids", lambda admin, topics: {t: f"id-of-{t}" for t in topics})
    monkeypatch.setattr(backup_operators, "select_groups", lambda admin, selector: [])
    monkeypatch.setattr(backup_operators, "committed_group_offsets", lambda *args: {})

    def plan_with(existing_key: bytes | None, run_key: bytes | None, **arguments) -> FakeStore:
        store = plan_with.store = FakeStore()
        store.variables = variables
        encryption = {"sse": "SSE-C", "sse_c_key_fingerprint": key_fingerprint(existing_key)} if existing_key else {}
        old = RunManifest("scheduled__1", SegmentSettings("jsonl", "none", 10000, 10),
                          [PartitionRange("orders", 0, 0, 5)], [], encryption=encryption)
        store.objects[manifest_key("kafka-backup", "scheduled__1")] = old.to_json()
        plan = KafkaBackupPlanOperator(task_id="plan", topics=["orders"], bucket="b", **arguments)
        plan.__dict__["store"] = store
        plan.__dict__["s3_settings"] = S3WriteSettings.create(
            sse_customer_key=run_key, object_lock_mode=arguments.get("object_lock_mode"),
            object_lock_retention_days=arguments.get("object_lock_retention_days"))
        plan.check_bucket = lambda: None
        store.xcom = {}
        store.xcom["return_value"] = plan.execute({
            "run_id": "scheduled__2", "dag": SimpleNamespace(dag_id="kafka_backup"),
            "ti": SimpleNamespace(xcom_push=lambda key, value: store.xcom.__setitem__(key, value))})
        return store

    return plan_with


@pytest.mark.parametrize("existing_key,run_key,problem", [
    (KEY_A, KEY_B, "The SSE-C key given is not the key backup run scheduled__1 was encrypted with"),
    (KEY_A, None, "backup run scheduled__1 is encrypted with a customer-provided key"),
    (None, KEY_B, "backup run scheduled__1 is not encrypted with a customer-provided key .* back up to a new prefix"),
])
def test_a_scheduled_run_under_another_key_is_refused_before_anything_is_written(plan_with, existing_key, run_key,
                                                                                problem):
    with pytest.raises(ConfigurationError, match=problem):
        plan_with(existing_key, run_key)
    assert plan_with.store.writes == []


@pytest.mark.parametrize("key", [KEY_A, None])
def test_a_scheduled_run_under_the_backups_own_key_goes_ahead(plan_with, key):
    store = plan_with(key, key)
    assert [k for k in store.writes if "/_locks/" in k], "the plan took the writer lock for its new range"


def test_s3_refusing_a_key_for_an_object_stored_without_one_is_explained():
    store = S3ObjectStore(client=None, bucket="b", read_args={"SSECustomerAlgorithm": "AES256",
                                                              "SSECustomerKey": "secret"})
    error = ClientError({"Error": {"Code": "400", "Message": "The encryption parameters are not applicable to "
                                                             "this object."}}, "GetObject")
    explained = store._explain(error, "bk/_manifests/run=r.json")
    assert isinstance(explained, ConfigurationError)
    assert "s3://b/bk/_manifests/run=r.json is stored without a customer-provided key" in str(explained)
    assert "secret" not in str(explained)


@pytest.mark.parametrize("since,until", [("2024-02-01", "2024-01-01"), ("2024-01-01", "2024-01-01")])
def test_a_backup_time_window_that_holds_no_instant_is_refused_before_s3_or_kafka(since, until):
    plan = KafkaBackupPlanOperator(task_id="plan", topics=["orders"], bucket="b", from_timestamp=since,
                                   until_timestamp=until, aws_conn_id="no_such_connection",
                                   kafka_conn_id="no_such_connection")
    with pytest.raises(ConfigurationError, match=f"from_timestamp \\({since}\\) must be before until_timestamp"):
        plan.execute({"run_id": "manual__window", "ti": None})


def test_the_backup_task_reads_with_the_isolation_level_its_plan_snapshotted_under(monkeypatch, caplog):
    from airflow_kafka_backup.engine.backup.loop import BackupResult
    from airflow_kafka_backup.operators.backup import KafkaBackupOperator

    used = []
    consumer = SimpleNamespace(resume=lambda tps: None, unassign=lambda: None, close=lambda: None)
    monkeypatch.setattr(backup_operators, "KafkaRangeConsumerHook", lambda conn_id, isolation: (
        used.append(isolation), SimpleNamespace(get_conn=consumer))[1])
    monkeypatch.setattr(backup_operators, "back_up_ranges", lambda *args: BackupResult([], 0, 0, 0.0))
    unit = {"run_id": "r", "unit": 0, "ranges": [{"topic": "orders", "partition": 0, "start": 0, "end": 5}],
            "settings": {"segment_format": "jsonl", "compression": "none", "flush_size": 10, "offset_pad_width": 10},
            "isolation_level": "read_uncommitted"}
    store = FakeStore()
    ref = put_json(store, work_unit_key("kafka-backup", "r", 0), unit)
    task = KafkaBackupOperator(task_id="backup", work_unit=ref.to_dict(), bucket="b")
    task.__dict__["store"] = store
    segments = ObjectRef.from_dict(task.execute({"run_id": "r"}))
    assert segments.key == unit_segments_key("kafka-backup", "r", 0)
    assert get_json(store, segments, run_objects_prefix("kafka-backup", "r"))["segments"] == []
    assert used == ["read_uncommitted"]
    assert "isolation_level read_committed differs from the plan's read_uncommitted" in caplog.text


@pytest.mark.parametrize("arguments,problem", [
    ({"prefix": "", "retention_days": 30}, "retention_days needs a prefix"),
    ({"retention_days": 0}, "retention_days must be"),
    ({"retention_days": 7, "object_lock_mode": "GOVERNANCE", "object_lock_retention_days": 30},
     "shorter than object_lock_retention_days"),
])
def test_the_retention_tasks_arguments_are_refused_before_the_plan_takes_the_lock(plan_with, arguments, problem):
    """The retention task runs after the plan: failing there would leave the lock blocking other runs."""
    with pytest.raises(ConfigurationError, match=problem):
        plan_with(None, None, **arguments)
    assert plan_with.store.writes == []


def test_a_valid_retention_lets_the_plan_go_ahead(plan_with):
    store = plan_with(None, None, retention_days=30)
    assert [k for k in store.writes if "/_locks/" in k]


def test_the_plan_hands_ranges_over_in_s3_after_the_lock_and_xcom_carries_only_refs(plan_with):
    store = plan_with(None, None)
    folder = run_objects_prefix("kafka-backup", "scheduled__2")
    assert [k.split("/")[1] for k in store.writes] == ["_locks", "_runs", "_runs"], "the lock first, then the plan"
    exchange = store.xcom["plan"]
    assert set(exchange) == {"run_id", "plan"} and set(exchange["plan"]) == {"key", "sha256", "bytes"}
    plan = get_json(store, ObjectRef.from_dict(exchange["plan"]), folder)
    assert plan["ranges"] == [{"topic": "orders", "partition": 0, "start": 5, "end": 9, "lost_start": None,
                               "lost_end": None, "topic_id": "id-of-orders", "id_in_keys": False}]
    (unit_ref,) = store.xcom["return_value"]
    unit = get_json(store, ObjectRef.from_dict(unit_ref), folder)
    assert unit_ref["key"] == work_unit_key("kafka-backup", "scheduled__2", 0)
    assert (unit["run_id"], unit["unit"], unit["ranges"]) == ("scheduled__2", 0, plan["ranges"])


def _segment(first: int, last: int) -> SegmentInfo:
    return SegmentInfo(f"kafka-backup/orders/partition=0/orders+0+{first:010d}.jsonl", "orders", 0, first, last,
                       last - first + 1, 1, 2, 30,
                       Checksum(SHA256, "ab" * 32), max_record_bytes=7, topic_id="id-of-orders")


def _commit(store: FakeStore, segment_refs: list) -> KafkaBackupCommitOperator:
    commit = KafkaBackupCommitOperator(task_id="commit", plan=store.xcom["plan"], segments=segment_refs, bucket="b")
    commit.__dict__["store"] = store
    commit.__dict__["s3_settings"] = S3WriteSettings.create()
    return commit


def test_the_commit_builds_the_same_manifest_from_the_objects_then_removes_them(plan_with):
    store = plan_with(None, None)
    folder = run_objects_prefix("kafka-backup", "scheduled__2")
    plan = get_json(store, ObjectRef.from_dict(store.xcom["plan"]["plan"]), folder)
    segments = [_segment(5, 6), _segment(7, 8)]
    refs = [put_json(store, unit_segments_key("kafka-backup", "scheduled__2", 0),
                     {"run_id": "scheduled__2", "unit": 0, "segments": [s.to_dict() for s in segments]}).to_dict()]
    context = {"dag": SimpleNamespace(dag_id="kafka_backup")}

    summary = _commit(store, refs).execute(context)

    # What the commit wrote when XCom carried the plan and the lists: the same RunManifest, the same bytes.
    expected = RunManifest("scheduled__2", SegmentSettings(**plan["settings"]),
                           [PartitionRange(**r) for r in plan["ranges"]], segments, encryption={}, topics=[],
                           consumer_groups={}, incarnations=plan["incarnations"], selection=plan["selection"],
                           gone_topics=[])
    assert store.objects[summary["manifest"]] == expected.to_json()
    assert (summary["segments"], summary["records"]) == (2, 4)
    assert not [k for k in store.objects if k.startswith(folder)], "the working objects are removed"

    # A retry of the commit after it removed them (it died before Airflow heard of its success) stands on the
    # manifest it wrote, and writes nothing.
    writes = len(store.writes)
    again = _commit(store, refs).execute(context)
    assert (again["manifest"], again["segments"], again["records"]) == (summary["manifest"], 2, 4)
    assert len(store.writes) == writes


def test_the_commit_refuses_a_segment_list_that_is_not_the_one_it_was_handed(plan_with):
    store = plan_with(None, None)
    key = unit_segments_key("kafka-backup", "scheduled__2", 0)
    ref = put_json(store, key, {"run_id": "scheduled__2", "unit": 0, "segments": [_segment(5, 8).to_dict()]})
    put_json(store, key, {"run_id": "scheduled__2", "unit": 0, "segments": []})  # rewritten by a later try
    with pytest.raises(IntegrityError, match="is not the one this task was handed"):
        _commit(store, [ref.to_dict()]).execute({"dag": SimpleNamespace(dag_id="kafka_backup")})
    assert not [k for k in store.objects if "/_manifests/run=scheduled__2" in k]


def _segment_refs(store: FakeStore) -> list[dict]:
    return [put_json(store, unit_segments_key("kafka-backup", "scheduled__2", 0),
                     {"run_id": "scheduled__2", "unit": 0, "segments": [_segment(5, 8).to_dict()]}).to_dict()]


def test_the_commit_logs_its_entry_before_its_manifest_and_the_variable_records_it(plan_with):
    store = plan_with(None, None)
    summary = _commit(store, _segment_refs(store)).execute({"dag": SimpleNamespace(dag_id="kafka_backup")})
    entry = commit_key("kafka-backup", 1)
    assert store.writes.index(entry) < store.writes.index(summary["manifest"]), "the log entry first"
    assert read_commit(store, "kafka-backup", 1).run_id == "scheduled__2"
    assert store.variables[checkpoint_variable_key("b", "kafka-backup")]["commit"] == {"seq": 1,
                                                                                      "run_id": "scheduled__2"}


def test_the_commit_refuses_when_another_run_committed_on_the_state_it_planned_on(plan_with):
    store = plan_with(None, None)
    record_commit(store, "kafka-backup", 0, "manual__other", manifest_key("kafka-backup", "manual__other"), {})
    with pytest.raises(ConcurrentRunError, match="Another run \\(manual__other\\) committed"):
        _commit(store, _segment_refs(store)).execute({"dag": SimpleNamespace(dag_id="kafka_backup")})
    assert not [k for k in store.objects if "/_manifests/run=scheduled__2" in k]


def _plan_next(store: FakeStore, run_id: str, **arguments) -> dict:
    plan = KafkaBackupPlanOperator(task_id="plan", topics=["orders"], bucket="b", **arguments)
    plan.__dict__["store"] = store
    plan.__dict__["s3_settings"] = S3WriteSettings.create()
    plan.check_bucket = lambda: None
    xcom: dict = {}
    xcom["return_value"] = plan.execute({"run_id": run_id, "dag": SimpleNamespace(dag_id="kafka_backup"),
                                         "ti": SimpleNamespace(xcom_push=lambda key, value: xcom.__setitem__(key,
                                                                                                             value))})
    return xcom


def _commit_run(store: FakeStore, xcom: dict, run_id: str, first: int = 5, last: int = 8) -> dict:
    refs = [put_json(store, unit_segments_key("kafka-backup", run_id, 0),
                     {"run_id": run_id, "unit": 0, "segments": [_segment(first, last).to_dict()]}).to_dict()]
    commit = KafkaBackupCommitOperator(task_id="commit", plan=xcom["plan"], segments=refs, bucket="b")
    commit.__dict__["store"] = store
    commit.__dict__["s3_settings"] = S3WriteSettings.create()
    return commit.execute({"dag": SimpleNamespace(dag_id="kafka_backup")})


def test_a_commit_that_died_after_its_log_entry_commits_once_whoever_goes_on(plan_with, monkeypatch):
    """The commit of scheduled__2 dies between its log entry and its manifest. The next plan finds the entry in
    flight: it takes the lock scheduled__2 held (refused while that run may still commit; here forced), and
    scheduled__2's commit, retried after the next run committed, refuses: one manifest covers the offsets."""
    store = plan_with(None, None)
    first = {"plan": store.xcom["plan"]}
    store.manifests_fail = True
    with pytest.raises(RuntimeError):
        _commit_run(store, first, "scheduled__2")
    store.manifests_fail = False
    assert read_commit(store, "kafka-backup", 1).run_id == "scheduled__2", "its entry, without its manifest"
    with pytest.raises(ConcurrentRunError, match="Run 'scheduled__2' has been backing up"):
        _plan_next(store, "scheduled__3")

    second = _plan_next(store, "scheduled__3", force_unlock=True)
    _commit_run(store, second, "scheduled__3")
    with pytest.raises(ConcurrentRunError, match="Another run .*committed to s3://b/kafka-backup while this run"):
        _commit_run(store, first, "scheduled__2")
    committed = [k for k in store.objects if "/_manifests/" in k]
    assert committed == [manifest_key("kafka-backup", "scheduled__1"), manifest_key("kafka-backup", "scheduled__3")]
    assert read_commit(store, "kafka-backup", 2).run_id == "scheduled__3"
    assert store.variables[checkpoint_variable_key("b", "kafka-backup")]["commit"] == {"seq": 2,
                                                                                      "run_id": "scheduled__3"}


def test_on_a_prefix_with_a_log_a_retried_commit_refuses_once_a_later_run_committed(plan_with, monkeypatch):
    store = plan_with(None, None)
    _commit_run(store, {"plan": store.xcom["plan"]}, "scheduled__2")  # starts the log: seq=1, checkpoint 9
    monkeypatch.setattr(backup_operators, "snapshot_offsets", lambda admin, tps, isolation: {
        ("orders", 0): OffsetBounds(0, 20)})
    dying = _plan_next(store, "scheduled__3")
    store.manifests_fail = True
    with pytest.raises(RuntimeError):
        _commit_run(store, dying, "scheduled__3", 9, 19)
    store.manifests_fail = False

    taking_over = _plan_next(store, "scheduled__4", force_unlock=True)
    _commit_run(store, taking_over, "scheduled__4", 9, 19)
    with pytest.raises(ConcurrentRunError, match="Another run \\(scheduled__4\\) committed"):
        _commit_run(store, dying, "scheduled__3", 9, 19)
    assert [read_commit(store, "kafka-backup", n).run_id for n in (1, 2, 3)] == [
        "scheduled__2", "scheduled__3", "scheduled__4"]
    assert not [k for k in store.objects if k.endswith("run=scheduled__3.json")], "the run that died commits nothing"
