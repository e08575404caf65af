"""Restore drills on the real stack: the shipped kafka_restore_drill DAG against a real broker, moto S3 and
Airflow (dag.test). A drill passes on a sound backup; it fails, naming the partition and offset, when a segment
was altered together with its manifest checksum; scratch topics, its groups and restore folders are gone
afterwards either way; and it restores into a second broker."""

from __future__ import annotations

import json
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from airflow_kafka_backup.engine.formats.compression import get_compression
from airflow_kafka_backup.engine.formats.segment_codec import get_format
from airflow_kafka_backup.engine.records import Record
from airflow_kafka_backup.engine.storage.checksums import checksum_of, metadata
from airflow_kafka_backup.engine.storage.manifest import list_manifest_keys, load_manifests, write_manifest
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from tests.helpers import create_topics, encode_segment, produce_tricky, run_dag

pytestmark = pytest.mark.integration

RECORDS = 600  # over 2 partitions: 300 each
WINDOW = 200  # records_per_partition: source offsets 100..299 of each partition


def _backed_up_topic(bootstrap: str, s3_client, tag: str) -> dict:
    """A 2-partition topic of tricky records, a consumer group that stood inside (p0) and before (p1) the drill
    window, backed up by the shipped backup DAG into a fresh bucket."""
    run = uuid.uuid4().hex[:6]
    topic, group, bucket = f"drill-{tag}-{run}", f"billing-{tag}-{run}", f"drill-{tag}-{run}"
    s3_client.create_bucket(Bucket=bucket)
    create_topics(bootstrap, NewTopic(topic, 2, 1, config={"retention.ms": "-1"}))
    produce_tricky(bootstrap, topic, 2, RECORDS, seed=7)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, 0, 150), TopicPartition(topic, 1, 40)], asynchronous=False)
    consumer.close()
    prefix = "backups"
    conf = {"topics": [topic], "bucket": bucket, "prefix": prefix, "flush_size": 120, "consumer_groups": [group]}
    assert run_dag("kafka_backup", conf).state == "success"
    return {"topic": topic, "group": group, "bucket": bucket, "prefix": prefix,
            "scratch_prefix": f"scratch-{run}."}


def _drill_conf(backup: dict, **extra) -> dict:
    return {"topics": [backup["topic"]], "bucket": backup["bucket"], "prefix": backup["prefix"],
            "scratch_prefix": backup["scratch_prefix"], "records_per_partition": WINDOW, **extra}


def _drill_summary(airflow_stack, run_id: str) -> dict:
    """The drill task's XCom ``drill_summary`` of ``run_id``, from the metadata DB."""
    import sqlite3

    db = airflow_stack["env"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        (value,) = conn.execute("SELECT value FROM xcom WHERE dag_id = 'kafka_restore_drill' AND run_id = ? AND "
                                "task_id = 'drill' AND key = 'drill_summary'", (run_id,)).fetchone()
    value = json.loads(value)
    return json.loads(value) if isinstance(value, str) else value


def _reports(store: S3ObjectStore, prefix: str) -> list[dict]:
    keys = sorted(k for k in store.list_keys(f"{prefix}/_drills/") if "/_pending/" not in k)
    return [json.loads(store.get_bytes(k)) for k in keys]


def _assert_cleaned_up(bootstrap: str, store: S3ObjectStore, backup: dict) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = admin.list_topics(timeout=10).topics
    assert not [t for t in topics if t.startswith(backup["scratch_prefix"])]
    groups = {g.group_id for g in admin.list_consumer_groups(request_timeout=10).result().valid}
    assert not [g for g in groups if g.startswith(backup["scratch_prefix"]) or "kafka_restore_drill" in g]
    assert list(store.list_keys(f"{backup['prefix']}/_restores/")) == []
    assert list(store.list_keys(f"{backup['prefix']}/_drills/_pending/")) == []


def _drills_cli(airflow_stack, backup: dict, monkeypatch, capfd) -> tuple[int, str]:
    """``kafka-backup drills`` in-process, as an operator would run it."""
    from airflow_kafka_backup.cli import main
    from devstack.s3_server import ACCESS_KEY, REGION, SECRET_KEY

    for name, value in (("AWS_ACCESS_KEY_ID", ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
                        ("AWS_DEFAULT_REGION", REGION)):
        monkeypatch.setenv(name, value)
    capfd.readouterr()
    code = main(["drills", "--bucket", backup["bucket"], "--prefix", backup["prefix"],
                 "--endpoint-url", airflow_stack["endpoint_url"]])
    return code, capfd.readouterr().out


def _wait_until_gone(admin: AdminClient, topic: str) -> None:
    import time

    deadline = time.monotonic() + 30
    while topic in admin.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, f"{topic} is still listed"
        time.sleep(0.2)


@pytest.fixture
def store_of(s3_server):
    return lambda bucket: S3ObjectStore(client=s3_server.client(), bucket=bucket)


def test_drill_passes_on_a_sound_backup_and_cleans_up(airflow_stack, s3_server, store_of, capfd, caplog,
                                                      monkeypatch):
    bootstrap = airflow_stack["bootstrap"]
    backup = _backed_up_topic(bootstrap, s3_server.client(), "ok")
    store = store_of(backup["bucket"])

    run = run_dag("kafka_restore_drill", _drill_conf(backup))
    assert run.state == "success"

    (report,) = _reports(store, backup["prefix"])
    assert report["result"] == "passed" and report["failure"] is None
    summary = _drill_summary(airflow_stack, run.run_id)
    assert summary["result"] == "passed" and summary["records_compared"] == 2 * WINDOW
    assert summary["report"].startswith(f"s3://{backup['bucket']}/{backup['prefix']}/_drills/")
    assert summary["projected_rto_seconds"] == report["rto"]["projected_seconds"]
    assert report["source_cluster"] == report["target_cluster"] == bootstrap
    assert {p["partition"]: p["source_offsets"] for p in report["partitions"]} == {0: [100, 300], 1: [100, 300]}
    for p in report["partitions"]:
        assert p["source"]["records"] == p["restored"]["records"] == WINDOW
        assert p["source"]["sha256"] == p["restored"]["sha256"] and len(p["source"]["sha256"]) == 64
        assert p["scratch_topic"] == backup["scratch_prefix"] + backup["topic"]
    # The group stood at 150 on p0 (inside the window) and 40 on p1 (before it: the window's first record).
    checks = {c["partition"]: c for c in report["consumer_groups"]}
    assert checks[0]["ok"] and checks[0]["committed_offset"] == 50
    assert checks[1]["ok"] and checks[1]["committed_offset"] == 0
    assert checks[0]["scratch_group"] == backup["scratch_prefix"] + backup["group"]
    rto = report["rto"]
    assert rto["restored_records"] == 2 * WINDOW and rto["backup_records"] == RECORDS
    assert rto["projected_seconds"] > rto["restore_seconds"] > 0  # the whole backup takes longer than the window
    assert report["versions"]["airflow-kafka-backup"] and report["versions"]["librdkafka"]
    assert report["cleanup"]["problems"] == [] and len(report["cleanup"]["topics"]) == 1
    out = "".join(capfd.readouterr()) + caplog.text  # the task's log: stdout under dag.test(), or caplog
    assert "Restore drill kafka_restore_drill/" in out and "PASSED" in out and "projected RTO" in out
    _assert_cleaned_up(bootstrap, store, backup)
    code, listed = _drills_cli(airflow_stack, backup, monkeypatch, capfd)
    assert code == 0, listed
    (row,) = [line for line in listed.splitlines() if report["drill_id"] in line]
    assert " passed " in row and f" {2 * WINDOW} " in row


def _alter_record_in_segment(store: S3ObjectStore, prefix: str, topic: str, partition: int, offset: int,
                             update_manifest: bool) -> str:
    """Rewrite the segment holding ``offset`` with that record's value changed; with ``update_manifest`` also write
    the new checksum and size into the manifest, so the backup is self-consistent and only the source in Kafka can
    tell. Returns the segment's key."""
    from dataclasses import replace

    for manifest_key in list_manifest_keys(store, prefix):
        (manifest,) = load_manifests(store, prefix, [manifest_key])
        for i, seg in enumerate(manifest.segments):
            if seg.topic == topic and seg.partition == partition and seg.first_offset <= offset <= seg.last_offset:
                fmt, codec = manifest.settings.segment_format, manifest.settings.compression
                records = list(get_format(fmt).decode(store.open_stream(seg.key), get_compression(codec)))
                changed = [Record(r.partition, r.offset, r.timestamp, r.timestamp_type, r.key,
                                  b"tampered" if r.offset == offset else r.value, r.headers) for r in records]
                data = encode_segment(fmt, changed, codec)
                checksum = checksum_of(seg.checksum.algorithm, data)
                store.client.put_object(Bucket=store.bucket, Key=seg.key, Body=data, Metadata=metadata(checksum))
                if update_manifest:
                    manifest.segments[i] = replace(seg, checksum=checksum, bytes=len(data))
                    write_manifest(store, prefix, manifest)
                return seg.key
    raise AssertionError(f"no segment holds {topic}[{partition}] offset {offset}")


def test_drill_fails_naming_the_place_when_a_segment_and_its_checksum_were_altered(
        airflow_stack, s3_server, store_of, capfd, caplog, monkeypatch):
    bootstrap = airflow_stack["bootstrap"]
    backup = _backed_up_topic(bootstrap, s3_server.client(), "bad")
    store = store_of(backup["bucket"])

    # The segment alone: the restore's own checksum check stops the drill (an error, after the scratch topic
    # was created), and the drill still cleans up.
    key = _alter_record_in_segment(store, backup["prefix"], backup["topic"], 1, 257, update_manifest=False)
    assert run_dag("kafka_restore_drill", _drill_conf(backup)).state == "failed"
    (first,) = _reports(store, backup["prefix"])
    assert first["result"] == "failed" and "IntegrityError" in first["failure"]["error"]
    assert key in first["failure"]["error"] and first["cleanup"]["topics"] == [
        backup["scratch_prefix"] + backup["topic"]]
    _assert_cleaned_up(bootstrap, store, backup)

    # The segment and its manifest checksum: only the comparison with the source catches it.
    _alter_record_in_segment(store, backup["prefix"], backup["topic"], 1, 257, update_manifest=True)
    run = run_dag("kafka_restore_drill", _drill_conf(backup))
    assert run.state == "failed"

    (_, report) = _reports(store, backup["prefix"])
    assert _drill_summary(airflow_stack, run.run_id)["failure"]["source_offset"] == 257
    assert report["result"] == "failed"
    assert report["failure"]["partition"] == f"{backup['topic']}[1]"
    assert report["failure"]["source_offset"] == 257 and report["failure"]["target_offset"] == 157
    assert report["failure"]["reason"] == "value differs"
    by_partition = {p["partition"]: p for p in report["partitions"]}
    assert by_partition[0]["ok"] and by_partition[0]["source"]["sha256"] == by_partition[0]["restored"]["sha256"]
    assert not by_partition[1]["ok"] and by_partition[1]["source"]["sha256"] != by_partition[1]["restored"]["sha256"]
    out = "".join(capfd.readouterr()) + caplog.text  # the task's log: stdout under dag.test(), or caplog
    assert f"{backup['topic']}[1] differs first at source offset 257" in out
    _assert_cleaned_up(bootstrap, store, backup)
    code, listed = _drills_cli(airflow_stack, backup, monkeypatch, capfd)
    assert code == 1 and f"{backup['topic']}[1] at source offset 257: value differs" in listed, listed


def test_drill_into_a_second_broker(airflow_stack, s3_server, store_of, monkeypatch):
    from devstack.kafka_broker import start_broker

    bootstrap = airflow_stack["bootstrap"]
    backup = _backed_up_topic(bootstrap, s3_server.client(), "dr")
    store = store_of(backup["bucket"])
    other = start_broker()
    try:
        extra = {"bootstrap.servers": other.bootstrap, "group.id": "airflow-kafka-backup"}
        monkeypatch.setenv("AIRFLOW_CONN_KAFKA_DRILL_DC", json.dumps({"conn_type": "kafka", "extra": extra}))
        conf = _drill_conf(backup, target_kafka_conn_id="kafka_drill_dc", partitions_per_topic=1)
        # A topic under the scratch name that no drill made is refused before anything is written, and kept.
        foreign = backup["scratch_prefix"] + backup["topic"]
        create_topics(other.bootstrap, NewTopic(foreign, 1, 1))
        assert run_dag("kafka_restore_drill", conf).state == "failed"
        assert _reports(store, backup["prefix"]) == []
        other_admin = AdminClient({"bootstrap.servers": other.bootstrap})
        assert foreign in other_admin.list_topics(timeout=10).topics
        for future in other_admin.delete_topics([foreign], operation_timeout=30).values():
            future.result()
        _wait_until_gone(other_admin, foreign)
        # What a drill killed outright left behind (its pending record names it) is cleaned by the next drill.
        from airflow_kafka_backup.engine.drill.cleanup import ScratchResources, record_pending

        leftover = backup["scratch_prefix"] + "left-by-a-killed-drill"
        create_topics(other.bootstrap, NewTopic(leftover, 1, 1))
        record_pending(store, backup["prefix"], ScratchResources("kafka_restore_drill/killed", "kafka_drill_dc",
                                                                 [leftover], [], None))

        assert run_dag("kafka_restore_drill", conf).state == "success"
        assert leftover not in other_admin.list_topics(timeout=10).topics
        (report,) = _reports(store, backup["prefix"])
        assert report["result"] == "passed"
        assert report["source_cluster"] == bootstrap and report["target_cluster"] == other.bootstrap
        (partition,) = report["partitions"]  # a sample of one partition
        assert partition["source"]["records"] == partition["restored"]["records"] == WINDOW
        assert partition["source"]["sha256"] == partition["restored"]["sha256"]
        assert len(report["consumer_groups"]) == 1 and report["consumer_groups"][0]["ok"]
        _assert_cleaned_up(other.bootstrap, store, backup)
        source_topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
        assert not [t for t in source_topics if t.startswith(backup["scratch_prefix"])]  # nothing on the source
    finally:
        other.stop()
