"""Faults a backup and a restore must survive without losing or duplicating a record.

- the backup process SIGKILLed after some segments were uploaded, then retried;
- S3 answering 500 / 503 SlowDown or dropping connections (``tests.s3_proxy``);
- the Kafka broker restarted while a backup and a restore run (a second broker of our own);
- retention deleting records before they were backed up.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from airflow_kafka_backup.engine.backup.planning import partitions_of, plan_ranges
from airflow_kafka_backup.engine.storage.checksums import checksum_of
from airflow_kafka_backup.engine.storage.manifest import PartitionRange, list_manifest_keys, load_manifests
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from airflow_kafka_backup.engine.topics.offsets import snapshot_offsets
from airflow_kafka_backup.operators.backup import checkpoint_variable_key
from devstack.s3_server import ACCESS_KEY, REGION, SECRET_KEY
from tests.helpers import (
    create_topics,
    produce_tricky,
    read_backup,
    read_kafka,
    run_dag,
    snapshot_bucket,
    verify_finished_restore,
)
from tests.s3_proxy import S3Proxy

pytestmark = pytest.mark.integration

KEEP_FOREVER = {"retention.ms": "-1"}  # produce_tricky writes 2020 timestamps
REPO = Path(__file__).resolve().parents[3]  # tests/integration/backup/ -> the repository


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def _assert_exact(expected: dict, actual: dict) -> None:
    """Every record Kafka holds is in ``actual`` exactly once, byte for byte, and nothing else is."""
    assert set(actual) <= set(expected), f"unexpected partitions: {set(actual) - set(expected)}"
    for tp, records in expected.items():
        got = actual.get(tp, [])
        offsets = [r.offset for r in got]
        assert len(set(offsets)) == len(offsets), f"{tp}: duplicate offsets in the backup"
        assert len(got) == len(records), f"{tp}: {len(got)} backed up, {len(records)} in Kafka"
        for want, have in zip(records, got, strict=True):
            assert want == have, f"{tp} offset {want.offset}: {want} != {have}"


def _fields(record):
    """What a restore carries over; offsets differ by design."""
    return (record.partition, record.key, record.value, record.headers, record.timestamp, record.timestamp_type)


def _assert_restored(source: dict, target: dict, mapping: dict) -> None:
    for (topic, partition), records in source.items():
        restored = target.get((mapping[topic], partition), [])
        assert len(restored) == len(records), f"{topic}[{partition}]: {len(restored)} restored of {len(records)}"
        assert [_fields(r) for r in restored] == [_fields(r) for r in records], f"{topic}[{partition}]"


def _plan(bootstrap: str, topics: list[str]) -> list[PartitionRange]:
    """What the plan task would plan for a first backup: each partition's log start to its end."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    partitions = partitions_of(admin, topics)
    tps = [(t, p) for t, n in partitions.items() for p in range(n)]
    return plan_ranges(snapshot_offsets(admin, tps, "read_committed"), {}, allow_data_loss=False)


def _segment_keys(s3, bucket: str, prefix: str) -> list[str]:
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
            for o in page.get("Contents", ())]
    return [k for k in keys if "/partition=" in k]


def _worker_command(module: str, args: dict) -> list[str]:
    # -X faulthandler: a worker stopped with SIGABRT prints where every thread was.
    return [sys.executable, "-X", "faulthandler", "-m", f"tests.integration.{module}", json.dumps(args)]


def _quiet(output: str) -> str:
    """A worker's output without librdkafka's own log lines (``%<level>|...``), which drown the rest."""
    return "\n".join(line for line in output.splitlines() if not line.startswith("%"))


def _run_worker(module: str, args: dict, timeout: float = 120) -> dict:
    done = subprocess.run(_worker_command(module, args), cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, _quiet(done.stderr)[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _aws_connection(monkeypatch, endpoint_url: str, proxy_url: str, max_attempts: int) -> str:
    """An ``aws`` connection whose S3 traffic goes through ``proxy_url``, retried by botocore's standard mode."""
    conn_id = f"aws_faulty_{uuid.uuid4().hex[:6]}"
    extra = {"endpoint_url": endpoint_url, "region_name": REGION,
             "config_kwargs": {"proxies": {"http": proxy_url}, "s3": {"addressing_style": "path"},
                               "retries": {"mode": "standard", "max_attempts": max_attempts}}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(
        {"conn_type": "aws", "login": ACCESS_KEY, "password": SECRET_KEY, "extra": extra}))
    return conn_id


def _checkpoint(bucket: str, prefix: str):
    from airflow.models.variable import Variable

    return Variable.get(checkpoint_variable_key(bucket, prefix), default_var=None)


# ---------------------------------------------------------------------------------------------------------------
# 1. The backup process SIGKILLed midway, then retried


def test_backup_killed_after_some_uploads_then_retried_is_exact(airflow_stack, bucket, s3, tmp_path):
    bootstrap = airflow_stack["bootstrap"]
    topic = f"kill-backup-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, NewTopic(topic, 2, 1, config=KEEP_FOREVER))
    produce_tricky(bootstrap, topic, 2, 30_000, seed=31)
    ranges = _plan(bootstrap, [topic])
    assert sum(r.end - r.start for r in ranges) == 30_000
    prefix = "bk"
    args = {"bootstrap": bootstrap, "endpoint_url": airflow_stack["endpoint_url"], "bucket": bucket,
            "prefix": prefix, "run_id": "manual__kill-backup", "ranges": [asdict(r) for r in ranges],
            "flush_size": 100, "spool_dir": str(tmp_path)}

    worker = subprocess.Popen(_worker_command("backup_worker", args), cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and worker.poll() is None:
        if len(_segment_keys(s3, bucket, prefix)) >= 20:
            break
        time.sleep(0.02)
    worker.send_signal(signal.SIGKILL)
    _, stderr = worker.communicate()
    assert worker.returncode == -signal.SIGKILL, f"the backup ended before it could be killed: {stderr[-2000:]}"

    store = S3ObjectStore(client=s3, bucket=bucket)
    assert list_manifest_keys(store, prefix) == [], "a killed attempt committed nothing"
    leftovers = {k: v for k, v in snapshot_bucket(s3, bucket).items() if "/partition=" in k}
    assert 20 <= len(leftovers) < 300, f"killed midway: {len(leftovers)} of 300 segments were uploaded"
    assert read_backup(store, prefix) == {}, "readers see nothing of an uncommitted attempt"

    result = _run_worker("backup_worker", args)
    assert result["records"] == 30_000
    assert result["skipped_uploads"] == len(leftovers), "every leftover held the bytes the retry produced"

    (manifest,) = load_manifests(store, prefix)
    assert manifest.ranges == sorted(ranges, key=lambda r: r.tp)
    _assert_exact(read_kafka(bootstrap, [topic]), read_backup(store, prefix))
    referenced = {s.key: s for s in manifest.segments}
    now = snapshot_bucket(s3, bucket)
    for key, body in leftovers.items():
        if key in referenced:
            assert now[key] == body, f"{key} changed between the attempts"
            assert checksum_of(referenced[key].checksum.algorithm, body) == referenced[key].checksum, key
    # Nothing else lies beside the committed segments: no stray object from the killed attempt.
    assert {k for k in now if "/partition=" in k} == set(referenced)


# ---------------------------------------------------------------------------------------------------------------
# 2. S3 faults through a proxy


def test_backup_and_restore_succeed_exactly_through_30_percent_s3_faults(corpus, airflow_stack, bucket, s3,
                                                                          monkeypatch):
    topic = corpus["tricky"][0]
    with S3Proxy(share=0.3, faults=("500", "503", "reset", "lost")) as proxy:
        conn_id = _aws_connection(monkeypatch, airflow_stack["endpoint_url"], proxy.url, max_attempts=10)
        conf = {"topics": [topic], "bucket": bucket, "prefix": "faulty", "flush_size": 300, "aws_conn_id": conn_id}
        assert run_dag("kafka_backup", conf).state == "success"
        backup_faults = proxy.fault_counts()

        store = S3ObjectStore(client=s3, bucket=bucket)
        source = read_kafka(corpus["bootstrap"], [topic])
        _assert_exact(source, read_backup(store, "faulty"))
        assert len(list_manifest_keys(store, "faulty")) == 1

        target = f"{topic}-faulty-{uuid.uuid4().hex[:4]}"
        restore_conf = {"topics": [topic], "bucket": bucket, "prefix": "faulty", "topic_mapping": {topic: target},
                        "topic_configs": KEEP_FOREVER, "aws_conn_id": conn_id}
        assert run_dag("kafka_restore", restore_conf).state == "success"
        total_faults = proxy.fault_counts()

    assert all(backup_faults[kind] > 0 for kind in ("500", "503", "reset", "lost")), backup_faults
    restore_faults = total_faults - backup_faults
    assert sum(n for kind, n in restore_faults.items() if kind is not None) > 5, restore_faults
    _assert_restored(source, read_kafka(corpus["bootstrap"], [target]), {topic: target})


def test_backup_failing_on_s3_moves_no_checkpoint_and_commits_nothing(airflow_stack, bucket, s3, monkeypatch):
    bootstrap = airflow_stack["bootstrap"]
    topic = f"s3-down-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, NewTopic(topic, 2, 1, config=KEEP_FOREVER))
    produce_tricky(bootstrap, topic, 2, 1_000, seed=41)
    prefix = "down"
    store = S3ObjectStore(client=s3, bucket=bucket)
    conf = {"topics": [topic], "bucket": bucket, "prefix": prefix, "flush_size": 200}

    # A first run with S3 answering normally: the checkpoint and one manifest exist.
    assert _checkpoint(bucket, prefix) is None
    assert run_dag("kafka_backup", conf).state == "success"
    checkpoint = _checkpoint(bucket, prefix)
    manifests = list_manifest_keys(store, prefix)
    assert checkpoint is not None and len(manifests) == 1
    produce_tricky(bootstrap, topic, 2, 600, seed=42, start=1_000)

    when = datetime(2026, 3, 1, tzinfo=timezone.utc) + timedelta(seconds=uuid.uuid4().int % 10**6)
    with S3Proxy(share=1.0, faults=("500", "503", "reset")) as proxy:
        conn_id = _aws_connection(monkeypatch, airflow_stack["endpoint_url"], proxy.url, max_attempts=2)
        # Every S3 request fails: the plan cannot even look at the bucket.
        before = snapshot_bucket(s3, bucket)
        assert run_dag("kafka_backup", {**conf, "aws_conn_id": conn_id}, logical_date=when).state == "failed"
        counts = proxy.fault_counts()
        assert counts[None] == 0 and sum(counts.values()) >= 2, counts
        assert snapshot_bucket(s3, bucket) == before
        assert _checkpoint(bucket, prefix) == checkpoint
        assert list_manifest_keys(store, prefix) == manifests

        # Only segment uploads fail: the plan succeeds (and takes the writer lock), the backup tasks fail.
        proxy.only = lambda method, url: method == "PUT" and "/partition" in url
        assert run_dag("kafka_backup", {**conf, "aws_conn_id": conn_id}, logical_date=when).state == "failed"
        assert proxy.fault_counts()["500"] + proxy.fault_counts()["503"] > counts["500"] + counts["503"]
        assert _checkpoint(bucket, prefix) == checkpoint
        assert list_manifest_keys(store, prefix) == manifests
        assert set(_segment_keys(s3, bucket, prefix)) == {s.key for m in load_manifests(store, prefix)
                                                           for s in m.segments}

    # S3 is back: the same run, re-run, holds the lock and backs up exactly what is new.
    assert run_dag("kafka_backup", conf, logical_date=when).state == "success"
    assert len(list_manifest_keys(store, prefix)) == 2
    assert _checkpoint(bucket, prefix) != checkpoint
    _assert_exact(read_kafka(bootstrap, [topic]), read_backup(store, prefix))


# ---------------------------------------------------------------------------------------------------------------
# 3. The Kafka broker restarted while a backup and a restore run


class _RestartableBroker:
    """A second broker of our own (the session's is shared), restartable with the same port and data.

    ``KafkaBroker.stop()`` deletes its workdir, so a restart stops the process itself and
    launches ``kafka.Kafka`` again on the same ``server.properties``.
    """

    def __init__(self) -> None:
        from devstack.kafka_broker import start_broker

        self.broker = start_broker()
        assert self.broker.process is not None and self.broker.workdir is not None, "not a broker of our own"
        self.bootstrap = self.broker.bootstrap
        self.restarts = 0

    def restart(self) -> float:
        """Stop the broker (SIGTERM: a controlled shutdown), start it again; returns seconds it was down."""
        from devstack.kafka_broker import fetch_kafka_jars

        process = self.broker.process
        down = time.monotonic()
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        workdir = self.broker.workdir
        java = ["java", "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={workdir / 'log4j2.properties'}", "-cp", f"{fetch_kafka_jars()}/*"]
        with (workdir / "kafka.log").open("ab") as log:
            self.broker.process = subprocess.Popen([*java, "kafka.Kafka", str(workdir / "server.properties")],
                                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.restarts += 1
        self._wait_until_serving(timeout=90)
        return time.monotonic() - down

    def _wait_until_serving(self, timeout: float) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.broker.process.poll() is None, (self.broker.workdir / "kafka.log").read_text()[-4000:]
            try:
                topics = admin.list_topics(timeout=2).topics
                if topics and all(p.leader >= 0 for t in topics.values() for p in t.partitions.values()):
                    return
            except Exception:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"the restarted broker did not serve within {timeout}s")

    def stop(self) -> None:
        self.broker.stop()


@pytest.fixture(scope="module")
def restartable_broker(airflow_stack):
    if os.environ.get("KAFKA_BOOTSTRAP"):
        pytest.skip("KAFKA_BOOTSTRAP points at an external broker; these tests restart a second broker of their own")
    broker = _RestartableBroker()
    yield broker
    broker.stop()


def _wait_for_exit(worker: subprocess.Popen, timeout: float) -> tuple[int | None, str]:
    """The worker's exit code and output, or ``None`` when it is still running: then it is stopped with
    SIGABRT, so its output ends with the stack of every thread (``-X faulthandler``)."""
    try:
        out, err = worker.communicate(timeout=timeout)
        return worker.returncode, _quiet(out + err)
    except subprocess.TimeoutExpired:
        worker.send_signal(signal.SIGABRT)
        try:
            out, err = worker.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
            out, err = worker.communicate()
        return None, _quiet(out + err)


def test_broker_restart_during_backup(restartable_broker, airflow_stack, bucket, s3, tmp_path):
    broker = restartable_broker
    bootstrap = broker.bootstrap
    topic = f"restart-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, NewTopic(topic, 2, 1, config=KEEP_FOREVER))
    produce_tricky(bootstrap, topic, 2, 30_000, seed=51)
    truth = read_kafka(bootstrap, [topic])
    prefix = "restart"
    # A small prefetch, so the consumer still has most records to fetch when the broker goes down.
    args = {"bootstrap": bootstrap, "endpoint_url": airflow_stack["endpoint_url"], "bucket": bucket,
            "prefix": prefix, "run_id": "manual__restart", "ranges": [asdict(r) for r in _plan(bootstrap, [topic])],
            "flush_size": 100, "spool_dir": str(tmp_path),
            "consumer_config": {"queued.min.messages": 200, "queued.max.messages.kbytes": 64,
                                "max.partition.fetch.bytes": 16384}}
    worker = subprocess.Popen(_worker_command("backup_worker", args), cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and worker.poll() is None and not _segment_keys(s3, bucket, prefix):
        time.sleep(0.02)
    assert worker.poll() is None, f"the backup ended before the restart: {_quiet(worker.communicate()[1])[-2000:]}"
    uploaded_before = len(_segment_keys(s3, bucket, prefix))
    down_s = broker.restart()
    code, output = _wait_for_exit(worker, timeout=75)
    print(f"backup: {uploaded_before} of 300 segments before the restart, broker down {down_s:.1f}s, exit {code}: "
          f"{output[-1500:]}")
    assert uploaded_before < 300
    assert code is not None, f"the backup hung after the broker restart: {output[-3000:]}"
    if code != 0:  # failed naming why; a retry must make it whole
        assert "Error" in output, output[-3000:]
        _run_worker("backup_worker", {k: v for k, v in args.items() if k != "consumer_config"})
    store = S3ObjectStore(client=s3, bucket=bucket)
    _assert_exact(truth, read_backup(store, prefix))


def test_broker_restart_during_restore(restartable_broker, airflow_stack, bucket, s3):
    from airflow_kafka_backup.engine.restore.planning import RestoreSettings, plan_restore
    from airflow_kafka_backup.engine.restore.transaction import KAFKA_TIMEOUT_S, WATCHDOG_GRACE_S

    broker = restartable_broker
    bootstrap = broker.bootstrap
    topic = f"restart-{uuid.uuid4().hex[:6]}"
    # One partition in many small segments, a transaction every 0.2 s or so: the restart lands in the middle
    # of one producer's transactions.
    create_topics(bootstrap, NewTopic(topic, 1, 1, config=KEEP_FOREVER))
    produce_tricky(bootstrap, topic, 1, 20_000, seed=52)
    truth = read_kafka(bootstrap, [topic])
    prefix = "restart"
    _run_worker("backup_worker", {"bootstrap": bootstrap, "endpoint_url": airflow_stack["endpoint_url"],
                                  "bucket": bucket, "prefix": prefix, "run_id": "manual__restart",
                                  "ranges": [asdict(r) for r in _plan(bootstrap, [topic])], "flush_size": 50})
    store = S3ObjectStore(client=s3, bucket=bucket)
    _assert_exact(truth, read_backup(store, prefix))

    target = f"{topic}-restored"
    create_topics(bootstrap, NewTopic(target, 1, 1, config=KEEP_FOREVER))
    rargs = {"bootstrap": bootstrap, "endpoint_url": airflow_stack["endpoint_url"], "bucket": bucket,
             "prefix": prefix, "topic": topic, "target": target, "restore_id": "restart-test",
             "commit_interval_s": 0.2}
    worker = subprocess.Popen(_worker_command("restore_worker", rargs), cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    probe = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and worker.poll() is None:
        futures = probe.list_offsets({TopicPartition(target, 0): OffsetSpec.latest()}, request_timeout=5)
        try:
            if next(iter(futures.values())).result().offset > 300:
                break
        except KafkaException:  # e.g. NOT_LEADER_FOR_PARTITION while the new topic's metadata settles
            pass
        time.sleep(0.02)
    assert worker.poll() is None, f"the restore ended before the restart: {_quiet(worker.communicate()[1])[-2000:]}"
    down_s = broker.restart()
    # Every Kafka call of the restore returns within KAFKA_TIMEOUT_S, or its watchdog gives up on the producer
    # WATCHDOG_GRACE_S later (librdkafka can ignore that timeout after a restart: #5456, #5511) and a new producer
    # with the same transactional.id fences it and resumes. So the restore ends on its own, in bounded time.
    limit = KAFKA_TIMEOUT_S + WATCHDOG_GRACE_S + 60
    code, output = _wait_for_exit(worker, timeout=limit)
    print(f"restore: broker down {down_s:.1f}s, exit {code}: {output[-1500:]}")
    assert code is not None, f"the restore hung for more than {limit:.0f}s after a broker restart: {output[-3000:]}"
    if code != 0:  # failed naming why; a retry must make it whole
        assert "Error" in output, output[-3000:]
        _run_worker("restore_worker", rargs)
    _assert_restored(truth, read_kafka(bootstrap, [target]), {topic: target})
    units = plan_restore(store, prefix, RestoreSettings.create(topics=[topic], topic_mapping={topic: target}))
    summaries = verify_finished_restore(bootstrap, store, prefix, "restart-test", units.partitions)
    assert sum(s.records_restored for s in summaries) == 20_000


# ---------------------------------------------------------------------------------------------------------------
# 4. Retention deleted records before they were backed up


def _alter_topic(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in configs.items()])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result()


def _log_starts(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.list_offsets({TopicPartition(topic, p): OffsetSpec.earliest() for p in range(partitions)},
                                 request_timeout=10)
    return {tp.partition: f.result().offset for tp, f in futures.items()}


def _produce_now(bootstrap: str, topic: str, partitions: int, count: int, tag: str) -> None:
    """Records stamped now (retention judges them by timestamp), ``count`` spread over the partitions."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    for i in range(count):
        producer.produce(topic, partition=i % partitions, key=f"{tag}-{i}".encode(), value=os.urandom(16),
                         headers=[("tag", tag.encode())])
    assert producer.flush(30) == 0


def test_records_deleted_by_retention_before_backup_fail_the_run_or_are_recorded_as_lost(
        airflow_stack, bucket, s3, capfd, caplog):
    from airflow_kafka_backup.engine.errors import DataLossError
    from airflow_kafka_backup.engine.verify import verify_backup
    from airflow_kafka_backup.operators.backup import KafkaBackupPlanOperator

    caplog.set_level("INFO")
    bootstrap = airflow_stack["bootstrap"]
    topic = f"retention-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, NewTopic(topic, 2, 1))
    prefix = "ret"
    conf = {"topics": [topic], "bucket": bucket, "prefix": prefix, "flush_size": 100}
    store = S3ObjectStore(client=s3, bucket=bucket)

    _produce_now(bootstrap, topic, 2, 400, "first")
    assert run_dag("kafka_backup", conf).state == "success"
    first = read_kafka(bootstrap, [topic])
    checkpoint = {p: len(first[(topic, p)]) for p in range(2)}
    assert checkpoint == {0: 200, 1: 200}
    variable = _checkpoint(bucket, prefix)

    # Never backed up: offsets 200..349 of each partition. Retention (1 s, 100 ms segments) deletes them.
    _produce_now(bootstrap, topic, 2, 300, "lost")
    _alter_topic(bootstrap, topic, {"retention.ms": "1000", "segment.ms": "100"})
    deadline = time.monotonic() + 45
    while True:
        assert time.monotonic() < deadline, f"retention did not pass {checkpoint}: {_log_starts(bootstrap, topic, 2)}"
        time.sleep(0.2)
        _produce_now(bootstrap, topic, 2, 2, "roll")  # an append rolls the segment, so the old one can go
        if all(start > checkpoint[p] for p, start in _log_starts(bootstrap, topic, 2).items()):
            break
    _alter_topic(bootstrap, topic, {"retention.ms": "-1", "segment.ms": "604800000"})
    starts, stable_since = _log_starts(bootstrap, topic, 2), time.monotonic()
    while time.monotonic() - stable_since < 2:  # a deletion in flight when retention was lifted
        time.sleep(0.25)
        now = _log_starts(bootstrap, topic, 2)
        if now != starts:
            starts, stable_since = now, time.monotonic()
    _produce_now(bootstrap, topic, 2, 200, "after")
    remaining = read_kafka(bootstrap, [topic])
    assert {p: remaining[(topic, p)][0].offset for p in range(2)} == starts

    # The plan names topic, partition and the offsets lost, and writes nothing.
    before = snapshot_bucket(s3, bucket)
    expected = "; ".join(f"{topic}[{p}] offsets {checkpoint[p]}..{starts[p] - 1}" for p in range(2))
    plan = KafkaBackupPlanOperator(task_id="plan", topics=[topic], bucket=bucket, prefix=prefix)
    with pytest.raises(DataLossError, match=re.escape(expected)):
        plan.execute({"run_id": "manual__retention"})
    capfd.readouterr()
    assert run_dag("kafka_backup", conf).state == "failed"
    assert expected in "".join(capfd.readouterr()) + caplog.text
    assert snapshot_bucket(s3, bucket) == before
    assert _checkpoint(bucket, prefix) == variable

    # Accepting the loss: the run backs up what remains and records the gap.
    assert run_dag("kafka_backup", {**conf, "allow_data_loss": True}).state == "success"
    manifests = list(load_manifests(store, prefix))
    assert len(manifests) == 2
    (second,) = [m for m in manifests if any(r.lost_start is not None for r in m.ranges)]
    assert sorted((r.partition, r.lost_start, r.lost_end, r.start) for r in second.ranges) == [
        (p, checkpoint[p], starts[p], starts[p]) for p in range(2)]
    expected_backup = {tp: first[tp] + remaining[tp] for tp in first}
    _assert_exact(expected_backup, read_backup(store, prefix))

    report = verify_backup(store, prefix)
    assert report.ok, report.problems
    assert report.topics[topic].lost_offsets == sum(starts[p] - checkpoint[p] for p in range(2))

    target = f"{topic}-restored"
    restore_conf = {"topics": [topic], "bucket": bucket, "prefix": prefix, "topic_mapping": {topic: target},
                    "topic_configs": KEEP_FOREVER}
    assert run_dag("kafka_restore", restore_conf).state == "success"
    _assert_restored(expected_backup, read_kafka(bootstrap, [target]), {topic: target})
