"""One writer per prefix: the S3 lock (real HTTP to the moto server) and the DAG refusing a second writer."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka.admin import NewTopic

from airflow_kafka_backup.engine.storage.key_layout import lock_key
from airflow_kafka_backup.engine.storage.manifest import list_manifest_keys
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from airflow_kafka_backup.engine.storage.writer_lock import ConcurrentRunError, acquire, generation
from tests.helpers import create_topics, produce_tricky, run_dag

pytestmark = pytest.mark.integration


def test_lock_is_exclusive_reentrant_and_expires(bucket, s3):
    store = S3ObjectStore(client=s3, bucket=bucket)
    gen = generation([])
    assert acquire(store, "p", gen, "run-a", now=1000.0) == "acquired"
    assert acquire(store, "p", gen, "run-a", now=1001.0) == "held"
    with pytest.raises(ConcurrentRunError, match="Run 'run-a' has been backing up to .* this run \\('run-b'\\)"):
        acquire(store, "p", gen, "run-b", lease_s=60, now=1030.0)
    assert acquire(store, "p", gen, "run-b", lease_s=60, now=1061.0) == "taken over"
    assert acquire(store, "p", gen, "run-c", force=True, now=1062.0) == "taken over"
    assert acquire(store, "p", generation(["p/_manifests/run=x.json"]), "run-d", now=1063.0) == "acquired"


def test_a_second_writer_is_refused_before_writing_anything(airflow_stack, bucket, s3):
    topic = f"lock-{uuid.uuid4().hex[:6]}"
    create_topics(airflow_stack["bootstrap"], NewTopic(topic, 1, 1, config={"retention.ms": "-1"}))
    produce_tricky(airflow_stack["bootstrap"], topic, 1, 40, seed=4)
    store = S3ObjectStore(client=s3, bucket=bucket)
    # A run that is still in flight on the current generation (nothing committed yet).
    acquire(store, "kafka-backup", generation(list_manifest_keys(store, "kafka-backup")), "manual__in-flight")

    conf = {"topics": [topic], "bucket": bucket}
    assert run_dag("kafka_backup", conf).state == "failed"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == [lock_key("kafka-backup", generation([]))], "nothing but the other run's lock"

    assert run_dag("kafka_backup", {**conf, "force_unlock": True}).state == "success"
    assert len(list_manifest_keys(store, "kafka-backup")) == 1


def test_a_lock_whose_holder_airflow_says_is_finished_is_taken_over_at_once(bucket, s3):
    store = S3ObjectStore(client=s3, bucket=bucket)
    gen = generation([])
    assert acquire(store, "p", gen, "run-a", now=1000.0, dag_id="d", airflow_id="A") == "acquired"
    asked = []

    def finished(holder):
        asked.append((holder.dag_id, holder.run_id, holder.airflow_id))
        return None  # still running

    with pytest.raises(ConcurrentRunError):
        acquire(store, "p", gen, "run-b", now=1001.0, dag_id="d", airflow_id="A", holder_finished=finished)
    assert asked == [("d", "run-a", "A")]
    how = acquire(store, "p", gen, "run-b", now=1002.0, dag_id="d", airflow_id="A",
                  holder_finished=lambda holder: "failed")
    assert how.startswith("taken over from run 'run-a' of DAG d") and how.endswith("(its state: failed)")
    # The same run id under another DAG sharing the prefix is another writer, not the holder.
    with pytest.raises(ConcurrentRunError):
        acquire(store, "p", gen, "run-b", now=1003.0, dag_id="other", airflow_id="A")
    assert acquire(store, "p", gen, "run-b", now=1004.0, dag_id="d", airflow_id="A") == "held"
