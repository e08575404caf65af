"""The seed settings that live in the ``aws`` connection's extra, shown at the S3 endpoint.

``s3.region`` (``region_name``), ``s3.profile.name`` (``profile_name``) and
``aws.signer.override`` (``config_kwargs.signature_version``) all show in how each request
is signed. Every request goes from the operators' own store (``S3Hook`` over a connection
given as ``AIRFLOW_CONN_*`` JSON, as a task gets it) through a recording proxy on loopback
to the moto server, and the proxy's copy of the ``Authorization`` header is the evidence.
moto does not check signatures, so it cannot refuse a wrong region or key; it does refuse
an unsigned read of a private object. ``s3.wan.mode`` needs AWS's accelerate host, which
no local endpoint can be: see ``tests/unit/hooks/test_seed_connection_extras.py``.
"""

from __future__ import annotations

import json
import re
import uuid
from urllib.parse import unquote

import pytest
from botocore.exceptions import ClientError
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

from airflow_kafka_backup.engine.storage.manifest import load_manifests
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from devstack.s3_server import ACCESS_KEY, SECRET_KEY
from tests.helpers import create_topics, run_dag
from tests.s3_proxy import S3Proxy

pytestmark = pytest.mark.integration

# SigV4: "AWS4-HMAC-SHA256 Credential=<access key id>/<yyyymmdd>/<region>/s3/aws4_request, SignedHeaders=…"
_SIGV4 = re.compile(r"AWS4-HMAC-SHA256 Credential=(?P<akid>[^/]+)/\d{8}/(?P<region>[^/]+)/s3/aws4_request, ")


@pytest.fixture
def aws_files(tmp_path, monkeypatch):
    """The worker's AWS shared files, empty and temporary, and no ``AWS_*`` variable: only the connection decides."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_DEFAULT_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    files = {"credentials": tmp_path / "credentials", "config": tmp_path / "config"}
    for path in files.values():
        path.write_text("")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(files["credentials"]))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(files["config"]))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no credential lookup ever leaves the machine
    return files


def _connection(monkeypatch, s3_server, proxy: S3Proxy, login: str | None = ACCESS_KEY, **extra) -> str:
    """An ``aws`` connection to the moto server through ``proxy``, with ``extra`` added to its extra."""
    conn_id = f"aws_extras_{uuid.uuid4().hex[:6]}"
    config_kwargs = {"proxies": {"http": proxy.url}, "s3": {"addressing_style": "path"},
                     **extra.pop("config_kwargs", {})}
    extra = {"endpoint_url": s3_server.endpoint_url, **extra, "config_kwargs": config_kwargs}
    conn = {"conn_type": "aws", "extra": extra}
    if login is not None:
        conn |= {"login": login, "password": SECRET_KEY}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return conn_id


def _store(conn_id: str, bucket: str) -> S3ObjectStore:
    """The store a task builds from its ``aws_conn_id``."""
    from airflow_kafka_backup.operators.s3 import S3BackupBaseOperator

    return S3BackupBaseOperator(task_id="extras", bucket=bucket, aws_conn_id=conn_id).store


def _round_trip(conn_id: str, bucket: str, proxy: S3Proxy) -> list[str | None]:
    """Write, read back and list one object through the task's store; the ``Authorization`` of each request."""
    store = _store(conn_id, bucket)
    store.put_bytes("extras/object.json", b'{"ok": true}')
    assert store.get_bytes("extras/object.json") == b'{"ok": true}'
    assert list(store.list_keys("extras/")) == ["extras/object.json"]
    assert [r.method for r in proxy.requests] == ["PUT", "GET", "GET"]
    return [r.headers.get("authorization") for r in proxy.requests]


def _signers(authorizations: list[str | None]) -> set[tuple[str, str]]:
    """``(access key id, region)`` of each SigV4 ``Authorization``; fails on any other."""
    matches = [_SIGV4.match(a or "") for a in authorizations]
    assert all(matches), authorizations
    return {(m["akid"], m["region"]) for m in matches}


def test_region_name_signs_every_request_of_a_backup_for_that_region(airflow_stack, s3_server, bucket, s3,
                                                                      aws_files, monkeypatch):
    topic = f"region-{uuid.uuid4().hex[:6]}"
    create_topics(airflow_stack["bootstrap"], NewTopic(topic, 2, 1))
    producer = Producer({"bootstrap.servers": airflow_stack["bootstrap"]})
    for i in range(20):
        producer.produce(topic, partition=i % 2, key=str(i).encode(), value=b"v%d" % i)
    assert producer.flush(30) == 0
    with S3Proxy() as proxy:
        conn_id = _connection(monkeypatch, s3_server, proxy, region_name="eu-west-3")
        conf = {"topics": [topic], "bucket": bucket, "prefix": "region", "aws_conn_id": conn_id}
        assert run_dag("kafka_backup", conf).state == "success"

    # Every request of every task (bucket checks, segment and manifest uploads) was signed for eu-west-3.
    assert _signers([r.headers.get("authorization") for r in proxy.requests]) == {(ACCESS_KEY, "eu-west-3")}
    uploads = [unquote(r.url) for r in proxy.requests if r.method == "PUT"]
    assert any("/partition=" in url for url in uploads) and any("/_manifests/" in url for url in uploads)
    (manifest,) = load_manifests(S3ObjectStore(client=s3, bucket=bucket), "region")
    assert sum(segment.records for segment in manifest.segments) == 20


@pytest.mark.parametrize(("default_region", "region"), [(None, "us-east-1"), ("ca-central-1", "ca-central-1")])
def test_without_region_name_requests_are_signed_for_the_workers_region_or_us_east_1(
        s3_server, bucket, aws_files, monkeypatch, default_region, region):
    """``AWS_DEFAULT_REGION`` if the worker has it, else the seed's default (the region AWS suggests to new
    customers in the US)."""
    if default_region is not None:
        monkeypatch.setenv("AWS_DEFAULT_REGION", default_region)
    with S3Proxy() as proxy:
        authorizations = _round_trip(_connection(monkeypatch, s3_server, proxy), bucket, proxy)
    assert _signers(authorizations) == {(ACCESS_KEY, region)}


@pytest.mark.parametrize(("signature_version", "authorization"), [
    ("s3v4", _SIGV4),  # the Java SDK's AWSS3V4SignerType, and botocore's default for S3
    ("s3", re.compile(rf"AWS {ACCESS_KEY}:[A-Za-z0-9+/]{{27}}=$")),  # S3SignerType: SigV2, HMAC-SHA1 in base64
], ids=["s3v4", "s3"])
def test_signature_version_picks_the_signer_of_every_request(s3_server, bucket, aws_files, monkeypatch,
                                                             signature_version, authorization):
    with S3Proxy() as proxy:
        conn_id = _connection(monkeypatch, s3_server, proxy, region_name="eu-west-3",
                              config_kwargs={"signature_version": signature_version})
        authorizations = _round_trip(conn_id, bucket, proxy)
    assert all(authorization.match(a or "") for a in authorizations), authorizations
    assert all(("x-amz-date" in r.headers) == (signature_version == "s3v4") for r in proxy.requests)


def test_unsigned_requests_carry_no_credentials_and_read_only_public_objects(s3_server, bucket, s3, aws_files,
                                                                            monkeypatch):
    """``"unsigned"`` (the Java SDK's NoOpSignerType): the connection's keys are never sent, and the endpoint
    serves only what anonymous callers may read."""
    s3.put_object(Bucket=bucket, Key="public/object", Body=b"for everyone", ACL="public-read")
    s3.put_object(Bucket=bucket, Key="private/object", Body=b"for the owner")
    with S3Proxy() as proxy:
        conn_id = _connection(monkeypatch, s3_server, proxy, config_kwargs={"signature_version": "unsigned"})
        store = _store(conn_id, bucket)
        assert store.get_bytes("public/object") == b"for everyone"
        with pytest.raises(ClientError) as refused:
            store.get_bytes("private/object")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert len(proxy.requests) == 2
    for request in proxy.requests:
        assert "authorization" not in request.headers and "x-amz-date" not in request.headers, request.headers
        assert ACCESS_KEY not in json.dumps(request.headers) and ACCESS_KEY not in request.url


_PROFILES = {
    "credentials": "[default]\naws_access_key_id = AKIADEFAULTPROFILE00\naws_secret_access_key = default-secret\n\n"
                   "[kafka-backup]\naws_access_key_id = AKIAKAFKABACKUP00001\naws_secret_access_key = backup-secret\n",
    "config": "[profile kafka-backup]\nregion = ap-southeast-2\n",
}


@pytest.mark.parametrize(("connection", "signer"), [
    # The profile's keys and its region.
    ({"login": None, "profile_name": "kafka-backup"}, ("AKIAKAFKABACKUP00001", "ap-southeast-2")),
    # region_name in the connection wins over the profile's region.
    ({"login": None, "profile_name": "kafka-backup", "region_name": "eu-west-3"},
     ("AKIAKAFKABACKUP00001", "eu-west-3")),
    # A login (access key id) and password in the connection win over the profile's keys.
    ({"login": "AKIACONNECTIONLOGIN1", "profile_name": "kafka-backup"}, ("AKIACONNECTIONLOGIN1", "ap-southeast-2")),
    # Without profile_name nor login: botocore's chain, here the default profile (which has no region).
    ({"login": None}, ("AKIADEFAULTPROFILE00", "us-east-1")),
], ids=["profile", "profile-and-region", "profile-and-login", "no-profile"])
def test_profile_name_takes_keys_and_region_from_the_workers_aws_files(s3_server, bucket, aws_files, monkeypatch,
                                                                      connection, signer):
    for name, text in _PROFILES.items():
        aws_files[name].write_text(text)
    with S3Proxy() as proxy:
        authorizations = _round_trip(_connection(monkeypatch, s3_server, proxy, **connection), bucket, proxy)
    assert _signers(authorizations) == {signer}
