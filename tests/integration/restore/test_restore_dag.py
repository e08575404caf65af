"""The ``kafka_restore`` DAG and the restore engine against the real broker and S3 endpoint."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from types import SimpleNamespace

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import NewTopic

from airflow_kafka_backup.engine.errors import ConfigurationError, IntegrityError
from airflow_kafka_backup.engine.restore.loop import progress_group, read_progress
from airflow_kafka_backup.engine.restore.manifest import load_offset_map, load_offset_map_chunks, write_restore_manifest
from airflow_kafka_backup.engine.restore.offset_map import OffsetMapChunk
from airflow_kafka_backup.engine.restore.planning import RestoreSettings, plan_restore
from airflow_kafka_backup.engine.storage.key_layout import restore_prefix, safe_run_id
from airflow_kafka_backup.engine.storage.manifest import load_manifests
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from airflow_kafka_backup.engine.verify import verify_backup
from airflow_kafka_backup.operators.restore import KafkaRestorePlanOperator, KafkaRestoreWorkUnitsOperator
from tests.helpers import (
    create_topics,
    produce_tricky,
    read_kafka,
    rewrite_as_format_1,
    run_dag,
    verify_finished_restore,
)

pytestmark = pytest.mark.integration

KEEP_FOREVER = {"retention.ms": "-1"}  # the corpus has 2020 timestamps


def _backup(topics, bucket, **extra):
    conf = {"topics": topics, "bucket": bucket, "prefix": "bk", "flush_size": 400, **extra}
    assert run_dag("kafka_backup", conf).state == "success"


def _backed_up_topic(bootstrap: str, bucket: str, name: str, records: int, seed: int,
                     flush_size: int) -> tuple[str, str]:
    """A one-partition tricky topic, backed up under ``bk``, and an empty target topic to restore it into."""
    topic = f"{name}-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, NewTopic(topic, 1, 1, config=KEEP_FOREVER))
    produce_tricky(bootstrap, topic, 1, records, seed=seed)
    _backup([topic], bucket, flush_size=flush_size)
    target = f"{topic}-restored"
    create_topics(bootstrap, NewTopic(target, 1, 1, config=KEEP_FOREVER))
    return topic, target


def _restore_conf(topics, bucket, mapping, **extra) -> dict:
    return {"topics": topics, "bucket": bucket, "prefix": "bk", "topic_mapping": mapping,
            "topic_configs": KEEP_FOREVER, **extra}


def _fields(record):
    """Everything a restore must carry over; offsets differ by design (recorded in the offset map)."""
    return (record.partition, record.key, record.value, record.headers, record.timestamp, record.timestamp_type)


def _assert_restored(source: dict, target: dict, mapping: dict) -> None:
    for (topic, partition), records in source.items():
        restored = target[(mapping[topic], partition)]
        assert [_fields(r) for r in restored] == [_fields(r) for r in records], f"{topic}[{partition}]"


def test_restore_round_trip_is_byte_exact_with_offset_map(corpus, bucket, s3):
    topics = corpus["all"]
    _backup(topics, bucket)
    source = read_kafka(corpus["bootstrap"], topics)
    mapping = {t: f"{t}-restored-{uuid.uuid4().hex[:4]}" for t in topics}
    dag_run = run_dag("kafka_restore", _restore_conf(topics, bucket, mapping))
    assert dag_run.state == "success"
    target = read_kafka(corpus["bootstrap"], list(mapping.values()))
    _assert_restored(source, target, mapping)

    # The offset map sends every source offset to the target offset its record landed at.
    store = S3ObjectStore(client=s3, bucket=bucket)
    rprefix = restore_prefix("bk", f"kafka_restore/{dag_run.run_id}")
    assert rprefix == f"bk/_restores/kafka_restore/{safe_run_id(dag_run.run_id)}"
    for (topic, partition), records in source.items():
        offset_map = load_offset_map(store, rprefix, mapping[topic], partition)
        restored = target[(mapping[topic], partition)]
        assert offset_map.records == len(records)
        assert [offset_map.first_target_at_or_after(r.offset) for r in records] == [r.offset for r in restored]
    manifest = json.loads(store.get_bytes(f"{rprefix}/restore-manifest.json"))
    assert sum(p["records_restored"] for p in manifest["partitions"]) == sum(len(r) for r in source.values())


def test_a_restore_that_waits_for_approval_writes_its_units_after_it_from_the_runs_it_planned(
        airflow_stack, bucket, s3, monkeypatch):
    """The plan writes nothing and hands over only the units' digest and the manifests' pin; after the
    approval ``work_units`` plans again from those manifests (one committed meanwhile is left out),
    writes the units, and the restore lands every record once.

    ``dag.test()`` has no one to answer the approval, so the run goes without the step while its plan
    does what the approval-gated one does (``approval_follows``, as the DAG renders it from
    ``require_approval``); the step itself is tested under the real api-server
    (tests/integration/airflow/test_trigger_forms_ui.py).
    """
    bootstrap = airflow_stack["bootstrap"]
    topic, target = _backed_up_topic(bootstrap, bucket, "approved", 120, seed=29, flush_size=25)
    store = S3ObjectStore(client=s3, bucket=bucket)
    plan_execute, units_execute = KafkaRestorePlanOperator.execute, KafkaRestoreWorkUnitsOperator.execute
    seen: dict = {}

    def plan_with_an_approval_to_follow(self, context):
        self.approval_follows = True
        return plan_execute(self, context)

    def after_the_approval(self, context):
        seen["handed"] = self.plan
        seen["written before"] = list(store.list_keys(restore_prefix("bk", f"kafka_restore/{context['run_id']}")))
        # A backup commits meanwhile: a manifest the restore must leave out (unreadable, so it would fail if read).
        s3.put_object(Bucket=bucket, Key="bk/_manifests/run=zz_committed_during_the_approval.json", Body=b"{")
        return units_execute(self, context)

    monkeypatch.setattr(KafkaRestorePlanOperator, "execute", plan_with_an_approval_to_follow)
    monkeypatch.setattr(KafkaRestoreWorkUnitsOperator, "execute", after_the_approval)
    dag_run = run_dag("kafka_restore", _restore_conf([topic], bucket, {topic: target}))
    assert dag_run.state == "success"
    assert seen["written before"] == [] and "pending_work_units" in seen["handed"]
    assert len(json.dumps(seen["handed"])) < 1000
    units = [k for k in store.list_keys(restore_prefix("bk", f"kafka_restore/{dag_run.run_id}")) if "/work-units/" in k]
    assert len(units) == 1
    source = read_kafka(bootstrap, [topic])
    _assert_restored(source, read_kafka(bootstrap, [target]), {topic: target})  # every record, once


def test_point_in_time_cut_and_offset_bounds(corpus, bucket):
    topic = corpus["tricky"][0]
    _backup([topic], bucket)
    source = read_kafka(corpus["bootstrap"], [topic])
    timestamps = sorted(r.timestamp for rs in source.values() for r in rs)
    cut = timestamps[len(timestamps) // 2]
    target = f"{topic}-pit-{uuid.uuid4().hex[:4]}"
    conf = _restore_conf([topic], bucket, {topic: target}, until_timestamp=cut,
                         offset_bounds={topic: {"1": [10, 500]}})
    assert run_dag("kafka_restore", conf).state == "success"
    restored = read_kafka(corpus["bootstrap"], [target])
    for (_, partition), records in source.items():
        expected = [r for r in records if r.timestamp < cut and (partition != 1 or 10 <= r.offset < 500)]
        assert [_fields(r) for r in restored[(target, partition)]] == [_fields(r) for r in expected]
        assert expected, "the cut must leave something to restore"


def test_commit_interval_param_sets_the_transactions_per_restore(airflow_stack, bucket):
    """``commit_interval_seconds`` reaches the engine: 0 commits each segment in a transaction of its own,
    the default (5 s) takes them all in one. Each commit leaves a marker, which takes an offset."""
    bootstrap = airflow_stack["bootstrap"]
    topic, target = _backed_up_topic(bootstrap, bucket, "interval", 400, seed=41, flush_size=100)
    source = read_kafka(bootstrap, [topic])[(topic, 0)]
    for interval, transactions in ((0, 4), (None, 1)):
        into = f"{target}-{interval}"
        extra = {} if interval is None else {"commit_interval_seconds": interval}
        assert run_dag("kafka_restore", _restore_conf([topic], bucket, {topic: into}, **extra)).state == "success"
        assert [_fields(r) for r in read_kafka(bootstrap, [into])[(into, 0)]] == [_fields(r) for r in source]
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"watermarks-{uuid.uuid4().hex[:6]}"})
        try:
            _, high = consumer.get_watermark_offsets(TopicPartition(into, 0), timeout=10, cached=False)
        finally:
            consumer.close()
        assert high == len(source) + transactions, interval


def test_restore_into_a_brand_new_cluster_is_exact(airflow_stack, bucket, monkeypatch):
    """Disaster recovery: a backup restored into a cluster built afresh, one that has never stored a
    transaction or a consumer offset: the restore creates the topic, the broker its transaction state and
    ``__consumer_offsets``, and every record lands exactly once."""
    from devstack.kafka_broker import start_broker

    if os.environ.get("KAFKA_BOOTSTRAP"):
        pytest.skip("KAFKA_BOOTSTRAP points at an external broker; this test needs a new broker of its own")
    bootstrap = airflow_stack["bootstrap"]
    topic, _ = _backed_up_topic(bootstrap, bucket, "rebuilt", 300, seed=51, flush_size=100)
    source = read_kafka(bootstrap, [topic])[(topic, 0)]
    fresh = start_broker()
    try:
        # The very first offset fetch of a brand-new cluster is often refused (NOT_COORDINATOR) while the
        # broker creates __consumer_offsets: 4 times in 5 in a script, never yet in this test, so the
        # retry itself is unit-tested (test_progress_is_read_again_while_the_group_coordinator_is_not_ready).
        group = Consumer({"bootstrap.servers": fresh.bootstrap, "group.id": progress_group("first-fetch")})
        try:
            assert read_progress(group, topic, 0).next_offset is None
        finally:
            group.close()
        extra = {"bootstrap.servers": fresh.bootstrap, "group.id": "airflow-kafka-backup"}
        monkeypatch.setenv("AIRFLOW_CONN_KAFKA_REBUILT", json.dumps({"conn_type": "kafka", "extra": extra}))
        conf = _restore_conf([topic], bucket, {}, kafka_conn_id="kafka_rebuilt")
        assert run_dag("kafka_restore", conf).state == "success"
        restored = read_kafka(fresh.bootstrap, [topic])[(topic, 0)]
        assert [_fields(r) for r in restored] == [_fields(r) for r in source]
    finally:
        fresh.stop()


def test_iso_timestamps_are_accepted_and_bad_ones_named():
    s = RestoreSettings.create(topics=["t"], from_timestamp="2020-09-13T12:26:40Z", until_timestamp=1600000000001)
    assert (s.from_timestamp, s.until_timestamp) == (1600000000000, 1600000000001)
    with pytest.raises(ConfigurationError, match="until_timestamp must be ISO-8601"):
        RestoreSettings.create(topics=["t"], until_timestamp="yesterday")


def test_dry_run_writes_nothing(corpus, bucket, s3):
    topic = corpus["tricky"][1]
    _backup([topic], bucket)
    before = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    target = f"{topic}-dry-{uuid.uuid4().hex[:4]}"
    assert run_dag("kafka_restore", _restore_conf([topic], bucket, {topic: target}, dry_run=True)).state == "success"
    assert {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]} == before
    consumer = Consumer({"bootstrap.servers": corpus["bootstrap"], "group.id": "x"})
    assert target not in consumer.list_topics(timeout=10).topics
    consumer.close()


def test_target_with_too_few_partitions_fails_before_producing(corpus, bucket):
    from airflow_kafka_backup.operators.restore import KafkaRestorePlanOperator

    topic = corpus["tricky"][2]
    _backup([topic], bucket)
    target = f"{topic}-small-{uuid.uuid4().hex[:4]}"
    create_topics(corpus["bootstrap"], NewTopic(target, 1, 1))
    plan = KafkaRestorePlanOperator(task_id="plan", topics=[topic], topic_mapping={topic: target},
                                    bucket=bucket, prefix="bk")
    with pytest.raises(ConfigurationError, match=f"target topic {target} has 1 partitions but the backup needs 3"):
        plan.execute({"run_id": "manual__small"})
    with pytest.raises(ConfigurationError, match="No committed backup of topic\\(s\\) nope.*holds: " + topic):
        KafkaRestorePlanOperator(task_id="p", topics=["nope"], bucket=bucket, prefix="bk").execute({"run_id": "r"})


def test_targets_that_would_not_keep_the_records_fail_before_anything_is_written(corpus, bucket):
    """The corpus's 2020 timestamps against Kafka's default 7-day retention and a LogAppendTime topic."""
    from airflow_kafka_backup.operators.restore import KafkaRestorePlanOperator

    topic, bootstrap = corpus["tricky"][0], corpus["bootstrap"]
    _backup([topic], bucket)
    run = uuid.uuid4().hex[:4]
    short, stamping, new = f"{topic}-short-{run}", f"{topic}-lat-{run}", f"{topic}-new-{run}"
    create_topics(bootstrap, NewTopic(short, 3, 1),
                  NewTopic(stamping, 3, 1, config={**KEEP_FOREVER, "message.timestamp.type": "LogAppendTime"}))
    week = {"retention.ms": "604800000"}
    refusals = {  # target: (topic_configs, the refusal); the source's recorded configs keep records for ever
        short: ({}, rf"go back to 2020-09-13T.*retention.ms=604800000 \(7 days\).*--entity-name {short} "
                    "--add-config retention.ms=-1"),
        stamping: ({}, f"{stamping} has message.timestamp.type=LogAppendTime"),
        new: (week, r'go back to 2020-09-13T.*retention.ms=604800000.*add "retention.ms": "-1" to topic_configs'),
    }
    no_xcom = SimpleNamespace(xcom_push=lambda key, value: None)
    for target, (configs, problem) in refusals.items():
        for dry_run in (True, False):
            plan = KafkaRestorePlanOperator(task_id="plan", topics=[topic], topic_mapping={topic: target},
                                            bucket=bucket, prefix="bk", topic_configs=configs, dry_run=dry_run)
            with pytest.raises(ConfigurationError, match=problem):
                plan.execute({"dag": SimpleNamespace(dag_id="kafka_restore"), "run_id": "manual__keep", "ti": no_xcom})
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "x"})
    assert new not in consumer.list_topics(timeout=10).topics
    consumer.close()
    assert not any(read_kafka(bootstrap, [short, stamping]).values())


# 0: a transaction per segment; 0.05 s: transactions of several segments, so the kill most likely
# lands in one that holds some (the retry redoes all of them).
@pytest.mark.parametrize("commit_interval_s", [0, 0.05])
def test_killed_restore_resumes_exactly_once(airflow_stack, bucket, s3, commit_interval_s):
    bootstrap = airflow_stack["bootstrap"]
    topic, target = _backed_up_topic(bootstrap, bucket, "kill", 30_000, seed=21, flush_size=300)
    restore_id = f"kill-test-{uuid.uuid4().hex[:6]}"
    killed_at, command = _kill_restore_midway(airflow_stack, bucket, topic, target, restore_id, commit_interval_s)
    assert killed_at is not None and 3_000 <= killed_at < 30_000, f"killed midway, not at {killed_at}"

    retry = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert retry.returncode == 0, retry.stderr[-3000:]
    result = json.loads(retry.stdout.strip().splitlines()[-1])
    # A commit the worker sent just before the kill may still complete on the broker (the retry's
    # init_transactions settles it first), so the retry resumes where we read the progress or later.
    resumed = result["resumed_from"]
    assert resumed is not None and resumed >= killed_at and result["segments_skipped_as_done"] == resumed // 300

    source, restored = read_kafka(bootstrap, [topic]), read_kafka(bootstrap, [target])
    _assert_restored(source, restored, {topic: target})
    store = S3ObjectStore(client=s3, bucket=bucket)
    settings = RestoreSettings.create(topics=[topic], topic_mapping={topic: target})
    units = plan_restore(store, "bk", settings).partitions
    (summary,) = verify_finished_restore(bootstrap, store, "bk", restore_id, units)
    assert summary.records_restored == 30_000
    # The killed worker's chunk of the transaction it had open, if it wrote one, is not the one read.
    assert len(summary.attempts) == 2 and summary.attempts[1][0] == resumed


def _tamper(s3, bucket, key, body: bytes | None) -> None:
    if body is None:
        s3.delete_object(Bucket=bucket, Key=key)
    else:
        s3.put_object(Bucket=bucket, Key=key, Body=body)


@pytest.mark.parametrize("damage", ["corrupted", "truncated", "missing"])
def test_damaged_segment_fails_naming_the_object_and_produces_nothing_from_it(corpus, bucket, s3, damage):
    topic = corpus["tricky"][0]
    _backup([topic], bucket)
    store = S3ObjectStore(client=s3, bucket=bucket)
    first = sorted((s for m in load_manifests(store, "bk") for s in m.segments if s.partition == 0),
                   key=lambda s: s.first_offset)[0]
    original = store.get_bytes(first.key)
    body = {"corrupted": original[:100] + bytes([original[100] ^ 1]) + original[101:],
            "truncated": original[: len(original) // 2], "missing": None}[damage]
    _tamper(s3, bucket, first.key, body)

    target = f"{topic}-{damage}-{uuid.uuid4().hex[:4]}"
    dag_run = run_dag("kafka_restore", _restore_conf([topic], bucket, {topic: target}))
    assert dag_run.state == "failed"
    if damage != "missing":  # a missing segment fails the plan, before any topic exists
        restored = read_kafka(corpus["bootstrap"], [target])
        assert restored[(target, 0)] == [], "nothing from the damaged segment (the partition's first) reached Kafka"

    settings = RestoreSettings.create(topics=[topic], topic_mapping={topic: target})
    if damage == "missing":
        named = re.escape(f"Segment s3://{bucket}/{first.key} (") + ".* missing from S3"
        with pytest.raises(IntegrityError, match=named):
            plan_restore(store, "bk", settings)
    else:
        from airflow_kafka_backup.engine.restore.loop import download_verified

        unit = next(p for p in plan_restore(store, "bk", settings).partitions if p.partition == 0)
        named = re.escape(f"Segment s3://{bucket}/{first.key} is corrupted or truncated")
        with pytest.raises(IntegrityError, match=named):
            download_verified(store, unit.segments[0])


def test_a_backup_written_before_crc64_still_restores_and_verifies_beside_newer_runs(airflow_stack, bucket, s3):
    """Manifests of format version 1 (every segment a sha256) keep working in a prefix that newer runs
    (CRC64-NVME, format 2) continue: verify (deep and quick), a restore of both, a damaged old segment."""
    from airflow_kafka_backup.engine.restore.loop import download_verified

    bootstrap = airflow_stack["bootstrap"]
    topic, target = _backed_up_topic(bootstrap, bucket, "fmt1", 900, seed=23, flush_size=400)
    rewrite_as_format_1(s3, bucket, "bk")
    produce_tricky(bootstrap, topic, 1, 500, seed=24, start=900)
    _backup([topic], bucket)  # a newer run continues the prefix with CRC64-NVME segments
    store = S3ObjectStore(client=s3, bucket=bucket)
    versions = {json.loads(store.get_bytes(key))["format_version"] for key in store.list_keys("bk/_manifests/")}
    assert versions == {1, 2}
    segments = [s for m in load_manifests(store, "bk") for s in m.segments]
    assert {s.checksum.algorithm for s in segments} == {"sha256", "crc64nvme"}
    for deep in (True, False):
        report = verify_backup(store, "bk", deep=deep)
        assert report.ok, report.problems

    assert run_dag("kafka_restore", _restore_conf([topic], bucket, {topic: target})).state == "success"
    source = read_kafka(bootstrap, [topic])
    assert len(source[(topic, 0)]) == 1400
    _assert_restored(source, read_kafka(bootstrap, [target]), {topic: target})

    old = next(s for s in segments if s.checksum.algorithm == "sha256")
    original = store.get_bytes(old.key)
    _tamper(s3, bucket, old.key, original[:100] + bytes([original[100] ^ 1]) + original[101:])
    settings = RestoreSettings.create(topics=[topic], topic_mapping={topic: target})
    (unit,) = plan_restore(store, "bk", settings).partitions
    damaged = next(seg for seg in unit.segments if seg.key == old.key)
    with pytest.raises(IntegrityError, match=re.escape(f"Segment s3://{bucket}/{old.key} is corrupted") + ".*sha256"):
        download_verified(store, damaged)
    assert any(old.key in p and "sha256" in p for p in verify_backup(store, "bk").problems)


def test_another_producer_writing_into_the_target_partition_leaves_the_restore_exact(airflow_stack, bucket, s3):
    """Only the first and last record of a transaction carry a delivery report; a foreign record landing
    between them is detected (the offsets are not consecutive) and that segment is redone with a report per
    record, so the offset map stays exact."""
    import threading

    from confluent_kafka import Producer

    from airflow_kafka_backup.engine.restore.loop import PRODUCER_OVERRIDES, restore_partition, transactional_id

    bootstrap = airflow_stack["bootstrap"]
    topic, target = _backed_up_topic(bootstrap, bucket, "shared", 10_000, seed=33, flush_size=2_500)

    stop = threading.Event()

    def foreign_writer() -> None:
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        i = 0
        while not stop.is_set():
            producer.produce(target, value=b"foreign-%d" % i, partition=0, headers=[("foreign", b"1")])
            producer.poll(0)
            i += 1
            time.sleep(0.001)
        assert producer.flush(30) == 0

    writer = threading.Thread(target=foreign_writer, daemon=True)
    writer.start()
    store = S3ObjectStore(client=s3, bucket=bucket)
    settings = RestoreSettings.create(topics=[topic], topic_mapping={topic: target})
    (unit,) = plan_restore(store, "bk", settings).partitions
    restore_id = "shared-target"
    group = Consumer({"bootstrap.servers": bootstrap, "group.id": progress_group(restore_id)})
    # Small batches sent at once: a segment's records go out in many produce requests, between which the
    # broker appends the foreign writer's records.
    config = {"bootstrap.servers": bootstrap, **PRODUCER_OVERRIDES, "batch.size": 4096, "linger.ms": 0,
              "transactional.id": transactional_id(restore_id, target, 0)}
    try:
        result = restore_partition(lambda: Producer(config), group, store, restore_prefix("bk", restore_id), unit)
    finally:
        stop.set()
        writer.join()
        group.close()
    assert result.records_restored == 10_000

    source = read_kafka(bootstrap, [topic])[(topic, 0)]
    landed = read_kafka(bootstrap, [target])[(target, 0)]
    ours = [r for r in landed if ("foreign", b"1") not in r.headers]
    assert len(landed) > len(ours), "the foreign writer wrote nothing"
    assert [_fields(r) for r in ours] == [_fields(r) for r in source]
    (summary,) = verify_finished_restore(bootstrap, store, "bk", restore_id, [unit])
    assert summary.records_restored == 10_000
    # The map sends each source offset to where its record landed, across the foreign records in between.
    rprefix = restore_prefix("bk", restore_id)
    chunks = load_offset_map_chunks(store, rprefix, target, 0, summary.attempts)
    assert any(len(chunk.runs) > 1 for chunk in chunks.values()), "no transaction was interleaved"
    write_restore_manifest(store, rprefix, restore_id, "bk", {}, [summary])
    offset_map = load_offset_map(store, rprefix, target, 0)
    by_offset = {r.offset: r for r in landed}
    assert [_fields(by_offset[offset_map.first_target_at_or_after(r.offset)]) for r in source] == [
        _fields(r) for r in source]


def test_a_zombie_whose_offset_map_chunk_lands_after_its_retry_finished_does_not_corrupt_the_map(
        airflow_stack, bucket, s3):
    """The window of a zombie: attempt Z has added its progress offsets to its transaction (so it was not fenced
    yet) and is writing its offset-map chunk when its retry R fences it. R restores everything and commits; only
    then does Z's chunk write land in S3, describing records Kafka aborted. The map must still be R's."""
    import threading

    from confluent_kafka import Producer

    from airflow_kafka_backup.engine.restore.loop import PRODUCER_OVERRIDES, restore_partition, transactional_id

    bootstrap = airflow_stack["bootstrap"]
    topic, target = _backed_up_topic(bootstrap, bucket, "zombie", 2_000, seed=44, flush_size=500)
    store = S3ObjectStore(client=s3, bucket=bucket)
    settings = RestoreSettings.create(topics=[topic], topic_mapping={topic: target})
    (unit,) = plan_restore(store, "bk", settings).partitions
    restore_id = f"zombie-{uuid.uuid4().hex[:6]}"
    rprefix = restore_prefix("bk", restore_id)
    config = {"bootstrap.servers": bootstrap, **PRODUCER_OVERRIDES,
              "transactional.id": transactional_id(restore_id, target, 0)}

    writing, release = threading.Event(), threading.Event()

    class ChunkWritesHeldBack(S3ObjectStore):
        """Z's store: its offset-map chunk writes wait until R has finished."""

        def put_bytes(self, key: str, data: bytes, content_type: str = "application/json") -> None:
            if "/offset-map/" in key:
                writing.set()
                release.wait(120)
            super().put_bytes(key, data, content_type)

    zombie_failure: list[BaseException] = []

    def zombie() -> None:
        group = Consumer({"bootstrap.servers": bootstrap, "group.id": progress_group(restore_id)})
        try:
            restore_partition(lambda: Producer(config), group, ChunkWritesHeldBack(client=s3, bucket=bucket),
                              rprefix, unit, commit_interval_s=0)
        except BaseException as failure:  # expected: fenced at its commit
            zombie_failure.append(failure)
        finally:
            group.close()

    z = threading.Thread(target=zombie, daemon=True)
    z.start()
    assert writing.wait(120), "the zombie never reached its chunk write"
    group = Consumer({"bootstrap.servers": bootstrap, "group.id": progress_group(restore_id)})
    try:
        result = restore_partition(lambda: Producer(config), group, store, rprefix, unit, commit_interval_s=0)
    finally:
        group.close()
    release.set()
    z.join(180)
    assert not z.is_alive() and zombie_failure, "the zombie committed after being fenced"
    assert "fenced" in str(zombie_failure[0]).lower(), zombie_failure[0]
    assert result.records_restored == 2_000 and result.resumed_from is None

    (summary,) = verify_finished_restore(bootstrap, store, "bk", restore_id, [unit])
    ((_, retry_attempt),) = summary.attempts
    chunks = {k: OffsetMapChunk.from_json(store.get_bytes(k)) for k in store.list_keys(f"{rprefix}/offset-map/")}
    (late,) = [k for k in chunks if not k.endswith(f"-{retry_attempt}.json")]
    assert len(chunks) == 4 + 1, "the zombie's late chunk did not land beside R's four"
    # It describes records Kafka aborted, at other target offsets than R's: read, it would corrupt the map.
    assert chunks[late].runs != chunks[late.rsplit("-", 1)[0] + f"-{retry_attempt}.json"].runs
    write_restore_manifest(store, rprefix, restore_id, "bk", {}, [summary])
    offset_map = load_offset_map(store, rprefix, target, 0)
    source = read_kafka(bootstrap, [topic])[(topic, 0)]
    landed = {r.offset: r for r in read_kafka(bootstrap, [target])[(target, 0)]}
    assert len(landed) == 2_000  # Z's records were aborted: read_committed sees R's only
    assert [_fields(landed[offset_map.first_target_at_or_after(r.offset)]) for r in source] == [
        _fields(r) for r in source]


def _kill_restore_midway(airflow_stack, bucket: str, topic: str, target: str, restore_id: str,
                         commit_interval_s: float = 0) -> tuple[int | None, list[str]]:
    """Run the restore engine as ``restore_id`` in a process of its own and SIGKILL it once 3,000 records'
    progress is committed; returns the progress last seen and the worker's command (to run it again)."""
    bootstrap = airflow_stack["bootstrap"]
    args = json.dumps({"bootstrap": bootstrap, "endpoint_url": airflow_stack["endpoint_url"], "bucket": bucket,
                       "prefix": "bk", "topic": topic, "target": target, "restore_id": restore_id,
                       "commit_interval_s": commit_interval_s})
    command = [sys.executable, "-m", "tests.integration.restore_worker", args]
    worker = subprocess.Popen(command, cwd=os.getcwd(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # read_uncommitted: librdkafka then fetches the committed offsets without require_stable, so a poll
    # returns at once instead of waiting out each open transaction's pending progress offsets (which can
    # outlast a restore this small, leaving nothing mid-way to kill).
    progress = Consumer({"bootstrap.servers": bootstrap, "group.id": progress_group(restore_id),
                         "isolation.level": "read_uncommitted"})
    deadline = time.monotonic() + 120
    killed_at = None
    # Killed once some progress is committed, so that the retry has something to resume from. The
    # progress is not read again after the kill: the dead worker's open transaction may hold progress
    # offsets, which a read_committed offset fetch waits on until the broker times the transaction out.
    while time.monotonic() < deadline and worker.poll() is None:
        killed_at = read_progress(progress, target, 0).next_offset
        if (killed_at or 0) >= 3_000:
            break
        time.sleep(0.02)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    progress.close()
    assert worker.returncode == -signal.SIGKILL, "the restore finished before it could be killed"
    return killed_at, command


def test_triggering_a_killed_restore_again_never_doubles_the_target(airflow_stack, bucket, s3, capfd):
    """A restore killed midway, then triggered again as a new run: refused by default, naming the killed run;
    with if_target_not_empty=resume, it continues the killed restore and every record lands exactly once."""
    bootstrap = airflow_stack["bootstrap"]
    topic, target = _backed_up_topic(bootstrap, bucket, "again", 30_000, seed=23, flush_size=300)
    killed = f"kafka_restore/manual__killed-{uuid.uuid4().hex[:6]}"  # the DAG's restore id: <dag id>/<run id>
    killed_at, _ = _kill_restore_midway(airflow_stack, bucket, topic, target, killed)
    assert killed_at is not None and 3_000 <= killed_at < 30_000
    held = sum(len(r) for r in read_kafka(bootstrap, [target], isolation="read_uncommitted").values())
    assert 0 < held < 30_000

    conf = _restore_conf([topic], bucket, {topic: target})
    capfd.readouterr()
    refused = run_dag("kafka_restore", conf)
    assert refused.state == "failed"
    task_log = capfd.readouterr().out  # dag.test() logs the tasks to stdout
    assert re.search(rf"{target} holds [\d,]+ records\. They hold records of the unfinished restore {killed}",
                     task_log), "the refusal names the target and the killed run"
    assert sum(len(r) for r in read_kafka(bootstrap, [target], isolation="read_uncommitted").values()) == held

    resumed = run_dag("kafka_restore", {**conf, "if_target_not_empty": "resume"})
    assert resumed.state == "success"
    source, restored = read_kafka(bootstrap, [topic]), read_kafka(bootstrap, [target])
    _assert_restored(source, restored, {topic: target})  # exactly once: nothing doubled, nothing missing
    store = S3ObjectStore(client=s3, bucket=bucket)
    manifest = json.loads(store.get_bytes(f"{restore_prefix('bk', killed)}/restore-manifest.json"))
    assert sum(p["records_restored"] for p in manifest["partitions"]) == 30_000
