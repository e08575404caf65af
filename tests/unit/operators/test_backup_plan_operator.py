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

from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.storage.manifest import PartitionRange, RunManifest, SegmentSettings, manifest_key
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from airflow_kafka_backup.engine.storage.s3_settings import S3WriteSettings, key_fingerprint
from airflow_kafka_backup.engine.topics.offsets import OffsetBounds
from airflow_kafka_backup.operators import backup as backup_operators
from airflow_kafka_backup.operators.backup import KafkaBackupPlanOperator, checkpoint_variable_key

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

    def list_keys(self, prefix: str):
        return sorted(k for k in self.objects if k.startswith(prefix))

    def head(self, key: str):
        return {} if key in self.objects else None

    def get_bytes(self, key: str) -> bytes:
        return self.objects[key]

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        self.writes.append(key)
        self.objects[key] = data


@pytest.fixture
def plan_with(monkeypatch):
    """``plan_with(existing_key, run_key)``: plan a scheduled run with ``run_key`` over a one-run backup written
    with ``existing_key`` (None: no SSE-C), its checkpoint Variable up to date; returns the store."""
    variables = {checkpoint_variable_key("b", "kafka-backup"): {"checkpoints": {"orders": {"0": 5}}, "manifests": 1}}
    admin = SimpleNamespace(list_topics=lambda timeout=None: SimpleNamespace(topics={
        "orders": SimpleNamespace(error=None, partitions={0: SimpleNamespace(replicas=[1])})}))
    monkeypatch.setattr(backup_operators, "KafkaAdminClientHook", lambda kafka_config_id: SimpleNamespace(
        get_conn=admin))
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
        plan.execute({"run_id": "scheduled__2", "dag": SimpleNamespace(dag_id="kafka_backup"),
                      "ti": SimpleNamespace(xcom_push=lambda key, value: None)})
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
    unit = {"ranges": [{"topic": "orders", "partition": 0, "start": 0, "end": 5}],
            "settings": {"segment_format": "jsonl", "compression": "none", "flush_size": 10, "offset_pad_width": 10},
            "isolation_level": "read_uncommitted"}
    task = KafkaBackupOperator(task_id="backup", work_unit=unit, bucket="b")
    task.__dict__["store"] = FakeStore()
    assert task.execute({}) == []
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
