"""The documented Schema Registry recipe (docs/schema-registry.md), on real brokers: a registry's ``_schemas``
topic backed up, then restored into a brand-new cluster before any registry starts there.

A Confluent-compatible registry keeps every schema, with its ID, as a record of the compacted ``_schemas``
topic: the key names the subject and version, the value holds the schema and its ID, and a deleted
subject leaves a null-valued tombstone. The registry itself is not on this machine's package registries,
so the test writes the records as the registry writes them, and checks what the registry would read back:
every key and value byte for byte, tombstones still null, in the same order, in a compacted topic.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from tests.helpers import create_topics, read_kafka, run_dag

pytestmark = pytest.mark.integration


def _registry_records() -> list[tuple[bytes, bytes | None]]:
    """What a registry writes: schemas, a NOOP marker, a soft delete, and a tombstone of a hard delete."""
    def key(keytype: str, **fields) -> bytes:
        return json.dumps({"keytype": keytype, **fields, "magic": 1 if keytype != "NOOP" else 0},
                          separators=(",", ":")).encode()

    schema = {"type": "record", "name": "Order", "fields": [{"name": "id", "type": "long"}]}
    records: list[tuple[bytes, bytes | None]] = [(key("NOOP"), None)]
    for n, subject in enumerate(["orders-value", "payments-value", "audit-value"], start=1):
        value = {"subject": subject, "version": 1, "id": 100 + n, "schema": json.dumps(schema), "deleted": False}
        records.append((key("SCHEMA", subject=subject, version=1), json.dumps(value).encode()))
    records.append((key("CONFIG", subject=None), json.dumps({"compatibilityLevel": "BACKWARD"}).encode()))
    records.append((key("SCHEMA", subject="audit-value", version=1), None))  # hard delete: a tombstone
    return records


def test_schemas_topic_round_trips_into_a_fresh_cluster(airflow_stack, bucket, monkeypatch):
    from devstack.kafka_broker import start_broker

    if os.environ.get("KAFKA_BOOTSTRAP"):
        pytest.fail("KAFKA_BOOTSTRAP points at an external broker; this test starts a second broker of its own")
    bootstrap = airflow_stack["bootstrap"]
    topic = "_schemas"  # the registry's default kafkastore.topic
    create_topics(bootstrap, NewTopic(topic, 1, 1, config={"cleanup.policy": "compact"}))
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for k, v in _registry_records():
        producer.produce(topic, key=k, value=v, partition=0)
    assert producer.flush(30) == 0
    source = read_kafka(bootstrap, [topic])[(topic, 0)]
    prefix = f"registry-{uuid.uuid4().hex[:6]}"
    backup = {"topics": [topic], "bucket": bucket, "prefix": prefix}
    assert run_dag("kafka_backup", backup).state == "success"

    fresh = start_broker()
    try:
        extra = {"bootstrap.servers": fresh.bootstrap, "group.id": "airflow-kafka-backup"}
        monkeypatch.setenv("AIRFLOW_CONN_KAFKA_NEW_DC", json.dumps({"conn_type": "kafka", "extra": extra}))
        restore = {"topics": [topic], "bucket": bucket, "prefix": prefix, "kafka_conn_id": "kafka_new_dc"}
        assert run_dag("kafka_restore", restore).state == "success"
        restored = read_kafka(fresh.bootstrap, [topic])[(topic, 0)]
        assert [(r.key, r.value) for r in restored] == [(r.key, r.value) for r in source]
        assert sum(r.value is None for r in restored) == 2  # the NOOP marker and the tombstone stay null
        admin = AdminClient({"bootstrap.servers": fresh.bootstrap})
        configs = admin.describe_configs([ConfigResource("topic", topic)])
        (described,) = configs.values()
        assert described.result()["cleanup.policy"].value == "compact"  # recreated as the registry needs it
    finally:
        fresh.stop()
