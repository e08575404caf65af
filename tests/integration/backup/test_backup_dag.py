"""The ``kafka_backup`` DAG against the real broker, the moto S3 server and a real Airflow DB."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from confluent_kafka.admin import NewTopic

from airflow_kafka_backup.engine.storage.manifest import RunManifest, list_manifest_keys
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from airflow_kafka_backup.operators.backup import checkpoint_variable_key
from tests.helpers import (
    RECORDS_PER_TOPIC,
    create_topics,
    produce_tricky,
    read_backup,
    read_kafka,
    run_dag,
    snapshot_bucket,
)

pytestmark = pytest.mark.integration

def _conf(topics, bucket, **extra) -> dict:
    return {"topics": topics, "bucket": bucket, "prefix": "backups", "flush_size": 500, **extra}


def _assert_same_records(expected: dict, actual: dict) -> None:
    assert sorted(expected) == sorted(tp for tp in actual if actual[tp]) or all(
        not expected[tp] for tp in expected if tp not in actual)
    for tp, records in expected.items():
        got = actual.get(tp, [])
        assert len(got) == len(records), f"{tp}: {len(got)} backed up, {len(records)} in Kafka"
        offsets = [r.offset for r in got]
        assert len(set(offsets)) == len(offsets), f"{tp}: duplicate offsets"
        for want, have in zip(records, got, strict=True):
            assert want == have, f"{tp} offset {want.offset}: {want} != {have}"


def test_backup_is_byte_exact(corpus, bucket, s3):
    truth = read_kafka(corpus["bootstrap"], corpus["all"])
    # The corpus really has the edge cases we claim it has.
    flat = [r for rs in truth.values() for r in rs]
    assert len([r for t in corpus["tricky"] for p in range(3) for r in truth[(t, p)]]) >= 10_000
    assert any(r.key is None for r in flat) and any(r.key == b"" for r in flat)
    assert any(r.value is None for r in flat) and any(r.value == b"" for r in flat)
    assert any(len({n for n, _ in r.headers}) < len(r.headers) for r in flat)
    assert any(v is None for r in flat for _, v in r.headers)
    tx_offsets = [r.offset for r in truth[(corpus["tx"], 0)]]
    assert tx_offsets[-1] - tx_offsets[0] + 1 > len(tx_offsets), "aborted records leave offset gaps"
    assert all(r.value != b"aborted" for p in range(2) for r in truth[(corpus["tx"], p)])
    compact_offsets = [r.offset for r in truth[(corpus["compact"], 0)]]
    assert compact_offsets[-1] + 1 > len(compact_offsets), "compaction leaves offset gaps"

    dag_run = run_dag("kafka_backup", _conf(corpus["all"], bucket))
    assert dag_run.state == "success"

    store = S3ObjectStore(client=s3, bucket=bucket)
    backed_up = read_backup(store, "backups")
    _assert_same_records(truth, backed_up)
    assert read_kafka(corpus["bootstrap"], corpus["all"]) == truth, "Kafka changed under the test"

    manifest_keys = list_manifest_keys(store, "backups")
    assert len(manifest_keys) == 1
    manifest = RunManifest.from_json(store.get_bytes(manifest_keys[0]))
    assert all(s.records <= 500 for s in manifest.segments)
    assert any(s.records == 500 for s in manifest.segments)
    seg = manifest.segments[0]
    name = f"{seg.topic}+{seg.partition}+{seg.first_offset:010d}.msgpack.zst"  # the shipped defaults
    assert seg.key == f"backups/{seg.topic}/partition={seg.partition}/{name}"
    assert (manifest.settings.segment_format, manifest.settings.compression, manifest.settings.compression_level,
            manifest.settings.compression_library) == ("msgpack", "zstd", 1, None)
    ends = manifest.end_offsets()
    for tp, records in truth.items():
        if tp[0] == corpus["tx"]:  # the end is past the last commit marker
            assert ends[tp] > records[-1].offset + 1
        else:
            assert ends[tp] == records[-1].offset + 1

def test_second_run_backs_up_only_new_records(corpus, bucket, s3, airflow_stack):
    topic = corpus["tricky"][0]
    assert run_dag("kafka_backup", _conf([topic], bucket)).state == "success"
    produce_tricky(corpus["bootstrap"], topic, 3, 300, seed=99, start=RECORDS_PER_TOPIC)
    assert run_dag("kafka_backup", _conf([topic], bucket)).state == "success"

    store = S3ObjectStore(client=s3, bucket=bucket)
    first, second = (RunManifest.from_json(store.get_bytes(k)) for k in _in_commit_order(store))
    for r in second.ranges:
        assert r.start == first.end_offsets()[r.tp]
    assert sum(s.records for s in second.segments) == 300
    _assert_same_records(read_kafka(corpus["bootstrap"], [topic]), read_backup(store, "backups"))
    # A third run with nothing new writes no manifest and leaves the bucket unchanged.
    before = snapshot_bucket(s3, bucket)
    assert run_dag("kafka_backup", _conf([topic], bucket)).state == "success"
    assert snapshot_bucket(s3, bucket) == before


def test_clear_and_rerun_leaves_s3_byte_identical(corpus, bucket, s3):
    topic = corpus["tricky"][1]
    when = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=uuid.uuid4().int % 10**6)
    assert run_dag("kafka_backup", _conf([topic], bucket), logical_date=when).state == "success"
    before = snapshot_bucket(s3, bucket)
    # New records arrive; a naive re-run would back them up under the old run's manifest.
    produce_tricky(corpus["bootstrap"], topic, 3, 120, seed=7, start=10 * RECORDS_PER_TOPIC)
    assert run_dag("kafka_backup", _conf([topic], bucket), logical_date=when).state == "success"
    assert snapshot_bucket(s3, bucket) == before


def test_checkpoint_recovered_from_s3_when_variable_is_lost(corpus, bucket, s3):
    from airflow.models.variable import Variable

    topic = corpus["tricky"][2]
    assert run_dag("kafka_backup", _conf([topic], bucket)).state == "success"
    key = checkpoint_variable_key(bucket, "backups")
    stored = json.loads(Variable.get(key))
    assert stored["commit"]["seq"] == 1 and sum(stored["checkpoints"][topic].values()) > 0
    Variable.delete(key)
    produce_tricky(corpus["bootstrap"], topic, 3, 30, seed=5, start=20 * RECORDS_PER_TOPIC)
    assert run_dag("kafka_backup", _conf([topic], bucket)).state == "success"
    store = S3ObjectStore(client=s3, bucket=bucket)
    second = RunManifest.from_json(store.get_bytes(_in_commit_order(store)[1]))
    assert sum(s.records for s in second.segments) == 30
    _assert_same_records(read_kafka(corpus["bootstrap"], [topic]), read_backup(store, "backups"))


@pytest.mark.parametrize(
    "override",
    [{"flush_size": 0}, {"compression": "lz4"}, {"topics": []}, {"bucket": None}, {"bucket": "no-such-bucket"},
     {"topics": ["no-such-topic"]}],
    ids=["flush_size<=0", "unknown-compression", "empty-topics", "no-bucket", "missing-bucket", "unknown-topic"],
)
def test_bad_params_fail_before_anything_is_written(corpus, bucket, s3, override):
    conf = {**_conf([corpus["tricky"][0]], bucket), **override}
    try:
        dag_run = run_dag("kafka_backup", conf)
    except Exception:  # Param schema rejected the conf before the run started
        dag_run = None
    assert dag_run is None or dag_run.state == "failed"
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def _in_commit_order(store: S3ObjectStore) -> list[str]:
    """Manifest keys ordered by the offsets they cover (run ids do not sort by time)."""
    keys = list_manifest_keys(store, "backups")
    return sorted(keys, key=lambda k: min(r.start for r in RunManifest.from_json(store.get_bytes(k)).ranges))


def test_plan_names_the_missing_bucket_and_the_unknown_topic(corpus, bucket, s3):
    from airflow_kafka_backup.engine.errors import ConfigurationError
    from airflow_kafka_backup.operators.backup import KafkaBackupPlanOperator

    context = {"run_id": "manual__bad-input"}
    plan = KafkaBackupPlanOperator(task_id="plan", topics=["no-such-topic", corpus["tricky"][0]], bucket=bucket)
    with pytest.raises(ConfigurationError, match="Kafka topic\\(s\\) not found: no-such-topic\\.$"):
        plan.execute(context)
    plan = KafkaBackupPlanOperator(task_id="plan", topics=[corpus["tricky"][0]], bucket="no-such-bucket-42")
    with pytest.raises(ConfigurationError, match="S3 bucket 'no-such-bucket-42' does not exist"):
        plan.execute(context)
    plan = KafkaBackupPlanOperator(task_id="plan", topics=[corpus["tricky"][0]], bucket=bucket, flush_size="{{ x }}")
    with pytest.raises(ConfigurationError, match="flush_size must be a whole number"):
        plan.execute(context)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def _task_states(dag_id: str, run_id: str) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        return {ti.task_id: ti.state for ti in session.query(TaskInstance).filter_by(dag_id=dag_id, run_id=run_id)}


def test_the_rpo_guard_fails_the_run_only_when_records_older_than_the_rpo_wait(airflow_stack, bucket, s3):
    import threading

    from confluent_kafka import Producer
    from confluent_kafka.admin import NewTopic

    from tests.helpers import create_topics

    bootstrap = airflow_stack["bootstrap"]
    topic = f"rpo-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, NewTopic(topic, 1, 1, config={"retention.ms": "-1"}))
    produce_tricky(bootstrap, topic, 1, 300, seed=11)  # stamped 2020: years old
    conf = _conf([topic], bucket, prefix="rpo", rpo_seconds=3600)
    quiet = run_dag("kafka_backup", conf)
    assert quiet.state == "success"  # everything is backed up: nothing waits
    assert _task_states("kafka_backup", quiet.run_id)["check_rpo"] == "success"

    # Records stamped 2020 keep arriving while the next run backs up: after its commit they wait, years old.
    stop = threading.Event()

    def produce_old_records() -> None:
        producer = Producer({"bootstrap.servers": bootstrap})
        while not stop.is_set():
            producer.produce(topic, value=b"late", timestamp=1_600_000_000_000, partition=0)
            producer.poll(0)
            time.sleep(0.02)
        producer.flush(10)

    thread = threading.Thread(target=produce_old_records)
    thread.start()
    try:
        time.sleep(1)
        behind = run_dag("kafka_backup", conf)
    finally:
        stop.set()
        thread.join()
    states = _task_states("kafka_backup", behind.run_id)
    assert behind.state == "failed" and states["commit"] == "success" and states["check_rpo"] == "failed", states
    store = S3ObjectStore(client=s3, bucket=bucket)
    assert len(list_manifest_keys(store, "rpo")) == 2  # the guard wrote nothing; the commit stands


def _xcom_bytes(env: dict, run_id: str) -> dict[str, int]:
    """Bytes of every XCom value the backup run left in the metadata DB, by task."""
    db = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT task_id, SUM(LENGTH(CAST(value AS BLOB))) FROM xcom "
                            "WHERE dag_id = ? AND run_id = ? GROUP BY task_id", ("kafka_backup", run_id)).fetchall()
    return {task: int(size or 0) for task, size in rows}


def test_the_xcom_of_a_run_does_not_grow_with_its_partitions(airflow_stack, bucket, s3):
    """Ranges and segment lists go through S3 (``_runs/``): XCom holds refs, one per work unit (issue #25)."""
    sizes = {}
    for partitions in (4, 120):
        topic = f"xcom-{partitions:03d}-{uuid.uuid4().hex[:6]}"  # names and keys of one length in both runs
        create_topics(airflow_stack["bootstrap"], NewTopic(topic, partitions, 1, config={"retention.ms": "-1"}))
        produce_tricky(airflow_stack["bootstrap"], topic, partitions, partitions, seed=5)  # a record a partition
        conf = {"topics": [topic], "bucket": bucket, "prefix": f"xcom-{partitions:03d}", "max_work_units": 4}
        dag_run = run_dag("kafka_backup", conf)
        assert dag_run.state == "success"
        sizes[partitions] = _xcom_bytes(airflow_stack["env"], dag_run.run_id)
        store = S3ObjectStore(client=s3, bucket=bucket)
        (key,) = list_manifest_keys(store, conf["prefix"])
        assert len(RunManifest.from_json(store.get_bytes(key)).segments) == partitions
        assert not list(store.list_keys(f"{conf['prefix']}/_runs/")), "the commit removed the working objects"
    few, many = sizes[4], sizes[120]
    assert set(few) == set(many) >= {"plan", "backup", "commit"}, sizes
    # 116 more partitions were about 87 KB more XCom when it carried the ranges and segment lists (755 B each).
    assert sum(many.values()) <= sum(few.values()) + 64, sizes
    assert sum(many.values()) < 4096, sizes
