"""The edge-case corpus through backup and restore at default settings, against the real broker and S3 endpoint.

Records of 5 and 10 MB (the source topic allows 12 MB), 1,000 headers on one record, a header
name given as non-UTF-8 bytes, on a topic whose name is 249 characters of dots, underscores,
dashes, digits and letters. Everything comes back byte for byte, or is refused before
anything is written, with a message naming what to change.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType

from airflow_kafka_backup.engine.errors import RecordTooLargeError
from airflow_kafka_backup.engine.record_size import PRODUCER_HEADROOM_BYTES
from airflow_kafka_backup.engine.records import record_bytes
from airflow_kafka_backup.engine.restore.loop import progress_group, restore_partition, transactional_id
from airflow_kafka_backup.engine.restore.planning import RestoreSettings, plan_restore
from airflow_kafka_backup.engine.storage.key_layout import restore_prefix
from airflow_kafka_backup.engine.storage.manifest import list_manifest_keys, load_manifests
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from tests.helpers import (
    MB,
    create_topics,
    edge_records,
    edge_topic_name,
    produce_records,
    read_backup,
    read_kafka,
    run_dag,
)

pytestmark = pytest.mark.integration

KEEP_FOREVER = {"retention.ms": "-1"}  # the corpus has 2020 timestamps
TOPIC_MAX = str(12 * MB)


def _fields(record):
    return (record.partition, record.key, record.value, record.headers, record.timestamp, record.timestamp_type)


def _topic_config(bootstrap: str, topic: str, name: str) -> str:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until its future resolves
    entries = admin.describe_configs([resource])[resource].result()
    return entries[name].value


def _set_topic_config(bootstrap: str, topic: str, name: str, value: str | None) -> None:
    """Set ``name`` on ``topic``, or (None) remove the topic's own value."""
    op = AlterConfigOpType.DELETE if value is None else AlterConfigOpType.SET
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry(name, value or "", incremental_operation=op)])
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until its futures resolve
    for future in admin.incremental_alter_configs([resource]).values():
        future.result()


@pytest.fixture(scope="module")
def edge(airflow_stack, s3_server):
    """The edge corpus in a 249-character topic, backed up at default settings under ``bk`` in a bucket of its own.

    The source topic takes 12 MB records while they are produced; its ``max.message.bytes`` is
    then put back to the broker's default (1 MB) before the backup, so the backup records no
    topic config that would let a restored topic take them: the restore must size it from the
    records themselves.
    """
    bootstrap = airflow_stack["bootstrap"]
    topic = edge_topic_name(f"edge.{uuid.uuid4().hex[:6]}")
    create_topics(bootstrap, NewTopic(topic, 1, 1, config={**KEEP_FOREVER, "max.message.bytes": TOPIC_MAX}))
    produce_records(bootstrap, topic, edge_records(seed=7))
    _set_topic_config(bootstrap, topic, "max.message.bytes", None)
    assert _topic_config(bootstrap, topic, "max.message.bytes") == "1048588"  # the broker's default
    bucket = f"edge-{uuid.uuid4().hex[:8]}"
    s3_server.client().create_bucket(Bucket=bucket)
    started = time.monotonic()
    conf = {"topics": [topic], "bucket": bucket, "prefix": "bk"}  # the shipped defaults (msgpack + zstd)
    assert run_dag("kafka_backup", conf).state == "success"
    print(f"\nbackup of the edge corpus (15 MB of records): {time.monotonic() - started:.1f}s")
    source = read_kafka(bootstrap, [topic])[(topic, 0)]
    return {"bootstrap": bootstrap, "topic": topic, "bucket": bucket, "source": source,
            "store": S3ObjectStore(client=s3_server.client(), bucket=bucket)}


def test_the_corpus_is_what_the_edge_cases_need(edge):
    source = edge["source"]
    assert len(edge["topic"]) == 249 and set(".-_") <= set(edge["topic"])
    sizes = sorted(len(r.value or b"") for r in source)
    assert sizes[-2:] == [5 * MB, 10 * MB]
    assert max(len(r.headers) for r in source) == 1000
    # confluent-kafka does not let a header name be anything but text: bytes are turned into their repr.
    (named,) = [r for r in source if r.key == b"bytes-name"]
    assert named.headers == [("b'\\xff\\xfe'", b"v")]


def test_the_backup_holds_every_record_byte_for_byte_and_records_the_largest(edge):
    backup = read_backup(edge["store"], "bk")[(edge["topic"], 0)]
    assert [_fields(r) for r in backup] == [_fields(r) for r in edge["source"]]
    (manifest,) = load_manifests(edge["store"], "bk")
    largest = max(record_bytes(r.key, r.value, r.headers) for r in edge["source"])
    assert largest == 10 * MB + len(b"ten")
    assert [s.max_record_bytes for s in manifest.segments] == [largest]


def test_the_restore_at_default_settings_is_byte_exact_and_creates_a_topic_that_takes_the_records(edge):
    bootstrap, topic = edge["bootstrap"], edge["topic"]
    target = edge_topic_name(f"made.{uuid.uuid4().hex[:6]}")
    conf = {"topics": [topic], "bucket": edge["bucket"], "prefix": "bk", "topic_mapping": {topic: target},
            "topic_configs": KEEP_FOREVER}
    started = time.monotonic()
    assert run_dag("kafka_restore", conf).state == "success"
    print(f"\nrestore of the edge corpus into a new topic: {time.monotonic() - started:.1f}s")
    restored = read_kafka(bootstrap, [target])[(target, 0)]
    assert [_fields(r) for r in restored] == [_fields(r) for r in edge["source"]]
    largest = 10 * MB + len(b"ten")
    assert _topic_config(bootstrap, target, "max.message.bytes") == str(largest + PRODUCER_HEADROOM_BYTES)


def test_an_existing_target_too_small_for_the_records_is_refused_before_anything_is_written(edge, capfd, caplog):
    bootstrap, topic = edge["bootstrap"], edge["topic"]
    target = f"small-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, NewTopic(target, 1, 1, config={**KEEP_FOREVER, "max.message.bytes": str(6 * MB)}))
    conf = {"topics": [topic], "bucket": edge["bucket"], "prefix": "bk", "topic_mapping": {topic: target}}
    assert run_dag("kafka_restore", conf).state == "failed"
    largest = 10 * MB + len(b"ten")
    output = "".join(capfd.readouterr()) + caplog.text
    assert (f"Cannot restore: the largest record to restore into {target} is {largest} bytes (key + value + "
            f"headers), more than its max.message.bytes={6 * MB}") in output
    assert f"--add-config max.message.bytes={largest + PRODUCER_HEADROOM_BYTES}" in output
    assert read_kafka(bootstrap, [target])[(target, 0)] == []
    # Raised as the message says, the same restore goes through.
    _set_topic_config(bootstrap, target, "max.message.bytes", str(largest + PRODUCER_HEADROOM_BYTES))
    assert run_dag("kafka_restore", conf).state == "success"
    restored = read_kafka(bootstrap, [target])[(target, 0)]
    assert [_fields(r) for r in restored] == [_fields(r) for r in edge["source"]]


def _restore_directly(bootstrap: str, store: S3ObjectStore, topic: str, target: str, restore_id: str,
                      producer_config: dict):
    """The restore engine on the one partition, with a producer built from ``producer_config``."""
    from confluent_kafka import Producer

    from airflow_kafka_backup.engine.restore.loop import PRODUCER_OVERRIDES

    settings = RestoreSettings.create(topics=[topic], topic_mapping={topic: target})
    (unit,) = plan_restore(store, "bk", settings).partitions
    config = {"bootstrap.servers": bootstrap, **PRODUCER_OVERRIDES, **producer_config,
              "transactional.id": transactional_id(restore_id, target, 0)}
    group = Consumer({"bootstrap.servers": bootstrap, "group.id": progress_group(restore_id)})
    try:
        return restore_partition(lambda: Producer(config), group, store, restore_prefix("bk", restore_id), unit)
    finally:
        group.close()


def test_a_record_the_broker_refuses_names_its_source_offset_and_the_topic_config(edge):
    """The plan's check skipped (the target shrank after it, say): the broker refuses the 5 MB record."""
    bootstrap, topic = edge["bootstrap"], edge["topic"]
    target = f"shrunk-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, NewTopic(target, 1, 1, config=KEEP_FOREVER))
    five = next(r for r in edge["source"] if r.key == b"five")
    with pytest.raises(RecordTooLargeError) as raised:
        _restore_directly(bootstrap, edge["store"], topic, target, f"shrunk/{target}",
                          {"message.max.bytes": 16 * MB})
    size = 5 * MB + len(b"five") + len(b"size") + len(b"5MB")
    assert str(raised.value).startswith(f"{topic}[0] offset {five.offset} (in ")
    assert f"is {size} bytes (key + value + headers), and the broker refused it as too large for {target}" in str(
        raised.value)
    assert f"--entity-name {target} --add-config max.message.bytes={size + PRODUCER_HEADROOM_BYTES}" in str(
        raised.value)
    assert read_kafka(bootstrap, [target])[(target, 0)] == []  # the transaction was aborted


def test_an_older_backup_without_record_sizes_still_restores_or_names_the_producer_setting(edge, s3_server):
    """Manifests written before record sizes were recorded: the producer keeps its configured limit, a record
    above it is named with the setting, and with that setting in the connection the restore goes through."""
    bootstrap, topic, client = edge["bootstrap"], edge["topic"], s3_server.client()
    old_bucket = f"edge-old-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=old_bucket)
    for key in edge["store"].list_keys("bk/"):
        body = client.get_object(Bucket=edge["bucket"], Key=key)["Body"].read()
        if key in list_manifest_keys(edge["store"], "bk"):
            manifest = json.loads(body)
            for segment in manifest["segments"]:
                del segment["max_record_bytes"]
            body = json.dumps(manifest, sort_keys=True, indent=1).encode() + b"\n"
        client.put_object(Bucket=old_bucket, Key=key, Body=body)
    store = S3ObjectStore(client=client, bucket=old_bucket)
    (unit,) = plan_restore(store, "bk", RestoreSettings.create(topics=[topic])).partitions
    assert unit.largest_record_bytes() is None

    target = f"old-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, NewTopic(target, 1, 1, config={**KEEP_FOREVER, "max.message.bytes": TOPIC_MAX}))
    five = next(r for r in edge["source"] if r.key == b"five")
    with pytest.raises(RecordTooLargeError) as raised:
        _restore_directly(bootstrap, store, topic, target, f"old/{target}", {})  # librdkafka's 1 MB
    assert str(raised.value).startswith(f"{topic}[0] offset {five.offset} (in ")
    assert "more than the restore producer's message.max.bytes allows" in str(raised.value)
    assert '"message.max.bytes": ' in str(raised.value) and "kafka connection's extra" in str(raised.value)
    result = _restore_directly(bootstrap, store, topic, target, f"old-again/{target}",
                               {"message.max.bytes": 11 * MB})
    assert result.records_restored == len(edge["source"])
    restored = read_kafka(bootstrap, [target])[(target, 0)]
    assert [_fields(r) for r in restored] == [_fields(r) for r in edge["source"]]


def test_a_backup_with_fetch_limits_smaller_than_one_record(edge, monkeypatch):
    """A connection whose fetch.max.bytes and max.partition.fetch.bytes are 1,000 bytes still backs up the
    10 MB record: the broker returns a batch larger than the limits when it is the first one."""
    bootstrap, topic = edge["bootstrap"], edge["topic"]
    extra = {"bootstrap.servers": bootstrap, "fetch.max.bytes": 1000, "max.partition.fetch.bytes": 1000}
    monkeypatch.setenv("AIRFLOW_CONN_KAFKA_SMALL_FETCH", json.dumps({"conn_type": "kafka", "extra": extra}))
    conf = {"topics": [topic], "bucket": edge["bucket"], "prefix": "small-fetch", "kafka_conn_id": "kafka_small_fetch"}
    assert run_dag("kafka_backup", conf).state == "success"
    backup = read_backup(edge["store"], "small-fetch")[(topic, 0)]
    assert [_fields(r) for r in backup] == [_fields(r) for r in edge["source"]]
