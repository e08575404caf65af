"""Parted manifests (format 3) against the moto server, the real broker and a real Airflow DB.

``PART_RANGES`` is lowered so a run of a few partitions is parted (``dag.test()`` runs the tasks in this
process); benchmarks/scale.py commits real ones at 5,000 and 10,000 partitions.
"""

from __future__ import annotations

import json
import uuid

import pytest
from confluent_kafka.admin import NewTopic

from airflow_kafka_backup.engine.coverage import read_coverage
from airflow_kafka_backup.engine.storage import manifest as manifest_module
from airflow_kafka_backup.engine.storage.key_layout import manifests_prefix
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from airflow_kafka_backup.engine.verify import verify_backup
from tests.helpers import S3Requests, create_topics, produce_tricky, read_backup, read_kafka, run_dag

pytestmark = pytest.mark.integration

KEEP_FOREVER = {"retention.ms": "-1"}
PREFIX = "parted"


def _fields(record):
    return (record.partition, record.key, record.value, record.headers, record.timestamp, record.timestamp_type)


def test_a_parted_run_is_exact_verified_and_restored_one_topic_from_its_own_parts(airflow_stack, bucket, s3,
                                                                                monkeypatch):
    monkeypatch.setattr(manifest_module, "PART_RANGES", 2)
    bootstrap = airflow_stack["bootstrap"]
    topics = [f"parted-{name}-{uuid.uuid4().hex[:6]}" for name in "abc"]
    create_topics(bootstrap, *(NewTopic(t, 2, 1, config=KEEP_FOREVER) for t in topics))
    store = S3ObjectStore(client=s3, bucket=bucket)
    for run in range(2):
        for n, topic in enumerate(topics):
            produce_tricky(bootstrap, topic, 2, 60, seed=10 * run + n, start=60 * run)
        conf = {"topics": topics, "bucket": bucket, "prefix": PREFIX, "flush_size": 25}
        assert run_dag("kafka_backup", conf).state == "success"

    manifests = sorted(k for k in store.list_keys(manifests_prefix(PREFIX)))
    assert len(manifests) == 2
    for key in manifests:
        index = json.loads(store.get_bytes(key))
        assert index["format_version"] == 3 and "segments" not in index
        assert [p["topics"] for p in index["parts"]] == [{t: 2} for t in sorted(topics)]
    assert read_backup(store, PREFIX) == read_kafka(bootstrap, topics)
    report = verify_backup(store, PREFIX)
    assert report.ok and report.manifests == 2, report.problems
    assert set(read_coverage(store, PREFIX).topics) == set(topics)

    # A restore of one topic reads its parts of each run's manifest, and no other part.
    restored, target = topics[1], f"{topics[1]}-restored"
    requests = S3Requests(monkeypatch)
    calls = requests.during(lambda: _restore(bucket, restored, target))
    parts_read = {key for operation, _, key in calls if operation == "GetObject" and "/_manifest_parts/" in key}
    wanted = {p["key"] for key in manifests for p in json.loads(store.get_bytes(key))["parts"]
              if list(p["topics"]) == [restored]}
    assert parts_read == wanted, parts_read
    source, landed = read_kafka(bootstrap, [restored]), read_kafka(bootstrap, [target])
    for partition in range(2):
        assert [_fields(r) for r in landed[(target, partition)]] == [_fields(r) for r in source[(restored, partition)]]


def _restore(bucket: str, topic: str, target: str) -> None:
    conf = {"topics": [topic], "bucket": bucket, "prefix": PREFIX, "topic_mapping": {topic: target},
            "topic_configs": KEEP_FOREVER}
    assert run_dag("kafka_restore", conf).state == "success"
