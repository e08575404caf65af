"""The restore loop: verified segments in, exactly-once records out.

Per partition, one transactional producer (its ``transactional.id`` is derived from the
restore id and the target partition, so a retried task fences a zombie of the
attempt before it). Per segment, one transaction: Kafka's consume-transform-produce
pattern with S3 as the source:

1. stream the segment to a spool file while hashing it; a sha256 or size mismatch
   fails naming the object, and nothing of that segment is produced;
2. produce its records (after the offset and time filters) to the same partition
   number, with the original key, value, headers and timestamp;
3. write the segment's offset-map chunk to S3 (source -> target offsets);
4. ``send_offsets_to_transaction``: the next source offset, as the committed offset of
   the restore's own consumer group on the target partition;
5. commit.

A retry reads that committed offset and skips every segment below it, so a restore
killed at any point and retried produces each record exactly once.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass

from confluent_kafka import TopicPartition

from airflow_kafka_backup.compression import get_compression
from airflow_kafka_backup.errors import IntegrityError, KafkaBackupError
from airflow_kafka_backup.key_layout import safe_run_id
from airflow_kafka_backup.object_store import S3ObjectStore
from airflow_kafka_backup.offset_map import OffsetMapBuilder, OffsetMapChunk, chunk_key
from airflow_kafka_backup.records import Record
from airflow_kafka_backup.restore_planning import PartitionRestore, PlannedSegment
from airflow_kafka_backup.segment_codec import HashingWriter, get_format

log = logging.getLogger(__name__)

PRODUCER_OVERRIDES: dict[str, object] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "batch.size": 1_000_000,
    # Bound the producer's queue (librdkafka's default is 1 GiB).
    "queue.buffering.max.kbytes": 65_536,
}
KAFKA_TIMEOUT_S = 60.0
_COPY_CHUNK = 1 << 20


def transactional_id(restore_id: str, target_topic: str, partition: int) -> str:
    return f"airflow-kafka-backup-restore-{safe_run_id(restore_id)}-{target_topic}-{partition}"


def progress_group(restore_id: str) -> str:
    """The consumer group whose committed offsets are the restore's progress (next source offset)."""
    return f"airflow-kafka-backup-restore-{safe_run_id(restore_id)}"


@dataclass
class PartitionRestoreResult:
    source_topic: str
    target_topic: str
    partition: int
    records_restored: int
    records_filtered: int
    segments_restored: int
    segments_skipped_as_done: int
    resumed_from: int | None
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def download_verified(store: S3ObjectStore, seg: PlannedSegment, spool_dir: str | None = None) -> str:
    """Stream a segment to a local file; fails naming the object unless size and sha256 match."""
    fd, path = tempfile.mkstemp(prefix="restore-", dir=spool_dir)
    try:
        with os.fdopen(fd, "wb") as out:
            hashing = HashingWriter(out)
            body = store.open_stream(seg.key)
            while chunk := body.read(_COPY_CHUNK):
                hashing.write(chunk)
        actual = hashing.sha256.hexdigest()
        if hashing.size != seg.bytes or actual != seg.sha256:
            raise IntegrityError(
                f"Segment s3://{store.bucket}/{seg.key} is corrupted or truncated: {hashing.size} bytes with "
                f"sha256 {actual}, but the manifest says {seg.bytes} bytes with sha256 {seg.sha256}. "
                "Nothing from this segment was produced."
            )
        return path
    except BaseException:
        os.unlink(path)
        raise


def committed_progress(group_consumer, target_topic: str, partition: int) -> int | None:
    (tp,) = group_consumer.committed([TopicPartition(target_topic, partition)], timeout=KAFKA_TIMEOUT_S)
    if tp.error is not None:
        raise KafkaBackupError(f"Could not read restore progress for {target_topic}[{partition}]: {tp.error}")
    return tp.offset if tp.offset >= 0 else None


class _Deliveries:
    """Collects delivery reports; within one partition they arrive in produce order."""

    def __init__(self) -> None:
        self.offsets: list[int] = []
        self.errors: list[str] = []

    def __call__(self, error, message) -> None:
        if error is not None:
            self.errors.append(str(error))
        else:
            self.offsets.append(message.offset())


def restore_partition(
    producer,
    group_consumer,
    store: S3ObjectStore,
    restore_prefix: str,
    unit: PartitionRestore,
    spool_dir: str | None = None,
) -> PartitionRestoreResult:
    """Restore one partition with a transactional producer whose ``transactional.id`` is unique to it.

    ``group_consumer`` is a consumer of the restore's progress group (see :func:`progress_group`);
    it is only used for its committed offsets and group metadata, never subscribed.
    """
    started = time.monotonic()
    producer.init_transactions(KAFKA_TIMEOUT_S)
    group_metadata = group_consumer.consumer_group_metadata()
    resume = committed_progress(group_consumer, unit.target_topic, unit.partition)
    if resume is not None:
        log.info("%s[%d]: resuming after a previous attempt at source offset %d",
                 unit.target_topic, unit.partition, resume)
    restored = filtered = done = skipped = 0
    last_log = time.monotonic()
    for seg in unit.segments:
        if resume is not None and seg.last_offset < resume:
            skipped += 1
            continue
        path = download_verified(store, seg, spool_dir)
        try:
            n_restored, n_filtered = _restore_segment(producer, group_metadata, store, restore_prefix, unit, seg,
                                                      path)
        finally:
            os.unlink(path)
        restored += n_restored
        filtered += n_filtered
        done += 1
        if time.monotonic() - last_log >= 10:
            last_log = time.monotonic()
            log.info("%s[%d]: %d records restored, %d/%d segments", unit.target_topic, unit.partition, restored,
                     done + skipped, len(unit.segments))
    return PartitionRestoreResult(unit.source_topic, unit.target_topic, unit.partition, restored, filtered, done,
                                  skipped, resume, time.monotonic() - started)


def _restore_segment(producer, group_metadata, store, restore_prefix, unit, seg, path) -> tuple[int, int]:
    fmt, codec = get_format(seg.segment_format), get_compression(seg.compression)
    deliveries = _Deliveries()
    sources: list[int] = []
    filtered = 0
    keep = _filter(unit)
    producer.begin_transaction()
    try:
        with open(path, "rb") as raw:
            for record in fmt.decode(raw, codec):
                if not keep(record):
                    filtered += 1
                    continue
                _produce(producer, unit, record, deliveries)
                sources.append(record.offset)
                if len(sources) % 1000 == 0:
                    producer.poll(0)
        producer.flush(KAFKA_TIMEOUT_S)
        if deliveries.errors or len(deliveries.offsets) != len(sources):
            raise KafkaBackupError(
                f"Producing {seg.key} to {unit.target_topic}[{unit.partition}] failed: "
                f"{deliveries.errors[:3] or 'missing delivery reports'}"
            )
        builder = OffsetMapBuilder()
        for source, target in zip(sources, deliveries.offsets, strict=True):
            builder.add(source, target)
        store.put_bytes(
            chunk_key(restore_prefix, unit.target_topic, unit.partition, seg.first_offset),
            OffsetMapChunk(unit.source_topic, unit.target_topic, unit.partition, seg.key, seg.sha256,
                           len(sources), filtered, tuple(builder.to_runs())).to_json(),
        )
        producer.send_offsets_to_transaction(
            [TopicPartition(unit.target_topic, unit.partition, seg.last_offset + 1)], group_metadata,
            KAFKA_TIMEOUT_S,
        )
        producer.commit_transaction(KAFKA_TIMEOUT_S)
    except BaseException:
        try:
            producer.abort_transaction(KAFKA_TIMEOUT_S)
        except Exception:  # the original failure is the one to report
            log.exception("Aborting the restore transaction failed")
        raise
    return len(sources), filtered


def _filter(unit: PartitionRestore):
    start, end = unit.start_offset, unit.end_offset
    since, until = unit.from_timestamp, unit.until_timestamp

    def keep(record: Record) -> bool:
        if record.offset < start or (end is not None and record.offset >= end):
            return False
        if until is not None and record.timestamp >= until:
            return False
        return since is None or record.timestamp >= since

    return keep


def _produce(producer, unit: PartitionRestore, record: Record, deliveries: _Deliveries) -> None:
    kwargs = {"partition": unit.partition, "key": record.key, "value": record.value,
              "on_delivery": deliveries}
    if record.headers:
        kwargs["headers"] = record.headers
    if record.timestamp > 0:
        kwargs["timestamp"] = record.timestamp
    while True:
        try:
            producer.produce(unit.target_topic, **kwargs)
            return
        except BufferError:
            producer.poll(0.05)
