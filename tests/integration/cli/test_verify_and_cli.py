"""Verify and inspect: the KafkaBackupVerifyOperator in the backup DAG and the kafka-backup command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from base64 import b64decode
from pathlib import Path

import pytest
from confluent_kafka.admin import NewTopic

from airflow_kafka_backup.engine.storage.manifest import load_manifests
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from devstack.s3_server import ACCESS_KEY, REGION, SECRET_KEY
from tests.helpers import create_topics, produce_tricky, read_kafka, rewrite_as_format_1, run_dag

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("kafka-backup"))


def _cli(airflow_stack, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "AWS_DEFAULT_REGION": REGION}
    return subprocess.run([CLI, *args, "--endpoint-url", airflow_stack["endpoint_url"]], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def backed_up(airflow_stack, bucket):
    topic = f"verify-{uuid.uuid4().hex[:6]}"
    create_topics(airflow_stack["bootstrap"], NewTopic(topic, 2, 1, config={"retention.ms": "-1"}))
    produce_tricky(airflow_stack["bootstrap"], topic, 2, 600, seed=8)
    conf = {"topics": [topic], "bucket": bucket, "prefix": "vf", "flush_size": 100}
    assert run_dag("kafka_backup", conf).state == "success"
    return topic


def test_cli_ls_verify_inspect_on_a_sound_backup(airflow_stack, bucket, s3, backed_up):
    topic = backed_up
    listed = _cli(airflow_stack, "ls", "--bucket", bucket, "--prefix", "vf")
    assert listed.returncode == 0, listed.stderr
    assert topic in listed.stdout and " 600" in listed.stdout

    verified = _cli(airflow_stack, "verify", "--bucket", bucket, "--prefix", "vf")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "OK" in verified.stdout and topic in verified.stdout

    (manifest,) = load_manifests(S3ObjectStore(client=s3, bucket=bucket), "vf")
    segment = manifest.segments[0]
    inspected = _cli(airflow_stack, "inspect", "--bucket", bucket, "--prefix", "vf", segment.key)
    assert inspected.returncode == 0, inspected.stderr
    lines = [json.loads(line) for line in inspected.stdout.splitlines()]
    truth = read_kafka(airflow_stack["bootstrap"], [topic])[(topic, segment.partition)][: segment.records]
    assert [(line["offset"], None if line["value"] is None else b64decode(line["value"])) for line in lines] == [
        (r.offset, r.value) for r in truth]


def test_cli_verifies_and_inspects_a_backup_of_the_previous_format(airflow_stack, bucket, s3, backed_up):
    """A backup written before CRC64-NVME (format 1, sha256 segments): deep and quick verify, inspect, damage."""
    rewrite_as_format_1(s3, bucket, "vf")
    for quick in ((), ("--quick",)):
        verified = _cli(airflow_stack, "verify", "--bucket", bucket, "--prefix", "vf", *quick)
        assert verified.returncode == 0 and "OK" in verified.stdout, verified.stdout + verified.stderr
    (manifest,) = load_manifests(S3ObjectStore(client=s3, bucket=bucket), "vf")
    segment = manifest.segments[0]
    assert segment.checksum.algorithm == "sha256" and manifest.format_version == 1
    inspected = _cli(airflow_stack, "inspect", "--bucket", bucket, "--prefix", "vf", segment.key)
    assert inspected.returncode == 0 and len(inspected.stdout.splitlines()) == segment.records, inspected.stderr
    s3.put_object(Bucket=bucket, Key=segment.key, Body=b"x" * segment.bytes, Metadata=segment.checksum.as_field())
    verified = _cli(airflow_stack, "verify", "--bucket", bucket, "--prefix", "vf")
    assert verified.returncode == 1
    assert f"s3://{bucket}/{segment.key}: {segment.bytes} bytes with sha256 " in verified.stdout


def test_damage_is_found_by_cli_and_operator(airflow_stack, bucket, s3, backed_up):
    topic = backed_up
    (manifest,) = load_manifests(S3ObjectStore(client=s3, bucket=bucket), "vf")
    corrupted, deleted = manifest.segments[0], manifest.segments[1]
    body = s3.get_object(Bucket=bucket, Key=corrupted.key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=corrupted.key, Body=body[:-1] + bytes([body[-1] ^ 0xFF]),
                  Metadata=corrupted.checksum.as_field())  # same size, same stored checksum: only a deep check sees it
    s3.delete_object(Bucket=bucket, Key=deleted.key)

    verified = _cli(airflow_stack, "verify", "--bucket", bucket, "--prefix", "vf")
    assert verified.returncode == 1
    assert f"s3://{bucket}/{corrupted.key}: {corrupted.bytes} bytes with crc64nvme " in verified.stdout
    assert f"s3://{bucket}/{deleted.key}: missing" in verified.stdout
    quick = _cli(airflow_stack, "verify", "--bucket", bucket, "--prefix", "vf", "--quick")
    assert quick.returncode == 1 and corrupted.key not in quick.stdout and deleted.key in quick.stdout

    conf = {"topics": [topic], "bucket": bucket, "prefix": "vf", "flush_size": 100}
    assert run_dag("kafka_backup_verified", conf).state == "failed"

    missing_bucket = _cli(airflow_stack, "verify", "--bucket", f"nope-{uuid.uuid4().hex[:6]}")
    assert missing_bucket.returncode == 2 and "does not exist" in missing_bucket.stderr
