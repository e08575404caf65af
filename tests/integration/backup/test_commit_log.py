"""The commit log against the moto server, the real broker and a real Airflow DB: a plan's S3 requests do not
grow with the past runs, and a commit that died after its log entry, or a lost Variable, loses nothing."""

from __future__ import annotations

import json
import uuid
from collections import Counter

import pytest
from confluent_kafka.admin import NewTopic

from airflow_kafka_backup.engine.storage.commit_log import read_commit, record_commit
from airflow_kafka_backup.engine.storage.key_layout import commits_prefix, manifest_key, manifests_prefix
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from airflow_kafka_backup.operators.backup import checkpoint_variable_key
from tests.helpers import S3Requests, create_topics, produce_tricky, read_backup, read_kafka, run_dag

pytestmark = pytest.mark.integration

PREFIX = "log"


def _backup(bucket: str, topic: str) -> None:
    run = run_dag("kafka_backup", {"topics": [topic], "bucket": bucket, "prefix": PREFIX})
    assert run.state == "success"


def _topic(bootstrap: str) -> str:
    topic = f"log-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, NewTopic(topic, 1, 1, config={"retention.ms": "-1"}))
    return topic


def _variable(bucket: str) -> dict | None:
    from airflow.models.variable import Variable

    value = Variable.get(checkpoint_variable_key(bucket, PREFIX), default_var=None)
    return None if value is None else json.loads(value)


def test_a_plan_lists_no_manifest_whatever_the_number_of_past_runs(airflow_stack, bucket, s3, monkeypatch):
    bootstrap = airflow_stack["bootstrap"]
    topic = _topic(bootstrap)
    requests = S3Requests(monkeypatch)
    runs = []
    for n in range(3):
        produce_tricky(bootstrap, topic, 1, 40, seed=n, start=40 * n)
        runs.append(requests.during(lambda: _backup(bucket, topic)))
        if n == 1:
            # 1,100 past runs' worth of manifest keys (two LIST pages), not even JSON: a plan that lists or reads
            # them fails or pays for them.
            for i in range(1100):
                s3.put_object(Bucket=bucket, Key=f"{manifests_prefix(PREFIX)}run=0-past-{i:05d}.json", Body=b"x")

    for calls in runs[1:]:
        assert not [c for c in calls if c[0] == "ListObjectsV2" and c[1] == manifests_prefix(PREFIX)], calls
        log_reads = Counter(key for operation, _, key in calls
                            if operation == "GetObject" and (key or "").startswith(commits_prefix(PREFIX)))
        assert sum(log_reads.values()) == 2, log_reads  # the entry the Variable saw, and the absent next one
    assert Counter(c[0] for c in runs[1]) == Counter(c[0] for c in runs[2]), "requests grew with the past runs"

    store = S3ObjectStore(client=s3, bucket=bucket)
    for seq in (1, 2, 3):  # each entry names a run whose manifest is there
        entry = read_commit(store, PREFIX, seq)
        assert json.loads(store.get_bytes(entry.manifest))["run_id"] == entry.run_id
    assert read_commit(store, PREFIX, 4) is None
    assert _variable(bucket)["commit"]["seq"] == 3
    for i in range(1100):
        s3.delete_object(Bucket=bucket, Key=f"{manifests_prefix(PREFIX)}run=0-past-{i:05d}.json")
    assert read_backup(store, PREFIX) == read_kafka(bootstrap, [topic])


def test_a_commit_that_died_after_its_log_entry_and_a_lost_variable_lose_nothing(airflow_stack, bucket, s3):
    from airflow.models.variable import Variable

    bootstrap = airflow_stack["bootstrap"]
    topic = _topic(bootstrap)
    store = S3ObjectStore(client=s3, bucket=bucket)
    produce_tricky(bootstrap, topic, 1, 40, seed=1)
    _backup(bucket, topic)
    # A run that wrote its log entry, then died before its manifest, and was never retried.
    record_commit(store, PREFIX, 1, "scheduled__ghost", manifest_key(PREFIX, "scheduled__ghost"), {})

    produce_tricky(bootstrap, topic, 1, 40, seed=2, start=40)
    _backup(bucket, topic)
    latest = read_commit(store, PREFIX, 3)
    assert latest is not None and latest.run_id != "scheduled__ghost"
    assert _variable(bucket)["commit"] == {"seq": 3, "run_id": latest.run_id}
    assert read_backup(store, PREFIX) == read_kafka(bootstrap, [topic])

    Variable.delete(checkpoint_variable_key(bucket, PREFIX))
    produce_tricky(bootstrap, topic, 1, 40, seed=3, start=80)
    _backup(bucket, topic)
    assert read_commit(store, PREFIX, 4) is not None and _variable(bucket)["commit"]["seq"] == 4
    assert read_backup(store, PREFIX) == read_kafka(bootstrap, [topic])
