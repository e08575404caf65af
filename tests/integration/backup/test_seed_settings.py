"""The seed connector's settings, each shown where the local S3 endpoint (or a proxy in front of it) can show it."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
import sqlite3
import uuid
from datetime import datetime
from itertools import pairwise
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo

import pytest
from confluent_kafka.admin import NewTopic

from airflow_kafka_backup.dag_factories import backup_dag
from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.storage.manifest import RunManifest, list_manifest_keys, load_manifests
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from devstack.s3_server import ACCESS_KEY, REGION, SECRET_KEY
from tests.helpers import create_topics, read_kafka, run_dag
from tests.s3_proxy import S3Proxy

pytestmark = pytest.mark.integration


def _conf(topics, bucket, **extra) -> dict:
    return {"topics": topics, "bucket": bucket, "prefix": "seed", "flush_size": 1000, **extra}


def _proxy_connection(monkeypatch, endpoint_url: str, proxy_url: str, **config_kwargs) -> str:
    conn_id = f"aws_proxy_{uuid.uuid4().hex[:6]}"
    extra = {"endpoint_url": endpoint_url, "region_name": REGION,
             "config_kwargs": {"proxies": {"http": proxy_url}, "s3": {"addressing_style": "path"}, **config_kwargs}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(
        {"conn_type": "aws", "login": ACCESS_KEY, "password": SECRET_KEY, "extra": extra}))
    return conn_id


def _is_object_request(url: str) -> bool:
    """``/bucket/key…`` (an object), not ``/bucket`` or ``/bucket?list-type=2`` (the bucket)."""
    path = urlsplit(url).path.strip("/")
    return "/" in path


def _everything_airflow_stored(env: dict) -> str:
    """XCom values and rendered template fields of every task so far, as one text."""
    db = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT value FROM xcom").fetchall()
        rows += conn.execute("SELECT rendered_fields FROM rendered_task_instance_fields").fetchall()
    return "\n".join(str(r[0]) for r in rows)


def test_sse_c_backup_through_a_proxy_restores_only_with_its_key(corpus, bucket, s3, airflow_stack, monkeypatch,
                                                                  capfd, caplog):
    from airflow.models.variable import Variable

    caplog.set_level("INFO")
    key = os.urandom(32)
    key_b64 = base64.b64encode(key).decode()
    key_md5 = base64.b64encode(hashlib.md5(key).digest()).decode()
    variable = f"sse_key_{uuid.uuid4().hex[:6]}"
    Variable.set(variable, key_b64)
    topic = corpus["tricky"][0]
    with S3Proxy() as proxy:
        proxy_password = f"pw-{uuid.uuid4().hex}"
        conn_id = _proxy_connection(monkeypatch, airflow_stack["endpoint_url"],
                                    f"http://backup-user:{proxy_password}@127.0.0.1:{proxy.port}")
        conf = _conf([topic], bucket, aws_conn_id=conn_id, sse_customer_key_variable=variable,
                     acl="bucket-owner-full-control")
        backup = run_dag("kafka_backup", conf)
        assert backup.state == "success"
        writes = [r for r in proxy.requests if r.method in ("PUT", "POST") and _is_object_request(r.url)]
        reads = [r for r in proxy.requests if r.method in ("GET", "HEAD") and _is_object_request(r.url)]
        deletes = [r for r in proxy.requests if r.method == "POST" and not _is_object_request(r.url)]

    # Every object written went out with SSE-C and the ACL, through the proxy with its credentials: the run's
    # working objects (plan, work units, segment lists) too, read back with the key, then deleted by the commit
    # in one DeleteObjects (a bucket request, which carries no SSE-C headers).
    assert writes and reads
    for name in ("/_runs/run=", "/plan.json", "/unit=00000.json", "/unit=00000-segments.json"):
        assert any(name in unquote(r.url) for r in writes) and any(name in unquote(r.url) for r in reads), name
    assert len(deletes) == 1 and urlsplit(deletes[0].url).query.startswith("delete"), [r.url for r in deletes]
    for request in writes:
        assert request.headers.get("x-amz-server-side-encryption-customer-algorithm") == "AES256", request.url
        assert request.headers.get("x-amz-server-side-encryption-customer-key-md5") == key_md5, request.url
        assert request.headers.get("x-amz-acl") == "bucket-owner-full-control", request.url
        assert request.headers["proxy-authorization"].startswith("Basic ")
    for request in reads:
        assert request.headers.get("x-amz-server-side-encryption-customer-key-md5") == key_md5, request.url

    store = S3ObjectStore(client=s3, bucket=bucket)
    (manifest_key,) = list_manifest_keys(store, "seed")
    manifest_text = store.get_bytes(manifest_key).decode()
    assert RunManifest.from_json(manifest_text.encode()).encryption["sse"] == "SSE-C"

    # Restore with the key: byte-exact. Without it, or with another key: a clear message, nothing produced.
    target = f"{topic}-ssec-{uuid.uuid4().hex[:4]}"
    restore_conf = {"topics": [topic], "bucket": bucket, "prefix": "seed", "topic_mapping": {topic: target},
                    "topic_configs": {"retention.ms": "-1"}}
    assert run_dag("kafka_restore", {**restore_conf, "sse_customer_key_variable": variable}).state == "success"
    source, restored = read_kafka(corpus["bootstrap"], [topic]), read_kafka(corpus["bootstrap"], [target])
    for (_, p), records in source.items():
        assert [(r.key, r.value, r.headers, r.timestamp) for r in restored[(target, p)]] == [
            (r.key, r.value, r.headers, r.timestamp) for r in records]

    from airflow_kafka_backup.operators.restore import KafkaRestorePlanOperator

    plan = KafkaRestorePlanOperator(task_id="plan", topics=[topic], bucket=bucket, prefix="seed",
                                    topic_mapping={topic: target + "x"})
    with pytest.raises(ConfigurationError, match="encrypted with a customer-provided key \\(SSE-C\\); give the same"):
        plan.execute({"run_id": "manual__no-key"})
    other = f"other_key_{uuid.uuid4().hex[:6]}"
    Variable.set(other, base64.b64encode(os.urandom(32)).decode())
    output = "".join(capfd.readouterr())  # the backup's and the first restore's logs
    wrong = run_dag("kafka_restore", {**restore_conf, "topic_mapping": {topic: target + "x"},
                                      "sse_customer_key_variable": other})
    assert wrong.state == "failed"
    wrong_output = "".join(capfd.readouterr())
    assert re.search("The SSE-C key given is not the key backup run .* was encrypted with", wrong_output)

    # The key and the proxy password appear in no log line, manifest, XCom or rendered template.
    output += wrong_output + "".join(capfd.readouterr()) + caplog.text
    assert "Committed seed/_manifests/" in output, "the backup's task logs were captured"
    stored = _everything_airflow_stored(airflow_stack["env"])
    manifests_and_maps = "".join(store.get_bytes(k).decode(errors="replace")
                                 for k in store.list_keys("seed/") if k.endswith(".json"))
    for secret in (key_b64, proxy_password, key.hex()):
        assert secret not in output and secret not in stored and secret not in manifests_and_maps


@pytest.mark.parametrize("sse", [{"sse_algorithm": "AES256"},
                                 {"sse_algorithm": "aws:kms", "sse_kms_key_id": "alias/kafka-backup"}])
def test_sse_s3_kms_and_acl_are_applied_to_every_object(corpus, bucket, s3, sse):
    topic = corpus["tricky"][1]
    assert run_dag("kafka_backup", _conf([topic], bucket, acl="public-read", **sse)).state == "success"
    objects = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert any("/_manifests/" in k for k in objects) and len(objects) > 3
    for key in objects:
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == sse["sse_algorithm"], key
        if "sse_kms_key_id" in sse:
            assert head["SSEKMSKeyId"].endswith(sse["sse_kms_key_id"]), key
        grants = s3.get_object_acl(Bucket=bucket, Key=key)["Grants"]
        assert any(g["Grantee"].get("URI", "").endswith("/AllUsers") and g["Permission"] == "READ" for g in grants)


def test_segments_larger_than_the_part_size_upload_as_multipart(airflow_stack, bucket, s3):
    topic = f"multipart-{uuid.uuid4().hex[:6]}"
    create_topics(airflow_stack["bootstrap"], NewTopic(topic, 1, 1))
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": airflow_stack["bootstrap"], "linger.ms": 20})
    block = os.urandom(1 << 20)
    for i in range(9_000):  # ~12 MB of base64 in one uncompressed segment
        producer.produce(topic, value=block[(i * 977) % (len(block) - 1024):][:1024])
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(30)
    conf = _conf([topic], bucket, flush_size=100_000, compression="none", segment_format="jsonl",
                 part_size=5 * 1024 * 1024)
    assert run_dag("kafka_backup", conf).state == "success"
    (segment,) = [o for o in s3.list_objects_v2(Bucket=bucket)["Contents"] if "/partition=" in o["Key"]]
    assert segment["Size"] > 10 * 1024 * 1024
    assert segment["ETag"].strip('"').endswith("-3"), "three parts of 5 MiB"
    store = S3ObjectStore(client=s3, bucket=bucket)
    (manifest,) = load_manifests(store, "seed")
    assert manifest.segments[0].records == 9_000


def test_retention_rule_is_added_beside_existing_rules(corpus, bucket, s3):
    foreign = {"ID": "keep-logs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": 30}}
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [foreign]})
    conf = _conf([corpus["tricky"][2]], bucket, retention_days=3)
    assert run_dag("kafka_backup", conf).state == "success"
    assert run_dag("kafka_backup", conf).state == "success"  # idempotent
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert set(rules) == {"keep-logs", "airflow-kafka-backup:seed"}
    assert rules["keep-logs"]["Expiration"] == {"Days": 30}
    assert rules["airflow-kafka-backup:seed"]["Expiration"] == {"Days": 3}
    assert rules["airflow-kafka-backup:seed"]["Filter"] == {"Prefix": "seed/"}
    assert "NoncurrentVersionExpiration" not in rules["airflow-kafka-backup:seed"]
    # On a versioned bucket expiry alone would leave every old version behind: the rule expires them too.
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert run_dag("kafka_backup", conf).state == "success"
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules["airflow-kafka-backup:seed"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}
    assert rules["keep-logs"]["Expiration"] == {"Days": 30}


def test_schedule_rotation_cuts_on_the_hour_in_zurich(corpus, bucket, s3):
    topic = corpus["tricky"][2]
    conf = _conf([topic], bucket, flush_size=100_000, rotate_schedule_interval_ms=3_600_000,
                 timezone="Europe/Zurich")
    assert run_dag("kafka_backup", conf).state == "success"
    zurich = ZoneInfo("Europe/Zurich")
    (manifest,) = load_manifests(S3ObjectStore(client=s3, bucket=bucket), "seed")
    per_partition: dict[int, int] = {}
    for seg in manifest.segments:
        first = datetime.fromtimestamp(seg.min_timestamp / 1000, zurich)
        last = datetime.fromtimestamp(seg.max_timestamp / 1000, zurich)
        assert (first.date(), first.hour) == (last.date(), last.hour), seg.key
        per_partition[seg.partition] = per_partition.get(seg.partition, 0) + 1
    assert all(n >= 2 for n in per_partition.values()), "the corpus spans an hour boundary"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"part_size": 1024}, "part_size must be between"),
    ({"retention_days": 0}, "retention_days must be at least 1"),
    ({"acl": "everyone"}, "acl must be a canned ACL"),
    ({"sse_algorithm": "aws:kms", "sse_customer_key_variable": "k"}, "cannot be combined"),
    ({"timezone": "Nowhere/City"}, "Unknown timezone"),
])
def test_conflicting_or_out_of_range_settings_fail_when_the_dag_is_parsed(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        backup_dag(f"bad_{uuid.uuid4().hex[:6]}", topics=["t"], bucket="b", **kwargs)


def test_malformed_proxy_url_fails_before_anything_is_written(corpus, bucket, s3, airflow_stack, monkeypatch):
    conn_id = _proxy_connection(monkeypatch, airflow_stack["endpoint_url"], "not a url")
    assert run_dag("kafka_backup", _conf([corpus["tricky"][0]], bucket, aws_conn_id=conn_id)).state == "failed"
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0

    from airflow_kafka_backup.operators.backup import KafkaBackupPlanOperator

    plan = KafkaBackupPlanOperator(task_id="plan", topics=[corpus["tricky"][0]], bucket=bucket, aws_conn_id=conn_id)
    with pytest.raises(ConfigurationError, match="proxy in connection .* must be an http"):
        plan.execute({"run_id": "manual__proxy"})


def test_zstd_segments_are_smaller_and_restore_byte_exact(corpus, bucket, s3):
    topic = corpus["tricky"][0]
    conf = _conf([topic], bucket, compression="zstd", compression_level=5, segment_format="jsonl")
    assert run_dag("kafka_backup", conf).state == "success"
    store = S3ObjectStore(client=s3, bucket=bucket)
    (manifest,) = load_manifests(store, "seed")
    assert all(s.key.endswith(".jsonl.zst") for s in manifest.segments)
    assert (manifest.settings.compression_level, manifest.settings.compression_library) == (5, None)
    target = f"{topic}-zstd-{uuid.uuid4().hex[:4]}"
    conf = {"topics": [topic], "bucket": bucket, "prefix": "seed", "topic_mapping": {topic: target},
            "topic_configs": {"retention.ms": "-1"}}
    assert run_dag("kafka_restore", conf).state == "success"
    source, restored = read_kafka(corpus["bootstrap"], [topic]), read_kafka(corpus["bootstrap"], [target])
    for (_, p), records in source.items():
        assert [(r.key, r.value, r.headers) for r in restored[(target, p)]] == [
            (r.key, r.value, r.headers) for r in records]


@pytest.mark.parametrize(("segment_format", "compression", "ending"),
                         [("avro", "zstd", ".avro"), ("msgpack", "gzip", ".msgpack.gz")])
def test_binary_segment_formats_restore_byte_exact(corpus, bucket, s3, segment_format, compression, ending):
    topic = corpus["tricky"][1]
    conf = _conf([topic], bucket, segment_format=segment_format, compression=compression)
    assert run_dag("kafka_backup", conf).state == "success"
    store = S3ObjectStore(client=s3, bucket=bucket)
    (manifest,) = load_manifests(store, "seed")
    assert manifest.segments and all(s.key.endswith(ending) for s in manifest.segments)
    if compression == "gzip":  # ISA-L's gzip, recorded, and plain gzip to any reader
        assert (manifest.settings.compression_level, manifest.settings.compression_library) == (1, "isal")
        data = gzip.decompress(store.get_bytes(manifest.segments[0].key))
        assert data.startswith(b"\x82") and b"airflow-kafka-backup/msgpack" in data[:64]
    target = f"{topic}-{segment_format}-{uuid.uuid4().hex[:4]}"
    conf = {"topics": [topic], "bucket": bucket, "prefix": "seed", "topic_mapping": {topic: target},
            "topic_configs": {"retention.ms": "-1"}}
    assert run_dag("kafka_restore", conf).state == "success"
    source, restored = read_kafka(corpus["bootstrap"], [topic]), read_kafka(corpus["bootstrap"], [target])
    for (_, p), records in source.items():
        assert [(r.key, r.value, r.headers, r.timestamp) for r in restored[(target, p)]] == [
            (r.key, r.value, r.headers, r.timestamp) for r in records]


@pytest.mark.parametrize("expect_continue", [True, False])
def test_expect_continue_and_path_style_addressing_seen_by_the_proxy(corpus, bucket, airflow_stack, monkeypatch,
                                                                      expect_continue):
    with S3Proxy() as proxy:
        conn_id = _proxy_connection(monkeypatch, airflow_stack["endpoint_url"], f"http://127.0.0.1:{proxy.port}")
        conf = _conf([corpus["tricky"][2]], bucket, aws_conn_id=conn_id, expect_continue=expect_continue)
        assert run_dag("kafka_backup", conf).state == "success"
    uploads = [r for r in proxy.requests if r.method == "PUT" and "/partition" in r.url]  # "=" is sent as %3D
    assert uploads
    assert all((r.headers.get("expect") == "100-continue") is expect_continue for r in uploads)
    # Path-style: the bucket is the first path segment, never a host name.
    assert all(urlsplit(r.url).path.startswith(f"/{bucket}") for r in proxy.requests)


def _is_manifest_put(method: str, url: str) -> bool:
    return method == "PUT" and "/_manifests/" in url


@pytest.mark.parametrize(("fault", "base_ms", "failures"), [
    ("500", 250, 3),  # botocore's own base for a 500 is 50 ms: its first wait would be <= 50 ms, not 250
    ("503", 1, 5),    # SlowDown is throttling, botocore's base 1 s: its waits would be up to 1, 2, 4, 8, 16 s
])
def test_s3_retry_backoff_ms_is_the_base_of_the_waits_between_retries(corpus, bucket, airflow_stack, monkeypatch,
                                                                       fault, base_ms, failures):
    from airflow_kafka_backup.engine.storage import s3_retry

    monkeypatch.setattr(s3_retry, "jitter", lambda: 1.0)  # the top of every full-jitter draw: exact waits
    topic = corpus["tricky"][2]
    # The commit's manifest upload fails `failures` times, then S3 answers; nothing else fails.
    with S3Proxy(share=1.0, faults=(fault,), only=_is_manifest_put, limit=failures) as proxy:
        conn_id = _proxy_connection(monkeypatch, airflow_stack["endpoint_url"], proxy.url,
                                    retries={"mode": "standard", "max_attempts": failures})  # retries, not attempts
        conf = _conf([topic], bucket, aws_conn_id=conn_id, s3_retry_backoff_ms=base_ms)
        assert run_dag("kafka_backup", conf).state == "success"
    attempts = [r for r in proxy.requests if _is_manifest_put(r.method, r.url)]
    assert [r.fault for r in attempts] == [fault] * failures + [None], "the connection's retries were all used"
    gaps = [later.at - earlier.at for earlier, later in pairwise(attempts)]
    waits = [base_ms / 1000 * 2 ** k for k in range(failures)]  # base * 2**(retry-1)
    slack = 0.4  # the failed answer, botocore's handling and the next request (~50 ms here), on a busy machine
    assert all(wait <= gap < wait + slack for gap, wait in zip(gaps, waits, strict=True)), (gaps, waits)


def test_sasl_password_never_reaches_logs_xcom_templates_or_s3(corpus, bucket, s3, airflow_stack, monkeypatch,
                                                                capfd, caplog):
    from devstack.kafka_broker import SASL_PASSWORD, SASL_USER

    if not airflow_stack["sasl_bootstrap"]:
        pytest.skip("KAFKA_BOOTSTRAP points at an external broker without the test SASL listener")
    caplog.set_level("INFO")
    extra = {"bootstrap.servers": airflow_stack["sasl_bootstrap"], "security.protocol": "SASL_PLAINTEXT",
             "sasl.mechanism": "PLAIN", "sasl.username": SASL_USER, "sasl.password": SASL_PASSWORD,
             "group.id": "airflow-kafka-backup"}
    monkeypatch.setenv("AIRFLOW_CONN_KAFKA_SASL", json.dumps({"conn_type": "kafka", "extra": extra}))
    topic = corpus["tricky"][1]
    assert run_dag("kafka_backup", _conf([topic], bucket, kafka_conn_id="kafka_sasl")).state == "success"
    target = f"{topic}-sasl-{uuid.uuid4().hex[:4]}"
    conf = {"topics": [topic], "bucket": bucket, "prefix": "seed", "topic_mapping": {topic: target},
            "topic_configs": {"retention.ms": "-1"}, "kafka_conn_id": "kafka_sasl"}
    assert run_dag("kafka_restore", conf).state == "success"
    assert len(read_kafka(corpus["bootstrap"], [target])[(target, 0)]) > 0

    output = "".join(capfd.readouterr()) + caplog.text
    assert "Committed seed/_manifests/" in output
    everything_in_s3 = "".join(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read().decode(errors="replace")
                               for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    for place, text in [("logs", output), ("XCom and rendered templates", _everything_airflow_stored(
            airflow_stack["env"])), ("S3 objects", everything_in_s3)]:
        assert SASL_PASSWORD not in text, f"the SASL password leaked into {place}"
