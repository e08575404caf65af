"""Manual and backfill runs: re-back-up a window still in Kafka with the scheduled runs' keys and bytes."""

from __future__ import annotations

import json
import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

from airflow_kafka_backup.engine.storage.manifest import RunManifest, list_manifest_keys
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from airflow_kafka_backup.operators.backup import checkpoint_variable_key
from tests.helpers import create_topics, read_backup, read_kafka, run_dag, snapshot_bucket

pytestmark = pytest.mark.integration

BASE_TS = 1_700_000_000_000


def _produce(bootstrap: str, topic: str, start: int, count: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(start, start + count):
        producer.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), timestamp=BASE_TS + i * 1000)
    producer.flush(30)


def test_manual_ranges_rewrite_the_same_keys_and_bytes_and_leave_the_checkpoint(airflow_stack, bucket, s3):
    from airflow.models.variable import Variable

    bootstrap = airflow_stack["bootstrap"]
    topic = f"manual-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, NewTopic(topic, 1, 1, config={"retention.ms": "-1"}))
    base = {"topics": [topic], "bucket": bucket, "prefix": "mr", "flush_size": 300}
    _produce(bootstrap, topic, 0, 1000)
    assert run_dag("kafka_backup", base).state == "success"
    _produce(bootstrap, topic, 1000, 500)
    assert run_dag("kafka_backup", base).state == "success"
    checkpoint = Variable.get(checkpoint_variable_key(bucket, "mr"))
    before = {k: v for k, v in snapshot_bucket(s3, bucket).items() if "/partition=" in k}

    # Offsets 350..1099 lie inside committed segments 300-599, 600-899, 900-999 (run 1) and 1000-1299 (run 2).
    manual = {**base, "ranges": {topic: {"0": [350, 1100]}}, "flush_size": 77}  # flush_size is ignored: rebuilt
    assert run_dag("kafka_backup", manual).state == "success"
    # A time window, and a range past the checkpoint (clamped to it).
    window = {**base, "from_timestamp": BASE_TS + 10_000, "until_timestamp": BASE_TS + 650_000}
    assert run_dag("kafka_backup", window).state == "success"
    beyond = {**base, "ranges": {topic: {"0": [1400, 5000]}}}
    assert run_dag("kafka_backup", beyond).state == "success"

    after = {k: v for k, v in snapshot_bucket(s3, bucket).items() if "/partition=" in k}
    assert after == before, "manual runs rewrote exactly the committed segments, byte for byte"
    now = json.loads(Variable.get(checkpoint_variable_key(bucket, "mr")))
    assert now["checkpoints"] == json.loads(checkpoint)["checkpoints"], "manual runs never move the checkpoint"
    store = S3ObjectStore(client=s3, bucket=bucket)
    manifests = [RunManifest.from_json(store.get_bytes(k)) for k in list_manifest_keys(store, "mr")]
    spans = sorted((r.start, r.end) for m in manifests for r in m.ranges)
    assert spans == [(0, 900), (0, 1000), (300, 1300), (1000, 1500), (1300, 1500)]

    # The backup holds each record once (segments named by several manifests are the same objects).
    assert read_backup(store, "mr")[(topic, 0)] == read_kafka(bootstrap, [topic])[(topic, 0)]
    target = f"{topic}-restored"
    conf = {"topics": [topic], "bucket": bucket, "prefix": "mr", "topic_mapping": {topic: target},
            "topic_configs": {"retention.ms": "-1"}}
    assert run_dag("kafka_restore", conf).state == "success"
    restored = read_kafka(bootstrap, [target])[(target, 0)]
    assert [(r.key, r.value) for r in restored] == [(f"k{i}".encode(), f"v{i}".encode()) for i in range(1500)]
