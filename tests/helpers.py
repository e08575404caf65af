"""Test helpers: build the corpus in the real broker, read Kafka's truth, read the backup back."""

from __future__ import annotations

import io
import random
import time
from collections import defaultdict
from dataclasses import replace

import botocore.session
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from airflow_kafka_backup.engine.formats.compression import get_compression
from airflow_kafka_backup.engine.formats.segment_codec import get_format
from airflow_kafka_backup.engine.records import Record
from airflow_kafka_backup.engine.storage.checksums import SHA256, ChecksumReader, checksum_of
from airflow_kafka_backup.engine.storage.key_layout import manifest_key
from airflow_kafka_backup.engine.storage.manifest import load_manifests
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore

TP = tuple[str, int]

RECORDS_PER_TOPIC = 3_400  # 3 tricky topics x 3 partitions: >10k records in all


def encode_segment(segment_format: str, records: list[Record], compression: str = "none") -> bytes:
    """The bytes of a segment file holding ``records``, written by ``segment_format``'s encoder."""
    raw = io.BytesIO()
    encoder = get_format(segment_format).encoder(raw, get_compression(compression))
    for r in records:
        encoder.write(r)
    encoder.close()
    return raw.getvalue()


def create_topics(bootstrap: str, *topics: NewTopic) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics(list(topics), operation_timeout=30).values():
        future.result()
    # Metadata propagates asynchronously; wait until every partition has a leader.
    deadline = time.monotonic() + 30
    names = {t.topic for t in topics}
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=10).topics
        if all(n in md and md[n].partitions and all(p.leader >= 0 for p in md[n].partitions.values())
               for n in names):
            return
        time.sleep(0.1)
    raise TimeoutError(f"topics {names} have no leaders")


def tricky_record_fields(rng: random.Random, i: int) -> dict:
    """Key, value, headers and timestamp covering null vs empty, non-UTF-8 bytes and odd headers."""
    choice = i % 11
    key: bytes | None = [None, b"", bytes([0xFF, 0xFE, 0x00, i % 256]), f"key-{i}".encode()][i % 4]
    value: bytes | None = [b"", None, rng.randbytes(rng.randint(1, 300)), "välue-ü-€".encode() * (i % 3 + 1),
                           b"\x00\x80\xc3\x28"][i % 5]
    headers: list = [
        [],
        [("dup", b"1"), ("dup", b"2"), ("dup", b"1")],
        [("null-value", None)],
        [("empty", b""), ("bin", b"\xff\x00\xfe")],
        [("z", b"last"), ("a", b"first"), ("z", None)],
        [("ünï", "çödé".encode())],
    ][choice % 6]
    timestamp = 1_600_000_000_000 + i * 1_000 + rng.randint(0, 999)
    return {"key": key, "value": value, "headers": headers, "timestamp": timestamp}


def produce_tricky(bootstrap: str, topic: str, partitions: int, count: int, seed: int, start: int = 0) -> None:
    rng = random.Random(seed)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    for i in range(start, start + count):
        fields = tricky_record_fields(rng, i)
        producer.produce(topic, partition=i % partitions, **fields)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0


MB = 1 << 20
# A topic name of every character class Kafka allows, as long as Kafka allows (249).
EDGE_TOPIC_LENGTH = 249


def edge_topic_name(stem: str) -> str:
    """A legal topic name of 249 characters: ``stem`` then dots, underscores, dashes, digits and letters."""
    return (stem + "." + "a_b-C.9" * 40)[:EDGE_TOPIC_LENGTH]


def edge_records(seed: int) -> list[dict]:
    """The edge-case corpus: records of 5 and 10 MB, 1,000 headers on one record, a header name given as
    non-UTF-8 bytes, between small tricky records. Random (incompressible) bytes, so that compression does
    not hide the sizes."""
    rng = random.Random(seed)
    small = [tricky_record_fields(rng, i) for i in range(12)]
    many_headers = [(f"h{i:04d}", rng.randbytes(i % 7) if i % 5 else None) for i in range(1000)]
    return [
        small[0],
        {"key": b"five", "value": rng.randbytes(5 * MB), "headers": [("size", b"5MB")], "timestamp": 1_600_000_100_000},
        *small[1:4],
        {"key": b"ten", "value": rng.randbytes(10 * MB), "headers": [], "timestamp": 1_600_000_200_000},
        {"key": b"headers", "value": b"v", "headers": many_headers, "timestamp": 1_600_000_300_000},
        # confluent-kafka takes a header name as text: bytes are turned into their repr, so no record whose
        # header name is not valid UTF-8 can be produced through it (and a lone surrogate crashes the client).
        {"key": b"bytes-name", "value": b"v", "headers": [(b"\xff\xfe", b"v")], "timestamp": 1_600_000_400_000},
        *small[4:],
    ]


def produce_records(bootstrap: str, topic: str, records: list[dict], partition: int = 0) -> None:
    """``records`` (produce() keyword arguments) in order, with a producer that takes up to 16 MB."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "message.max.bytes": 16 * MB})
    for fields in records:
        producer.produce(topic, partition=partition, **fields)
        producer.poll(0)
    assert producer.flush(60) == 0


def produce_transactional(bootstrap: str, topic: str) -> None:
    """Committed, aborted (really written, then aborted), committed, and a trailing aborted batch."""
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"tx-{topic}"})
    producer.init_transactions(30)
    for batch, commit in enumerate([True, False, True, True, False]):
        producer.begin_transaction()
        for j in range(50):
            producer.produce(topic, partition=j % 2, key=f"b{batch}-{j}".encode(),
                             value=b"aborted" if not commit else f"committed-{batch}-{j}".encode(),
                             headers=[("batch", str(batch).encode())])
        producer.flush(30)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)


def produce_compacted_with_gaps(bootstrap: str, topic: str, timeout: float = 60) -> None:
    """Overwrite a few keys in waves until the log cleaner has removed records (offset gaps)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    deadline = time.monotonic() + timeout
    wave = 0
    while time.monotonic() < deadline:
        for k in range(20):
            producer.produce(topic, key=f"k{k}".encode(), value=f"wave{wave}".encode(),
                             headers=[("wave", str(wave).encode())])
        producer.flush(30)
        wave += 1
        time.sleep(0.3)
        offsets = [r.offset for r in read_kafka(bootstrap, [topic])[(topic, 0)]]
        if wave > 3 and len(offsets) < offsets[-1] + 1:
            # Compaction left gaps. Freeze the topic (no more cleaning), then wait until two reads agree.
            from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

            admin = AdminClient({"bootstrap.servers": bootstrap})
            resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
                ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SET),
                ConfigEntry("retention.ms", "-1", incremental_operation=AlterConfigOpType.SET)])
            for future in admin.incremental_alter_configs([resource]).values():
                future.result()
            before = read_kafka(bootstrap, [topic])
            while time.monotonic() < deadline:
                time.sleep(1.5)
                after = read_kafka(bootstrap, [topic])
                if after == before:
                    return
                before = after
    raise TimeoutError(f"{topic} was not compacted within {timeout}s")


def read_kafka(bootstrap: str, topics: list[str], isolation: str = "read_committed") -> dict[TP, list[Record]]:
    """Every record Kafka holds for ``topics``, read to the current end of each partition."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "test-reader", "enable.auto.commit": False,
        "isolation.level": isolation, "auto.offset.reset": "earliest",
    })
    md = consumer.list_topics(timeout=10).topics
    out: dict[TP, list[Record]] = {}
    try:
        for topic in topics:
            for p in md[topic].partitions:
                tp = TopicPartition(topic, p)
                low, high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
                records: list[Record] = []
                if high > low:
                    consumer.assign([TopicPartition(topic, p, low)])
                    while consumer.position([tp])[0].offset < high:
                        for m in consumer.consume(1000, 1.0):
                            if m.error() is None and m.offset() < high:
                                records.append(Record.from_message(m))
                out[(topic, p)] = records
    finally:
        consumer.close()
    return out


def read_backup(store: S3ObjectStore, prefix: str) -> dict[TP, list[Record]]:
    """Every record the committed manifests name, decoded from S3 after checking each checksum."""
    out: dict[TP, list[Record]] = defaultdict(list)
    seen: set[str] = set()  # manual runs name segments the scheduled runs committed too
    for manifest in load_manifests(store, prefix):
        fmt = get_format(manifest.settings.segment_format)
        codec = get_compression(manifest.settings.compression)
        for seg in manifest.segments:
            if seg.key in seen:
                continue
            seen.add(seg.key)
            hashing = ChecksumReader(store.open_stream(seg.key), [seg.checksum.algorithm])
            records = list(fmt.decode(hashing, codec))
            assert hashing.checksum() == seg.checksum, seg.key
            assert hashing.size == seg.bytes, seg.key
            assert len(records) == seg.records, seg.key
            assert records[0].offset == seg.first_offset and records[-1].offset == seg.last_offset
            out[(seg.topic, seg.partition)].extend(records)
    return {tp: sorted(rs, key=lambda r: r.offset) for tp, rs in out.items()}


def rewrite_as_format_1(s3, bucket: str, prefix: str) -> list[str]:
    """Turn the committed backup under ``prefix`` into what the versions before CRC64-NVME wrote.

    Each segment gets its sha256 as its stored checksum (``x-amz-meta-sha256``, uploaded with
    ``ChecksumSHA256`` as they did), and each manifest records sha256 per segment with format
    version 1 and no ``segment_checksum`` setting: the previous format, field for field. The
    segment bytes are untouched (the checksum is metadata). Returns the rewritten manifest keys.
    """
    store = S3ObjectStore(client=s3, bucket=bucket)
    keys = []
    for manifest in list(load_manifests(store, prefix)):
        segments = []
        for seg in manifest.segments:
            body = store.get_bytes(seg.key)
            checksum = checksum_of(SHA256, body)
            s3.put_object(Bucket=bucket, Key=seg.key, Body=body, Metadata={SHA256: checksum.value},
                          ChecksumSHA256=checksum.s3_value())
            segments.append(replace(seg, checksum=checksum))
        old = replace(manifest, settings=replace(manifest.settings, segment_checksum=SHA256), segments=segments,
                      format_version=None)
        data = old.to_json()
        assert b'"format_version": 1,' in data and b"crc64nvme" not in data
        key = manifest_key(prefix, manifest.run_id)
        s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/json")
        keys.append(key)
    return keys


def snapshot_bucket(s3, bucket: str) -> dict[str, bytes]:
    """Every object's bytes, by key."""
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", ())]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def run_dag(dag_id: str, conf: dict, logical_date=None, retries: bool = False):
    """Run a shipped DAG through ``dag.test()``; returns the finished DagRun (a restore without its approval step).

    Without ``retries`` its tasks do not retry: the shipped DAGs retry twice after 1 and 2 minutes
    (tested in tests/unit/test_dag_files.py and under the real scheduler), which ``dag.test()``
    would wait out in every test that expects a failure.
    """
    import os

    from airflow_kafka_backup.compat import dag_bag_class

    dag = dag_bag_class()(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).get_dag(dag_id)
    assert dag is not None, dag_id
    if not retries:
        for task in dag.tasks:
            task.retries = 0
    if "require_approval" in dag.params and "require_approval" not in conf:
        # The shipped restore DAG waits for a person (Required Actions); dag.test() has no one to ask. The
        # approval itself is tested under the real api-server (tests/integration/airflow/test_trigger_forms_ui.py).
        conf = {**conf, "require_approval": False}
    kwargs = {"run_conf": conf}
    if logical_date is not None:
        # Airflow 3 names manual runs after run_after: the same instant is the same run.
        kwargs["logical_date"] = kwargs["run_after"] = logical_date
    return dag.test(**kwargs)


def verify_finished_restore(bootstrap: str, store: S3ObjectStore, prefix: str, restore_id: str, units) -> list:
    """``verify_restore`` as the verify task runs it: against the progress the restore committed in Kafka."""
    from airflow_kafka_backup.engine.restore.loop import progress_group, progress_of
    from airflow_kafka_backup.engine.restore.manifest import verify_restore
    from airflow_kafka_backup.engine.storage.key_layout import restore_prefix

    group = Consumer({"bootstrap.servers": bootstrap, "group.id": progress_group(restore_id)})
    try:
        progress = progress_of(group, units)
    finally:
        group.close()
    return verify_restore(store, restore_prefix(prefix, restore_id), units, progress)


class S3Requests:
    """Every S3 call of every botocore client created while installed: operation, Prefix and Key."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str | None, str | None]] = []
        original = botocore.session.Session.create_client

        def create_client(session, *args, **kwargs):
            client = original(session, *args, **kwargs)
            client.meta.events.register("before-parameter-build.s3", self._record)
            return client

        monkeypatch.setattr(botocore.session.Session, "create_client", create_client)

    def _record(self, event_name: str, params: dict, **_) -> None:
        self.calls.append((event_name.split(".")[-1], params.get("Prefix"), params.get("Key")))

    def during(self, action) -> list[tuple[str, str | None, str | None]]:
        start = len(self.calls)
        action()
        return self.calls[start:]
