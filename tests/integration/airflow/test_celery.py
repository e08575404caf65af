"""The DAGs on the CeleryExecutor: two Celery workers that share no disk, a thousand partitions, a worker killed.

:class:`~devstack.celery_services.CeleryServices` starts the scheduler, dag-processor, api-server
and triggerer, a Redis broker and two ``airflow celery worker`` processes, each with its own HOME,
TMPDIR, AIRFLOW_HOME and DAG files. Each worker reports its own host name, so the api-server's task
instances say which worker ran which task. Placement is Celery's: the tests assert on the set of
workers the mapped tasks landed on, which holds because a run queues more tasks than one worker has
slots.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import NewTopic

from airflow_kafka_backup.engine.records import Record
from airflow_kafka_backup.engine.storage.key_layout import manifest_key
from airflow_kafka_backup.engine.storage.manifest import load_manifests
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from devstack.airflow_env import REPO, connection_env
from devstack.celery_services import CeleryServices
from tests.helpers import create_topics, produce_tricky, read_backup, read_kafka

pytestmark = pytest.mark.integration

KEEP_FOREVER = {"retention.ms": "-1"}  # the tricky records carry 2020 timestamps
FAST_RETRY_DAG = "kafka_backup_fast_retry"  # tests/dags/kafka_backup_fast_retry.py
WORKERS = ["worker-1", "worker-2"]


@pytest.fixture(scope="module")
def celery(airflow_stack, request) -> Iterator[CeleryServices]:
    """The Celery stack, once for this module, with kafka_default / aws_default on the session's stack."""
    dag_files = [REPO / "dags" / "kafka_backup.py", REPO / "dags" / "kafka_restore.py",
                 REPO / "tests" / "dags" / f"{FAST_RETRY_DAG}.py"]
    extra_env = {**connection_env(airflow_stack["bootstrap"], airflow_stack["endpoint_url"]),
                 "KAFKA_BACKUP_SCHEDULE": "none"}  # else the scheduler starts an @hourly run of its own at once
    failed_before = request.session.testsfailed
    with CeleryServices(dag_files, extra_env, workers=len(WORKERS), concurrency=2) as services:
        services.wait_for_dags(["kafka_backup", "kafka_restore", FAST_RETRY_DAG])
        yield services
        services.keep_home = request.session.testsfailed > failed_before
        assert services.worker_db_tables() == {name: [] for name in WORKERS}, "a worker used a metadata DB"


def _diagnostics(airflow: CeleryServices, dag_id: str, run_id: str) -> str:
    try:
        states = {(ti["task_id"], ti["map_index"]): (ti["state"], ti["hostname"], ti["try_number"])
                  for ti in airflow.task_instances(dag_id, run_id)}
    except OSError as error:
        states = {"error": str(error)}
    return (f"AIRFLOW_HOME={airflow.home}\ntask states: {states}\n"
            f"{airflow.task_log_tails(dag_id)}\n{airflow.log_tails()}")


def _run(airflow: CeleryServices, dag_id: str, conf: dict[str, Any], timeout: float = 420) -> list[dict[str, Any]]:
    """Trigger a run through the REST API, wait for it to succeed; its task instances."""
    run_id = f"celery-{uuid.uuid4().hex[:8]}"
    airflow.trigger_run(dag_id, run_id, conf)
    assert airflow.wait_for_run(dag_id, run_id, timeout=timeout) == "success", _diagnostics(airflow, dag_id, run_id)
    return airflow.task_instances(dag_id, run_id)


def _hosts(tis: list[dict[str, Any]], task_id: str) -> set[str]:
    return {ti["hostname"] for ti in tis if ti["task_id"] == task_id}


def _fields(record) -> tuple:
    """Everything a restore carries over; offsets differ by design (recorded in the offset map)."""
    return (record.partition, record.key, record.value, record.headers, record.timestamp, record.timestamp_type)


def read_kafka_at_once(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], list[Record]]:
    """Every record Kafka holds for ``topics``, like :func:`tests.helpers.read_kafka`, but with every
    partition assigned at once: reading a thousand partitions one by one waits a fetch timeout each."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-reader", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "auto.offset.reset": "earliest"})
    out: dict[tuple[str, int], list[Record]] = {}
    try:
        metadata = consumer.list_topics(timeout=10).topics
        highs: dict[tuple[str, int], int] = {}
        starts = []
        for topic in topics:
            for partition in metadata[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
                out[(topic, partition)] = []
                if high > low:
                    highs[(topic, partition)] = high
                    starts.append(TopicPartition(topic, partition, low))
        consumer.assign(starts)
        deadline = time.monotonic() + 120
        while highs:
            assert time.monotonic() < deadline, f"{len(highs)} partitions not read to their end"
            for message in consumer.consume(10_000, 1.0):
                tp = (message.topic(), message.partition())
                if message.error() is None and message.offset() < highs.get(tp, -1):
                    out[tp].append(Record.from_message(message))
            positions = consumer.position([TopicPartition(t, p) for t, p in highs])
            for position in positions:
                if position.offset >= highs[(position.topic, position.partition)]:
                    del highs[(position.topic, position.partition)]
    finally:
        consumer.close()
    return out


def _assert_backup_is_kafka(bootstrap: str, s3, bucket: str, prefix: str, topics: list[str]) -> None:
    """The committed backup holds exactly what Kafka holds, record for record, every byte checked."""
    backed_up = read_backup(S3ObjectStore(client=s3, bucket=bucket), prefix)
    truth = {tp: records for tp, records in read_kafka_at_once(bootstrap, topics).items() if records}
    assert backed_up.keys() == truth.keys()
    assert backed_up == truth


def test_a_thousand_partitions_back_up_and_restore_across_workers_byte_exact(
        celery: CeleryServices, airflow_stack, bucket: str, s3) -> None:
    bootstrap = airflow_stack["bootstrap"]
    wide, narrow = f"wide-{uuid.uuid4().hex[:6]}", f"narrow-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, NewTopic(wide, 1000, 1, config=KEEP_FOREVER),
                  NewTopic(narrow, 24, 1, config=KEEP_FOREVER))
    produce_tricky(bootstrap, wide, 1000, 3000, seed=25)  # 3 records a partition
    produce_tricky(bootstrap, narrow, 24, 1200, seed=26)

    # Backup: 1,024 partitions in 6 work units, over 4 slots on two workers.
    conf = {"topics": [wide, narrow], "bucket": bucket, "prefix": "celery", "max_work_units": 6}
    tis = _run(celery, "kafka_backup", conf)
    run_id = tis[0]["dag_run_id"]
    assert sorted(ti["map_index"] for ti in tis if ti["task_id"] == "backup") == list(range(6))
    assert {ti["hostname"] for ti in tis} <= set(WORKERS), _diagnostics(celery, "kafka_backup", run_id)
    assert _hosts(tis, "backup") == set(WORKERS), "the mapped backup tasks all ran on one worker"
    assert {ti["task_id"] for ti in tis} == {"plan", "retention", "backup", "commit", "check_rpo"}
    manifests = list(load_manifests(S3ObjectStore(client=s3, bucket=bucket), "celery"))
    assert len(manifests) == 1 and manifest_key("celery", run_id) in snapshot_keys(s3, bucket)
    assert len({(seg.topic, seg.partition) for seg in manifests[0].segments}) == 1024
    _assert_backup_is_kafka(bootstrap, s3, bucket, "celery", [wide, narrow])

    # Restore: one topic's 24 partitions in 4 work units, again over both workers.
    target = f"{narrow}-restored"
    restore_conf = {"topics": [narrow], "bucket": bucket, "prefix": "celery", "topic_mapping": {narrow: target},
                    "topic_configs": KEEP_FOREVER, "max_work_units": 4,
                    "require_approval": False}  # an automated restore: nobody is there to approve it
    tis = _run(celery, "kafka_restore", restore_conf)
    assert sorted(ti["map_index"] for ti in tis if ti["task_id"] == "restore") == list(range(4))
    assert {ti["hostname"] for ti in tis} <= set(WORKERS)
    assert _hosts(tis, "restore") == set(WORKERS), "the mapped restore tasks all ran on one worker"
    source = read_kafka(bootstrap, [narrow])
    restored = read_kafka(bootstrap, [target])
    for (_, partition), records in source.items():
        assert [_fields(r) for r in restored[(target, partition)]] == [_fields(r) for r in records], partition


def snapshot_keys(s3, bucket: str) -> set[str]:
    return {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", ())}


def _running_backup_host(airflow: CeleryServices, run_id: str, timeout: float = 180) -> dict[str, Any]:
    """The first backup task instance seen running on a worker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        airflow.check_alive()
        tis = airflow.task_instances(FAST_RETRY_DAG, run_id)
        running = [ti for ti in tis if ti["task_id"] == "backup" and ti["state"] == "running" and ti["hostname"]]
        if running:
            return running[0]
        assert not any(ti["task_id"] == "commit" and ti["state"] == "success" for ti in tis), "finished first"
        time.sleep(0.2)
    raise AssertionError(f"no backup task ran within {timeout}s\n{_diagnostics(airflow, FAST_RETRY_DAG, run_id)}")


def test_a_task_of_a_killed_worker_is_retried_on_the_other_and_the_run_commits_once(
        celery: CeleryServices, airflow_stack, bucket: str, s3) -> None:
    bootstrap = airflow_stack["bootstrap"]
    topic = f"celery-kill-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, NewTopic(topic, 4, 1, config=KEEP_FOREVER))
    for start in range(0, 160_000, 40_000):  # seconds of backing up per task: time to kill a worker
        produce_tricky(bootstrap, topic, 4, 40_000, seed=27, start=start)
    run_id = f"kill-{uuid.uuid4().hex[:8]}"
    celery.trigger_run(FAST_RETRY_DAG, run_id, {"topics": [topic], "bucket": bucket, "prefix": "killed",
                                                "flush_size": 5_000, "max_work_units": 2})

    victim = _running_backup_host(celery, run_id)
    celery.kill_worker(victim["hostname"])  # SIGKILL: the worker, its pool and the task process
    survivor = next(name for name in WORKERS if name != victim["hostname"])
    try:
        state = celery.wait_for_run(FAST_RETRY_DAG, run_id, timeout=420)
        assert state == "success", _diagnostics(celery, FAST_RETRY_DAG, run_id)
    finally:
        celery.start_worker(victim["hostname"])  # the module's stack has both workers again
    tis = celery.task_instances(FAST_RETRY_DAG, run_id)
    retried = next(ti for ti in tis if ti["task_id"] == "backup" and ti["map_index"] == victim["map_index"])
    assert retried["try_number"] > victim["try_number"], retried
    assert retried["hostname"] == survivor, retried
    commit = next(ti for ti in tis if ti["task_id"] == "commit")
    assert commit["try_number"] == 1, commit

    # Exactly once: one manifest, every segment object in the bucket named by it, every record once.
    store = S3ObjectStore(client=s3, bucket=bucket)
    manifests = list(load_manifests(store, "killed"))
    assert len(manifests) == 1, [m.run_id for m in manifests]
    keys = snapshot_keys(s3, bucket)
    assert [k for k in keys if "/_manifests/" in k] == [manifest_key("killed", run_id)]
    segment_objects = {k for k in keys if k.startswith(f"killed/{topic}/")}
    assert segment_objects == {seg.key for seg in manifests[0].segments}
    assert sum(seg.records for seg in manifests[0].segments) == 160_000
    _assert_backup_is_kafka(bootstrap, s3, bucket, "killed", [topic])
    celery.wait_for_workers([victim["hostname"]])
