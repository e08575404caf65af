"""Unit tests: Object Lock settings are validated, and every write carries a retain-until date of its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from botocore.exceptions import ClientError

from airflow_kafka_backup.dag_factories import backup_dag, restore_dag
from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.storage.checksums import CRC64NVME, Checksum
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from airflow_kafka_backup.engine.storage.retention import ensure_retention_rule
from airflow_kafka_backup.engine.storage.s3_settings import S3WriteSettings, check_retention_covers_object_lock
from airflow_kafka_backup.engine.storage.writer_lock import acquire
from airflow_kafka_backup.operators.backup import KafkaBackupRetentionOperator
from tests.unit.engine.storage.test_s3_settings import FakeLifecycleClient


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"object_lock_mode": "GOVERNANCE"}, "object_lock_mode and object_lock_retention_days go together"),
    ({"object_lock_retention_days": 7}, "object_lock_mode and object_lock_retention_days go together"),
    ({"object_lock_mode": "governance", "object_lock_retention_days": 7},
     "object_lock_mode must be one of GOVERNANCE, COMPLIANCE, got 'governance'"),
    ({"object_lock_mode": "LEGAL_HOLD", "object_lock_retention_days": 7}, "object_lock_mode must be one of"),
    ({"object_lock_mode": "COMPLIANCE", "object_lock_retention_days": 0},
     "object_lock_retention_days must be a whole number of days from 1 to 36500, got 0"),
    ({"object_lock_mode": "COMPLIANCE", "object_lock_retention_days": 36_501}, "from 1 to 36500, got 36501"),
    ({"object_lock_mode": "COMPLIANCE", "object_lock_retention_days": "a week"}, "got 'a week'"),
    ({"object_lock_mode": "COMPLIANCE", "object_lock_retention_days": 2.5}, "got 2.5"),
    ({"object_lock_mode": "COMPLIANCE", "object_lock_retention_days": True}, "got True"),
])
def test_bad_object_lock_settings_are_refused_with_a_message_naming_them(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        S3WriteSettings.create(**kwargs)


def test_no_object_lock_means_no_lock_arguments():
    for unset in (None, ""):
        settings = S3WriteSettings.create(object_lock_mode=unset, object_lock_retention_days=unset)
        assert settings.object_lock_mode is None and settings.object_lock_args() == {}


def test_lock_arguments_are_counted_from_each_write_and_stay_out_of_extra_args():
    settings = S3WriteSettings.create(object_lock_mode="COMPLIANCE", object_lock_retention_days="35",
                                      sse_algorithm="AES256")
    assert settings.object_lock_retention_days == 35
    assert settings.extra_args() == {"ServerSideEncryption": "AES256"}  # the S3Hook's fixed args: no date
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    assert settings.object_lock_args(t0) == {
        "ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": t0 + timedelta(days=35),
        "ChecksumAlgorithm": "CRC32",  # S3 refuses Object Lock PUTs without a checksum or Content-MD5
    }
    before = datetime.now(UTC)
    until = settings.object_lock_args()["ObjectLockRetainUntilDate"]
    assert before + timedelta(days=35) <= until <= datetime.now(UTC) + timedelta(days=35)


def test_a_lifecycle_expiry_shorter_than_the_lock_is_refused():
    check_retention_covers_object_lock(None, 30)
    check_retention_covers_object_lock(30, None)
    check_retention_covers_object_lock(30, 30)
    with pytest.raises(ConfigurationError, match=r"retention_days \(29\) is shorter than object_lock_retention_days "
                                                 r"\(30\)"):
        check_retention_covers_object_lock(29, 30)


class RecordingClient:
    """Stand-in for the boto3 client: records the arguments of each write."""

    def __init__(self):
        self.puts: list[dict] = []
        self.uploads: list[dict] = []

    def put_object(self, **kwargs):
        self.puts.append(kwargs)

    def upload_fileobj(self, body, bucket, key, ExtraArgs, Config):
        self.uploads.append(ExtraArgs)


class Clock:
    def __init__(self):
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def tick(self, **delta):
        self.now += timedelta(**delta)


def _locked_store(days: int = 10) -> tuple[S3ObjectStore, RecordingClient, Clock]:
    settings = S3WriteSettings.create(acl="private", object_lock_mode="GOVERNANCE", object_lock_retention_days=days)
    client, clock = RecordingClient(), Clock()
    store = S3ObjectStore(client=client, bucket="b", extra_args=settings.extra_args(),
                          object_lock_args=lambda: settings.object_lock_args(clock.now))
    return store, client, clock


def test_every_write_path_asks_for_retention_from_the_moment_it_writes():
    store, client, clock = _locked_store()
    store.put_bytes("p/_manifests/run=a.json", b"{}")
    clock.tick(hours=5)
    store.put_file("p/t/partition=0/t+0+0.jsonl.gz", "/dev/null", Checksum(CRC64NVME, "AAECAwQFBgc="))
    clock.tick(hours=1)
    assert acquire(store, "p", "gen", "run-a", now=0) == "acquired"  # the writer lock's If-None-Match create
    start = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(days=10)
    manifest, segment, lock = client.puts  # a segment up to part_size is one PutObject
    assert manifest["ObjectLockRetainUntilDate"] == start
    assert segment["ObjectLockRetainUntilDate"] == start + timedelta(hours=5)
    assert lock["ObjectLockRetainUntilDate"] == start + timedelta(hours=6) and lock["IfNoneMatch"] == "*"
    for args in (manifest, segment, lock):
        assert args["ObjectLockMode"] == "GOVERNANCE" and args["ACL"] == "private"
    assert manifest["ChecksumAlgorithm"] == lock["ChecksumAlgorithm"] == "CRC32"
    # The checksum Object Lock asks for is, for a segment, the CRC64-NVME computed while writing it.
    assert segment["ChecksumAlgorithm"] == "CRC64NVME"
    assert segment["ChecksumCRC64NVME"] == "AAECAwQFBgc="
    assert segment["Metadata"] == {"crc64nvme": "AAECAwQFBgc="}


def test_a_store_without_object_lock_writes_as_before():
    client = RecordingClient()
    store = S3ObjectStore(client=client, bucket="b", extra_args={"ACL": "private"})
    store.put_bytes("k", b"x")
    assert client.puts == [{"Bucket": "b", "Key": "k", "Body": b"x", "ContentType": "application/json",
                            "ACL": "private"}]


class LockConfigClient:
    def __init__(self, answer):
        self.answer = answer

    def get_object_lock_configuration(self, Bucket):
        if isinstance(self.answer, str):
            raise ClientError({"Error": {"Code": self.answer, "Message": "no"}}, "GetObjectLockConfiguration")
        return {"ObjectLockConfiguration": self.answer}


@pytest.mark.parametrize(("answer", "message"), [
    ("ObjectLockConfigurationNotFoundError", "S3 bucket 'vault' does not have Object Lock enabled"),
    ({"ObjectLockEnabled": "Disabled"}, "S3 bucket 'vault' does not have Object Lock enabled"),
    ("AccessDenied", "needs s3:GetBucketObjectLockConfiguration"),
])
def test_a_bucket_without_object_lock_is_refused_naming_it(answer, message):
    with pytest.raises(ConfigurationError, match=message):
        S3ObjectStore(client=LockConfigClient(answer), bucket="vault").check_object_lock()


def test_a_bucket_with_object_lock_passes():
    store = S3ObjectStore(client=LockConfigClient({"ObjectLockEnabled": "Enabled"}), bucket="vault")
    store.check_object_lock()
    with pytest.raises(ClientError):
        S3ObjectStore(client=LockConfigClient("InternalError"), bucket="vault").check_object_lock()


def test_the_lifecycle_rule_also_expires_old_versions_on_a_locked_bucket():
    client = FakeLifecycleClient([])
    assert ensure_retention_rule(client, "b", "kb", 30) == "created"
    assert "NoncurrentVersionExpiration" not in client.rules[0]
    assert ensure_retention_rule(client, "b", "kb", 30, versioned=True) == "updated"
    assert client.rules[0]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}
    assert ensure_retention_rule(client, "b", "kb", 30, versioned=True) == "unchanged"
    assert ensure_retention_rule(client, "b", "kb", 30) == "updated"
    assert "NoncurrentVersionExpiration" not in client.rules[0]


def test_operators_refuse_bad_object_lock_settings_when_the_dag_is_parsed():
    with pytest.raises(ConfigurationError, match="go together"):
        KafkaBackupRetentionOperator(task_id="r", bucket="b", object_lock_mode="COMPLIANCE")
    with pytest.raises(ConfigurationError, match="shorter than object_lock_retention_days"):
        KafkaBackupRetentionOperator(task_id="r", bucket="b", retention_days=7, object_lock_mode="COMPLIANCE",
                                     object_lock_retention_days=30)
    templated = KafkaBackupRetentionOperator(task_id="r", bucket="b", retention_days=7,
                                             object_lock_mode="{{ params.object_lock_mode }}",
                                             object_lock_retention_days="{{ params.object_lock_retention_days }}")
    assert {"object_lock_mode", "object_lock_retention_days"} <= set(templated.template_fields)


def test_backup_dag_takes_object_lock_as_params_and_arguments():
    dag = backup_dag("lock_backup", topics=["t"], bucket="b", object_lock_mode="GOVERNANCE",
                     object_lock_retention_days=14, retention_days=30)
    assert dag.params["object_lock_mode"] == "GOVERNANCE" and dag.params["object_lock_retention_days"] == 14
    for task_id in ("retention", "plan", "backup", "commit"):
        task = dag.get_task(task_id)
        lock = getattr(task, "partial_kwargs", None) or vars(task)
        assert lock["object_lock_mode"] == "{{ params.object_lock_mode }}", task_id
        assert lock["object_lock_retention_days"] == "{{ params.object_lock_retention_days }}", task_id
    # The restore DAG's own objects (offset maps, restore manifests) are not locked: no such Params.
    restore = restore_dag("lock_restore", bucket="b")
    assert "object_lock_mode" not in restore.params
    assert all((getattr(t, "partial_kwargs", None) or vars(t)).get("object_lock_mode") is None for t in restore.tasks)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"object_lock_mode": "GOVERNANCE"}, "go together"),
    ({"object_lock_mode": "COMPLIANCE", "object_lock_retention_days": 30, "retention_days": 7},
     r"retention_days \(7\) is shorter than object_lock_retention_days \(30\)"),
])
def test_backup_dag_refuses_bad_object_lock_defaults_when_parsed(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        backup_dag("bad_lock_backup", topics=["t"], bucket="b", **kwargs)


@pytest.mark.parametrize("prefix", ["", "/"])
def test_retention_on_an_empty_prefix_is_refused_before_any_rule_is_written(prefix):
    """The rule would expire every object in the bucket, not only the backup's."""
    client = FakeLifecycleClient([])
    with pytest.raises(ConfigurationError, match="retention_days needs a prefix.*every object in S3 bucket 'b'"):
        ensure_retention_rule(client, "b", prefix, 30)
    assert client.rules == []
    retention = KafkaBackupRetentionOperator(task_id="r", bucket="b", prefix=prefix, retention_days=30)
    retention.__dict__["store"] = SimpleNamespace(client=client)  # never reached
    with pytest.raises(ConfigurationError, match="retention_days needs a prefix"):
        retention.execute({})
    with pytest.raises(ConfigurationError, match="retention_days needs a prefix"):
        backup_dag("empty_prefix", topics=["t"], bucket="b", prefix=prefix, retention_days=30)
    backup_dag("empty_prefix_no_retention", topics=["t"], bucket="b", prefix=prefix)


def test_retention_without_a_bucket_names_the_missing_bucket():
    with pytest.raises(ConfigurationError, match="bucket is required"):
        KafkaBackupRetentionOperator(task_id="r", bucket=None, retention_days=30).execute({})
