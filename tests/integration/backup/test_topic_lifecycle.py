"""A living cluster, on the real broker and S3 endpoint: topics recreated, selected by pattern, deleted.

Each test runs the shipped DAGs through ``dag.test()`` and reads back what landed in S3 and in Kafka.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.error import KafkaException

from airflow_kafka_backup.engine.backup.backlog import measure_backlog
from airflow_kafka_backup.engine.backup.planning import resolve_topics
from airflow_kafka_backup.engine.formats.compression import get_compression
from airflow_kafka_backup.engine.formats.segment_codec import get_format
from airflow_kafka_backup.engine.restore.manifest import load_offset_map
from airflow_kafka_backup.engine.storage.checksums import ChecksumReader
from airflow_kafka_backup.engine.storage.key_layout import restore_prefix
from airflow_kafka_backup.engine.storage.manifest import list_manifest_keys, load_manifests
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from airflow_kafka_backup.engine.topics.metadata import topic_ids
from airflow_kafka_backup.engine.topics.selection import TopicSelection
from airflow_kafka_backup.operators.backup import checkpoint_variable_key
from devstack.airflow_env import REPO
from devstack.s3_server import ACCESS_KEY, REGION, SECRET_KEY
from tests.helpers import create_topics, produce_tricky, read_kafka, run_dag, snapshot_bucket

pytestmark = pytest.mark.integration

KEEP_FOREVER = {"retention.ms": "-1"}
PREFIX = "life"


def _backup(bucket: str, topics: list[str], **extra):
    return run_dag("kafka_backup", {"topics": topics, "bucket": bucket, "prefix": PREFIX, "flush_size": 400,
                                    **extra})


def _restore(bucket: str, topics: list[str], mapping: dict, **extra):
    return run_dag("kafka_restore", {"topics": topics, "bucket": bucket, "prefix": PREFIX, "topic_mapping": mapping,
                                     "topic_configs": KEEP_FOREVER, **extra})


def _recreate(bootstrap: str, topic: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([topic], operation_timeout=30)[topic].result()
    deadline = time.monotonic() + 60
    while True:  # deletion completes asynchronously; until it has, creating the name again is refused
        try:
            create_topics(bootstrap, NewTopic(topic, partitions, 1, config=KEEP_FOREVER))
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _fields(record):
    return (record.partition, record.key, record.value, record.headers, record.timestamp, record.timestamp_type)


def _backup_by_incarnation(store: S3ObjectStore) -> dict[tuple[str, str | None, int], list]:
    """Every committed record, by (topic, topic ID of the segment, partition), checked against its checksum."""
    out: dict[tuple[str, str | None, int], list] = defaultdict(list)
    seen: set[str] = set()
    for manifest in load_manifests(store, PREFIX):
        fmt, codec = get_format(manifest.settings.segment_format), get_compression(manifest.settings.compression)
        for seg in manifest.segments:
            if seg.key in seen:
                continue
            seen.add(seg.key)
            reader = ChecksumReader(store.open_stream(seg.key), [seg.checksum.algorithm])
            out[(seg.topic, seg.topic_id, seg.partition)].extend(fmt.decode(reader, codec))
            assert reader.checksum() == seg.checksum
    return {k: sorted(v, key=lambda r: r.offset) for k, v in out.items()}


@pytest.mark.parametrize("new_records", [1500, 300], ids=["grew-past-the-checkpoint", "still-shorter"])
def test_a_recreated_topic_is_a_new_incarnation_backed_up_whole(airflow_stack, bucket, s3, new_records):
    bootstrap = airflow_stack["bootstrap"]
    topic = f"life-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, NewTopic(topic, 1, 1, config=KEEP_FOREVER))
    produce_tricky(bootstrap, topic, 1, 1000, seed=1)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    old_id = topic_ids(admin, [topic])[topic]
    old_records = read_kafka(bootstrap, [topic])[(topic, 0)]
    assert _backup(bucket, [topic]).state == "success"

    _recreate(bootstrap, topic)
    produce_tricky(bootstrap, topic, 1, new_records, seed=2, start=5000)  # later timestamps than the old ones
    new_id = topic_ids(admin, [topic])[topic]
    assert new_id != old_id
    new_records_in_kafka = read_kafka(bootstrap, [topic])[(topic, 0)]
    old_bytes = snapshot_bucket(s3, bucket)
    assert _backup(bucket, [topic]).state == "success"

    store = S3ObjectStore(client=s3, bucket=bucket)
    backed_up = _backup_by_incarnation(store)
    assert [_fields(r) for r in backed_up[(topic, old_id, 0)]] == [_fields(r) for r in old_records]
    assert [_fields(r) for r in backed_up[(topic, new_id, 0)]] == [_fields(r) for r in new_records_in_kafka]
    assert [r.offset for r in backed_up[(topic, new_id, 0)]] == list(range(new_records))
    # The old incarnation's objects are untouched; the new one's keys are its own.
    after = snapshot_bucket(s3, bucket)
    assert {k: after[k] for k in old_bytes} == old_bytes
    new_segments = [s for m in load_manifests(store, PREFIX) for s in m.segments if s.topic_id == new_id]
    assert new_segments and all(f"/{topic}/topic_id={new_id}/partition=0/" in s.key for s in new_segments)
    manifests = list(load_manifests(store, PREFIX))
    assert [m.incarnations[topic] for m in manifests] in ([[old_id], [old_id, new_id]], [[old_id, new_id], [old_id]])

    _the_cli_and_the_backlog_tell_the_incarnations_apart(airflow_stack, bucket, topic, old_id, new_id, new_segments)

    # A restore takes the latest incarnation by default, the one named by incarnations, and the one
    # live at until_timestamp.
    latest, named, pit = (f"{topic}-{name}" for name in ("latest", "named", "pit"))
    assert _restore(bucket, [topic], {topic: latest}).state == "success"
    assert _restore(bucket, [topic], {topic: named}, incarnations={topic: old_id}).state == "success"
    cut = 1_600_000_000_000 + 3_000_000  # after every old record, before every new one
    assert _restore(bucket, [topic], {topic: pit}, until_timestamp=cut).state == "success"
    restored = read_kafka(bootstrap, [latest, named, pit])
    assert [_fields(r) for r in restored[(latest, 0)]] == [_fields(r) for r in new_records_in_kafka]
    assert [_fields(r) for r in restored[(named, 0)]] == [_fields(r) for r in old_records]
    assert [_fields(r) for r in restored[(pit, 0)]] == [_fields(r) for r in old_records]


def _the_cli_and_the_backlog_tell_the_incarnations_apart(airflow_stack, bucket: str, topic: str, old_id: str,
                                                         new_id: str, new_segments: list) -> None:
    """``kafka-backup ls`` lists both incarnations, ``inspect`` names a segment's, ``verify`` checks each chain on its
    own; the backlog counts the whole new incarnation as waiting for a backup that knows only the old one."""
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "AWS_DEFAULT_REGION": REGION}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "airflow_kafka_backup.cli", *args, "--bucket", bucket, "--prefix",
                               PREFIX, "--endpoint-url", airflow_stack["endpoint_url"]], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=120)

    listed = cli("ls")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines() if line.startswith(topic)]
    assert [row[1] for row in rows] == [old_id, new_id], listed.stdout  # oldest first
    inspected = cli("inspect", new_segments[0].key, "--limit", "1")
    assert inspected.returncode == 0 and f"topic ID {new_id}" in inspected.stderr, inspected.stderr
    assert len(inspected.stdout.splitlines()) == 1  # stdout stays JSON lines
    verified = cli("verify", "--quick")
    assert verified.returncode == 0 and f"incarnation {old_id}" in verified.stdout, verified.stdout

    admin = AdminClient({"bootstrap.servers": airflow_stack["bootstrap"]})
    produce_tricky(airflow_stack["bootstrap"], topic, 1, 50, seed=12, start=9000)
    end = sum(len(r) for r in read_kafka(airflow_stack["bootstrap"], [topic]).values())
    checkpoints = {(topic, 0): end - 50}
    selection = TopicSelection.parse([f"re:{topic}"])
    assert measure_backlog(admin, selection, checkpoints, "read_committed", current_ids={topic: new_id}).records == 50
    assert measure_backlog(admin, selection, checkpoints, "read_committed", current_ids={topic: old_id}).records == end


def test_groups_are_translated_on_the_incarnation_restored(airflow_stack, bucket, s3):
    bootstrap = airflow_stack["bootstrap"]
    topic, group = f"life-g-{uuid.uuid4().hex[:6]}", f"billing-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, NewTopic(topic, 1, 1, config=KEEP_FOREVER))
    produce_tricky(bootstrap, topic, 1, 1000, seed=3)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    old_id = topic_ids(admin, [topic])[topic]
    _commit(bootstrap, group, topic, 600)
    assert _backup(bucket, [topic]).state == "success"
    _recreate(bootstrap, topic)
    produce_tricky(bootstrap, topic, 1, 1500, seed=4, start=5000)
    _commit(bootstrap, group, topic, 1200)
    assert _backup(bucket, [topic]).state == "success"

    store = S3ObjectStore(client=s3, bucket=bucket)
    for incarnation, source_offset in ((None, 1200), (old_id, 600)):
        target = f"{topic}-{source_offset}"
        extra = {"incarnations": {topic: incarnation}} if incarnation else {}
        run = _restore(bucket, [topic], {topic: target}, restore_consumer_groups=True,
                       group_mapping={group: f"{group}-{source_offset}"}, **extra)
        assert run.state == "success"
        offset_map = load_offset_map(store, restore_prefix(PREFIX, f"kafka_restore/{run.run_id}"), target, 0)
        expected = offset_map.first_target_at_or_after(source_offset)
        assert _committed(bootstrap, f"{group}-{source_offset}", target) == expected


def _commit(bootstrap: str, group: str, topic: str, offset: int) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        consumer.close()


def _committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
    finally:
        consumer.close()


def test_patterns_follow_new_and_deleted_topics(airflow_stack, bucket, s3):
    bootstrap = airflow_stack["bootstrap"]
    run = uuid.uuid4().hex[:6]
    first, skipped, later = f"pat-{run}-a", f"pat-{run}-b-skip", f"pat-{run}-c"
    create_topics(bootstrap, *(NewTopic(t, 2, 1, config=KEEP_FOREVER) for t in (first, skipped)))
    for seed, t in enumerate((first, skipped)):
        produce_tricky(bootstrap, t, 2, 200, seed=seed)
    selection = {"topics": [f"re:pat-{run}-.*"], "exclude_topics": ["re:.*-skip"]}
    assert _backup(bucket, **selection).state == "success"

    create_topics(bootstrap, NewTopic(later, 2, 1, config=KEEP_FOREVER))
    produce_tricky(bootstrap, later, 2, 300, seed=7)
    expected_later = read_kafka(bootstrap, [later])
    assert _backup(bucket, **selection).state == "success"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept: a collected client fails its futures
    admin.delete_topics([first], operation_timeout=30)[first].result()
    time.sleep(1)
    assert _backup(bucket, **selection).state == "success"  # the gone topic does not fail the run

    store = S3ObjectStore(client=s3, bucket=bucket)
    manifests = list(load_manifests(store, PREFIX))
    topics_backed_up = {r.topic for m in manifests for r in m.ranges}
    assert topics_backed_up == {first, later}
    backed_up = _backup_by_incarnation(store)
    for (t, p), records in expected_later.items():
        got = [r for (tt, _, pp), rs in backed_up.items() if (tt, pp) == (t, p) for r in rs]
        assert [_fields(r) for r in got] == [_fields(r) for r in records]  # from its first record
    last = json.loads(store.get_bytes(list_manifest_keys(store, PREFIX)[-1]))
    gone = [m.gone_topics for m in manifests if m.gone_topics]
    assert gone and gone[0][0]["topic"] == first and gone[0][0]["topic_id"]
    assert any(m.selection.get("resolved") == [later] for m in manifests), [m.selection for m in manifests]
    assert last  # every manifest reads back

    # The restore takes patterns too, matched against the topics in the backup.
    mapping = {t: f"{t}-r" for t in (first, later)}
    assert _restore(bucket, [f"re:pat-{run}-.*"], mapping).state == "success"
    restored = read_kafka(bootstrap, list(mapping.values()))
    assert sum(len(rs) for (t, _), rs in restored.items() if t == mapping[first]) == 200
    for (t, p), records in expected_later.items():
        assert [_fields(r) for r in restored[(mapping[t], p)]] == [_fields(r) for r in records]


def test_patterns_never_match_internal_topics(airflow_stack):
    admin = AdminClient({"bootstrap.servers": airflow_stack["bootstrap"]})
    assert "__consumer_offsets" in admin.list_topics(timeout=10).topics
    everything = resolve_topics(admin, TopicSelection.parse(["re:.*"])).topics
    assert everything and not [t for t in everything if t.startswith("__")]
    named = resolve_topics(admin, TopicSelection.parse(["__consumer_offsets"])).topics
    assert named == ["__consumer_offsets"]


def test_a_backup_from_before_topic_ids_keeps_working(airflow_stack, bucket, s3):
    """The previous release wrote no topic IDs: the same manifests without them, and a Variable without
    incarnations. The next run adopts the topic's ID and carries on; a restore reads both."""
    bootstrap = airflow_stack["bootstrap"]
    topic = _backup_as_the_previous_release(bootstrap, bucket, s3, "life-up", partitions=2, records=600, seed=5)
    produce_tricky(bootstrap, topic, 2, 400, seed=6, start=600)
    assert _backup(bucket, [topic]).state == "success"
    store = S3ObjectStore(client=s3, bucket=bucket)
    topic_id = topic_ids(AdminClient({"bootstrap.servers": bootstrap}), [topic])[topic]
    manifests = list(load_manifests(store, PREFIX))
    assert sorted(m.incarnations.get(topic) is None for m in manifests) == [False, True]
    new_segments = [s for m in manifests for s in m.segments if s.topic_id == topic_id]
    assert new_segments and not any("topic_id=" in s.key for s in new_segments)  # the plain layout, as before
    source = read_kafka(bootstrap, [topic])
    target = f"{topic}-r"
    assert _restore(bucket, [topic], {topic: target}).state == "success"
    restored = read_kafka(bootstrap, [target])
    for (_, p), records in source.items():
        assert [_fields(r) for r in restored[(target, p)]] == [_fields(r) for r in records]


def test_a_backup_from_before_topic_ids_refuses_a_topic_that_no_longer_fits(airflow_stack, bucket, s3):
    bootstrap = airflow_stack["bootstrap"]
    topic = _backup_as_the_previous_release(bootstrap, bucket, s3, "life-misfit", partitions=1, records=500, seed=8)
    _recreate(bootstrap, topic)
    produce_tricky(bootstrap, topic, 1, 100, seed=9)
    before = snapshot_bucket(s3, bucket)
    run = _backup(bucket, [topic])
    assert run.state == "failed"
    assert snapshot_bucket(s3, bucket) == before  # nothing written
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        states = {ti.task_id: ti.state for ti in session.query(TaskInstance).filter_by(
            dag_id="kafka_backup", run_id=run.run_id)}
    assert states["plan"] == "failed"


def _backup_as_the_previous_release(bootstrap: str, bucket: str, s3, name: str, partitions: int, records: int,
                                    seed: int) -> str:
    """A new topic backed up once, its manifests and checkpoint Variable then rewritten as the release before
    topic IDs wrote them; returns the topic."""
    from airflow.models.variable import Variable

    topic = f"{name}-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, NewTopic(topic, partitions, 1, config=KEEP_FOREVER))
    produce_tricky(bootstrap, topic, partitions, records, seed=seed)
    assert _backup(bucket, [topic]).state == "success"
    _strip_topic_ids(s3, bucket)
    key = checkpoint_variable_key(bucket, PREFIX)
    cached = json.loads(Variable.get(key))
    manifests = [k for k in snapshot_bucket(s3, bucket) if "/_manifests/" in k]
    Variable.set(key, json.dumps({"checkpoints": cached["checkpoints"], "manifests": len(manifests)}))
    return topic


def _strip_topic_ids(s3, bucket: str) -> None:
    """Rewrite every manifest as the release before topic IDs wrote it (which kept no commit log)."""
    for key, data in snapshot_bucket(s3, bucket).items():
        if "/_commits/" in key:
            s3.delete_object(Bucket=bucket, Key=key)
        if "/_manifests/" not in key:
            continue
        body = json.loads(data)
        body.pop("incarnations", None)
        for item in (*body["ranges"], *body["segments"]):
            item.pop("topic_id", None)
            item.pop("id_in_keys", None)
        for md in body["topics"]:
            md.pop("topic_id", None)
        s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(body, sort_keys=True, indent=1).encode() + b"\n")
