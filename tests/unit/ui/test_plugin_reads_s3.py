"""The plugin's S3 read (in-process moto for the bucket): manifests through the DAG's connection, errors that name
the problem, and an SSE-C key that reaches neither the page nor the API."""

from __future__ import annotations

import base64
import json
import os

import boto3
import pytest
from moto import mock_aws

from airflow_kafka_backup import compat
from airflow_kafka_backup.engine.storage.checksums import SHA256, Checksum
from airflow_kafka_backup.engine.storage.key_layout import manifest_key
from airflow_kafka_backup.engine.storage.manifest import PartitionRange, RunManifest, SegmentInfo, SegmentSettings
from airflow_kafka_backup.engine.storage.s3_settings import S3WriteSettings
from airflow_kafka_backup.plugins import kafka_backups
from airflow_kafka_backup.ui.locations import BackupLocation
from airflow_kafka_backup.ui.overview import backup_overview
from airflow_kafka_backup.ui.page import render_page

KEY = base64.b64encode(b"k" * 32).decode()
OTHER_KEY = base64.b64encode(b"o" * 32).decode()


class FakeS3Hook:
    """S3Hook as the plugin uses it: a boto3 client for the named connection."""

    connections: list[str] = []

    def __init__(self, aws_conn_id: str) -> None:
        self.connections.append(aws_conn_id)
        self.extra_args: dict = {}
        self.transfer_config = None

    def get_conn(self):
        return boto3.client("s3", region_name="us-east-1")


@pytest.fixture
def s3(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    import airflow.providers.amazon.aws.hooks.s3 as s3_hooks

    monkeypatch.setattr(s3_hooks, "S3Hook", FakeS3Hook)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="backups")
        yield client


def _put_manifest(client, encryption: dict) -> None:
    settings = SegmentSettings("msgpack", "zstd", 100, 10)
    segment = SegmentInfo("kb/t/partition=0/t+0+0000000000.msgpack", "t", 0, 0, 9, 10, 1_000, 1_009, 500,
                          Checksum(SHA256, "0" * 64))
    manifest = RunManifest("r1", settings, [PartitionRange("t", 0, 0, 10)], [segment], encryption=encryption)
    client.put_object(Bucket="backups", Key=manifest_key("kb", "r1"), Body=manifest.to_json())


def test_reads_the_manifests_through_the_dags_connection(s3):
    _put_manifest(s3, {})
    coverage, error = kafka_backups._read_location(BackupLocation("backups", "kb", "aws_eu"))
    assert error is None and FakeS3Hook.connections[-1] == "aws_eu"
    (incarnation,) = coverage.topics["t"]
    assert incarnation.total("records") == 10 and coverage.manifests == 1 and coverage.last_commit_ms is not None


def test_an_sse_c_key_never_reaches_the_page_or_the_api(s3, monkeypatch):
    _put_manifest(s3, S3WriteSettings.create(sse_customer_key=KEY).manifest_encryption())
    location = BackupLocation("backups", "kb", "aws_default", "backup_key", {"d"}, {"d": None})
    # Not set: says which Variable is missing, before anything is read.
    monkeypatch.setattr(compat, "server_variable", lambda name: None)
    coverage, error = kafka_backups._read_location(location)
    assert coverage is None and "'backup_key'" in error and "is not set" in error
    # Another key than the backup's: refused, naming the run, showing no key.
    monkeypatch.setattr(compat, "server_variable", lambda name: OTHER_KEY if name == "backup_key" else None)
    coverage, error = kafka_backups._read_location(location)
    assert coverage is None and error.startswith("s3://backups/kb") and "not the key backup run r1" in error
    shown = json.dumps(backup_overview(location, coverage, 0, 1, error=error)) + render_page(
        [backup_overview(location, coverage, 0, 1, error=error)], 1, 60)
    for secret in (KEY, OTHER_KEY, base64.b64decode(KEY).decode(), base64.b64decode(OTHER_KEY).decode()):
        assert secret not in shown
    assert os.environ.get("AWS_SECRET_ACCESS_KEY") not in shown


def test_a_missing_bucket_is_named(s3):
    coverage, error = kafka_backups._read_location(BackupLocation("no-such-bucket", "kb"))
    assert coverage is None and "s3://no-such-bucket/kb" in error and "NoSuchBucket" in error
