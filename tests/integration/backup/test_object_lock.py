"""S3 Object Lock through the backup DAG, against the real S3 endpoint (moto in server mode).

moto enforces what these tests lean on: it refuses to delete a locked version (DeleteObject
with a VersionId, and DeleteObjects), lets GOVERNANCE be bypassed but not COMPLIANCE, and
refuses an Object Lock PUT that carries neither Content-MD5 nor a checksum. It does not
keep the lock headers of a multipart upload (CreateMultipartUpload drops them; real S3
applies them), so for multipart uploads the test checks the request instead.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError
from confluent_kafka.admin import NewTopic

from airflow_kafka_backup.engine.storage.checksums import CRC64NVME, checksum_of
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from airflow_kafka_backup.engine.storage.s3_settings import S3WriteSettings
from devstack.s3_server import ACCESS_KEY, REGION, SECRET_KEY
from tests.helpers import create_topics, produce_tricky, read_kafka, run_dag

pytestmark = pytest.mark.integration

PREFIX = "locked"


@pytest.fixture
def topic(airflow_stack) -> str:
    """A small topic of its own: 2 partitions, 2,400 tricky records, several segments each."""
    name = f"lock-{uuid.uuid4().hex[:6]}"
    create_topics(airflow_stack["bootstrap"], NewTopic(name, 2, 1, config={"retention.ms": "-1"}))
    produce_tricky(airflow_stack["bootstrap"], name, 2, 2_400, seed=11)
    return name


@pytest.fixture
def lock_bucket(s3) -> str:
    name = f"lock-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def _conf(topic: str, bucket: str, **extra) -> dict:
    return {"topics": [topic], "bucket": bucket, "prefix": PREFIX, "flush_size": 500, **extra}


def _versions(s3, bucket: str, markers: dict[str, list[dict]] | None = None) -> dict[str, list[dict]]:
    """Every version, by key. Delete markers go to ``markers``; without it there must be none."""
    out: dict[str, list[dict]] = {}
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", ()):
            out.setdefault(v["Key"], []).append(v)
        for m in page.get("DeleteMarkers", ()):
            assert markers is not None, f"nothing here deletes, yet {m['Key']} has a delete marker"
            markers.setdefault(m["Key"], []).append(m)
    return out


def _working(keys) -> list[str]:
    """The run's working objects (plan, work units, segment lists): the commit removes them."""
    return sorted(k for k in keys if f"{PREFIX}/_runs/" in k)


@pytest.mark.parametrize(("mode", "days"), [("GOVERNANCE", 3), ("COMPLIANCE", 5)])
def test_every_object_the_backup_writes_is_retained_and_its_versions_cannot_be_deleted(
        topic, lock_bucket, s3, mode, days):
    bucket = lock_bucket
    when = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(seconds=uuid.uuid4().int % 10**6)
    conf = _conf(topic, bucket, object_lock_mode=mode, object_lock_retention_days=days, retention_days=days + 2)
    before = datetime.now(UTC)
    assert run_dag("kafka_backup", conf, logical_date=when).state == "success"
    after = datetime.now(UTC)

    markers: dict[str, list[dict]] = {}
    versions = _versions(s3, bucket, markers)
    kinds = {"segment": [k for k in versions if "/partition=" in k],
             "manifest": [k for k in versions if "/_manifests/" in k],
             "writer lock": [k for k in versions if "/_locks/" in k],
             "commit log entry": [k for k in versions if "/_commits/" in k],
             "working object": _working(versions)}
    assert len(kinds["segment"]) >= 6 and len(kinds["manifest"]) == 1 and len(kinds["writer lock"]) == 1, versions
    assert len(kinds["commit log entry"]) == 1, versions
    assert sum(map(len, kinds.values())) == len(versions), "every object is a segment, a manifest, the lock, the " \
                                                           "commit log entry or one of the run's working objects"
    # The commit removed the working objects: on this versioned bucket a delete marker over each (nothing else is
    # deleted), and their one version stays, retained like every other, until the lifecycle rule expires it.
    run_folder = kinds["working object"][0].rsplit("/", 1)[0]
    units = [k for k in kinds["working object"] if not k.endswith(("plan.json", "-segments.json"))]
    assert units and kinds["working object"] == sorted([f"{run_folder}/plan.json", *units,
                                                        *(u.replace(".json", "-segments.json") for u in units)])
    assert sorted(markers) == kinds["working object"] and all(len(m) == 1 and m[0]["IsLatest"]
                                                               for m in markers.values())
    assert not _working(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    for key, [version] in versions.items():
        head = s3.head_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])
        assert head["ObjectLockMode"] == mode, key
        # Counted from the write (S3 keeps whole seconds), not from when the DAG was parsed.
        until = head["ObjectLockRetainUntilDate"]
        assert before + timedelta(days=days, seconds=-1) <= until <= after + timedelta(days=days), (key, until)

    # A version cannot be deleted, one by one or in a batch; COMPLIANCE not even with the governance bypass.
    segment = kinds["segment"][0]
    version_id = versions[segment][0]["VersionId"]
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=bucket, Key=segment, VersionId=version_id)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    batch = s3.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": k, "VersionId": v[0]["VersionId"]} for k, v in versions.items()]})
    assert not batch.get("Deleted") and len(batch["Errors"]) == len(versions)
    if mode == "COMPLIANCE":
        with pytest.raises(ClientError, match="AccessDenied"):
            s3.delete_object(Bucket=bucket, Key=segment, VersionId=version_id, BypassGovernanceRetention=True)
    assert _versions(s3, bucket, {}) == versions

    # The lifecycle rule also expires old versions (once their lock has ended), or they would stay forever.
    (rule,) = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert rule["Expiration"] == {"Days": days + 2} and rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}

    # Re-running the committed run on the versioned bucket: identical segments are still skipped (no new
    # version); the manifest is rewritten with the same bytes. Keys and bytes do not depend on the lock.
    manifest_bytes = s3.get_object(Bucket=bucket, Key=kinds["manifest"][0])["Body"].read()
    assert run_dag("kafka_backup", conf, logical_date=when).state == "success"
    markers = {}
    again = _versions(s3, bucket, markers)
    assert set(again) == set(versions)
    assert sorted(markers) == kinds["working object"] and all(len(m) == 2 for m in markers.values()), \
        "the re-run wrote its working objects again (same keys) and removed them again"
    assert all(again[k] == versions[k] for k in kinds["segment"]), "identical segments are not uploaded again"
    assert [len(again[k]) for k in kinds["manifest"]] == [2]
    assert {s3.get_object(Bucket=bucket, Key=kinds["manifest"][0], VersionId=v["VersionId"])["Body"].read()
            for v in again[kinds["manifest"][0]]} == {manifest_bytes}


def test_a_locked_backup_restores_and_the_restore_objects_are_not_locked(topic, lock_bucket, s3, airflow_stack):
    bucket = lock_bucket
    conf = _conf(topic, bucket, object_lock_mode="GOVERNANCE", object_lock_retention_days=1)
    assert run_dag("kafka_backup", conf).state == "success"
    target = f"{topic}-restored"
    restore = {"topics": [topic], "bucket": bucket, "prefix": PREFIX, "topic_mapping": {topic: target},
               "topic_configs": {"retention.ms": "-1"}}
    assert run_dag("kafka_restore", restore).state == "success"
    by_partition = {name: {p: [(r.key, r.value, r.headers, r.timestamp) for r in records]
                           for (_, p), records in read_kafka(airflow_stack["bootstrap"], [name]).items()}
                    for name in (topic, target)}
    assert by_partition[target] == by_partition[topic] and sum(map(len, by_partition[topic].values())) == 2_400
    restore_keys = [k for k in _versions(s3, bucket, {}) if f"{PREFIX}/_restores/" in k]
    assert any("/offset-map/" in k for k in restore_keys) and any(k.endswith("restore-manifest.json")
                                                                  for k in restore_keys)
    for key in restore_keys:
        assert "ObjectLockMode" not in s3.head_object(Bucket=bucket, Key=key), key


def test_a_bucket_without_object_lock_fails_before_anything_is_written(topic, bucket, s3, capfd, caplog):
    conf = _conf(topic, bucket, object_lock_mode="COMPLIANCE", object_lock_retention_days=2, retention_days=2)
    capfd.readouterr()
    assert run_dag("kafka_backup", conf).state == "failed"
    output = "".join(capfd.readouterr()) + caplog.text
    assert f"S3 bucket '{bucket}' does not have Object Lock enabled" in output
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    with pytest.raises(ClientError, match="NoSuchLifecycleConfiguration"):
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)  # not even the lifecycle rule

    # The plan task, used on its own, checks too: no writer lock is taken.
    from airflow_kafka_backup.engine.errors import ConfigurationError
    from airflow_kafka_backup.operators.backup import KafkaBackupPlanOperator

    plan = KafkaBackupPlanOperator(task_id="plan", topics=[topic], bucket=bucket, prefix=PREFIX,
                                   object_lock_mode="GOVERNANCE", object_lock_retention_days=1)
    with pytest.raises(ConfigurationError, match=f"S3 bucket '{bucket}' does not have Object Lock enabled"):
        plan.execute({"run_id": "manual__no-lock"})
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_locked_uploads_carry_a_checksum_and_multipart_uploads_ask_for_the_lock(s3_server, lock_bucket, tmp_path):
    """Even with ``request_checksum_calculation=when_required`` (botocore then sends no checksum of its own)
    S3 gets the checksum it demands for Object Lock; a multipart upload asks for the lock when it starts."""
    client = boto3.client("s3", endpoint_url=s3_server.endpoint_url, region_name=REGION,
                          aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                          config=Config(request_checksum_calculation="when_required"))
    sent: list[tuple[str, str, dict]] = []
    client.meta.events.register("before-send.s3", lambda request, **_: sent.append(
        (request.method, request.url, {k.lower(): v for k, v in request.headers.items()})))
    settings = S3WriteSettings.create(object_lock_mode="COMPLIANCE", object_lock_retention_days=2,
                                      part_size=5 << 20)
    store = S3ObjectStore(client=client, bucket=lock_bucket, extra_args=settings.extra_args(),
                          transfer_config=TransferConfig(**settings.transfer_config_args()),
                          object_lock_args=settings.object_lock_args)
    small, large = tmp_path / "small", tmp_path / "large"
    small.write_bytes(b"s" * 1000)
    large.write_bytes(b"l" * (11 << 20))
    store.put_bytes("p/m.json", b"{}")
    store.put_file("p/small", str(small), checksum_of(CRC64NVME, small.read_bytes()))
    store.put_file("p/large", str(large), large_checksum := checksum_of(CRC64NVME, large.read_bytes()))
    for key in ("p/m.json", "p/small"):
        assert client.head_object(Bucket=lock_bucket, Key=key)["ObjectLockMode"] == "COMPLIANCE"
    manifest_put, segment_put = [h for m, u, h in sent if m == "PUT" and "uploadId" not in u]
    assert manifest_put["x-amz-checksum-crc32"]
    # A segment up to part_size is one PUT whose checksum is the CRC64-NVME computed while writing it.
    assert segment_put["x-amz-checksum-crc64nvme"] == checksum_of(CRC64NVME, small.read_bytes()).value.encode()
    # A larger one goes multipart, with that CRC as the full-object checksum S3 checks at completion.
    (start,) = [h for m, u, h in sent if m == "POST" and u.endswith("?uploads")]
    assert start["x-amz-object-lock-mode"] == b"COMPLIANCE" and start["x-amz-checksum-algorithm"] == b"CRC64NVME"
    assert start["x-amz-object-lock-retain-until-date"] and start["x-amz-checksum-type"] == b"FULL_OBJECT"
    parts = [h for m, u, h in sent if m == "PUT" and "uploadId" in u]
    assert len(parts) == 3 and all(h["x-amz-checksum-crc64nvme"] for h in parts)
    (complete,) = [h for m, u, h in sent if m == "POST" and "uploadId" in u]
    assert complete["x-amz-checksum-crc64nvme"] == large_checksum.value.encode()
    with pytest.raises(ClientError, match="MissingUploadObjectWithObjectLockHeaders"):  # what the checksum avoids
        client.put_object(Bucket=lock_bucket, Key="p/bare", Body=b"x", ObjectLockMode="COMPLIANCE",
                          ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=1))
