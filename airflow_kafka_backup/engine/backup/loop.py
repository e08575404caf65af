"""The backup loop: consume exactly the planned offset ranges and write segments.

Partitions are assigned directly (no group subscription, no rebalances, no committed
group offsets) at the planned start. A partition is done when the consumer's position
reaches the planned end, not when a poll comes back empty: offsets may skip
(compaction, transaction markers, aborted records under ``read_committed``), and the
position moves past all of those. Records at or beyond the end are ignored; the next
run backs them up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, TopicPartition

from airflow_kafka_backup.engine.backup.partition_writer import TopicPartitionWriter
from airflow_kafka_backup.engine.backup.segment_uploader import SegmentUploader
from airflow_kafka_backup.engine.backup.spool import SpoolBudget
from airflow_kafka_backup.engine.errors import DataLossError, KafkaBackupError
from airflow_kafka_backup.engine.storage.manifest import PartitionRange, SegmentInfo, SegmentSettings
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore

log = logging.getLogger(__name__)

# Settings the loop relies on; the Airflow layer lays them over the connection's config.
CONSUMER_OVERRIDES: dict[str, object] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    # Deleted-before-read must be an error, never a silent jump to another offset.
    "auto.offset.reset": "error",
    "enable.partition.eof": True,
    # Bound the prefetch queue per partition (librdkafka's default is 64 MiB).
    "queued.max.messages.kbytes": 16384,
    # When that queue is full librdkafka waits this long before fetching again (default 1 s):
    # without this, the loop drains 16 MiB in milliseconds and then sits idle.
    "fetch.queue.backoff.ms": 10,
}
DEFAULT_GROUP_ID = "airflow-kafka-backup"

# Messages per consume() call. confluent-kafka's Message objects are tracked by Python's
# cyclic garbage collector: a batch larger than its first generation (700 live objects)
# gets promoted, and the promotions set off full collections that walk the whole heap (an
# Airflow task's is large). At 10,000 per call that cost 0.5-0.8 µs per record; at 500 the
# batch dies young and the collector stays out of the hot loop.
BATCH_SIZE = 500
POLL_TIMEOUT_S = 0.5
PROGRESS_EVERY_S = 10.0


@dataclass
class PartitionProgress:
    rng: PartitionRange
    writer: TopicPartitionWriter


@dataclass
class BackupResult:
    segments: list[SegmentInfo]
    records: int
    bytes: int
    seconds: float
    skipped_uploads: int = 0
    per_partition: dict[str, int] = field(default_factory=dict)


def back_up_ranges(
    consumer,
    store: S3ObjectStore,
    prefix: str,
    ranges: Sequence[PartitionRange],
    settings: SegmentSettings,
    is_committed: Callable[[str], bool],
    spool_dir: str | None = None,
    stall_timeout_s: float = 120.0,
) -> BackupResult:
    """Back up ``ranges`` with an unsubscribed consumer; returns the uploaded segments.

    The consumer is not closed here; the caller owns it.
    """
    started = time.monotonic()
    uploader = SegmentUploader(store, is_committed)
    budget = SpoolBudget()  # segments wait for upload in memory up to this, else in spool_dir
    progress = {
        r.tp: PartitionProgress(r, TopicPartitionWriter(r.topic, r.partition, prefix, settings, uploader.submit,
                                                         spool_dir, r.topic_id, r.id_in_keys, budget))
        for r in ranges if not r.is_empty
    }
    if not progress:
        return BackupResult([], 0, 0, 0.0)
    try:
        _consume(consumer, progress, stall_timeout_s)
        for p in progress.values():
            p.writer.finish()
        segments = uploader.drain()
    except BaseException:
        for p in progress.values():
            p.writer.abort()
        uploader.close_on_error()
        raise
    seconds = time.monotonic() - started
    records = sum(p.writer.records_written for p in progress.values())
    total_bytes = sum(p.writer.payload_bytes for p in progress.values())
    log.info(
        "Backed up %d records (%.1f MB) from %d partitions in %d segments in %.1fs (%.0f records/s)",
        records, total_bytes / 1e6, len(progress), len(segments), seconds, records / max(seconds, 1e-9),
    )
    return BackupResult(
        segments, records, total_bytes, seconds, uploader.skipped,
        {f"{t}[{p}]": pp.writer.records_written for (t, p), pp in sorted(progress.items())},
    )


def _consume(consumer, progress: dict[tuple[str, int], PartitionProgress], stall_timeout_s: float) -> None:
    consumer.assign([TopicPartition(t, p, pp.rng.start) for (t, p), pp in progress.items()])
    remaining = dict(progress)
    last_progress = last_log = time.monotonic()
    while remaining:
        messages = consumer.consume(num_messages=BATCH_SIZE, timeout=POLL_TIMEOUT_S)
        # Consecutive messages of one partition go to its writer together (see write_messages).
        run: list = []
        run_pp: PartitionProgress | None = None
        for message in messages:
            tp = (message.topic(), message.partition())
            if message.error() is not None:
                _write_run(run_pp, run)
                _handle_error(message.error(), tp, message, remaining)
                continue
            pp = remaining.get(tp)
            if pp is None:
                continue
            offset, end = message.offset(), pp.rng.end
            if offset >= end:
                continue
            if pp is not run_pp:
                _write_run(run_pp, run)
                run_pp = pp
            run.append(message)
            if offset == end - 1:
                _write_run(run_pp, run)
                run_pp = None
                del remaining[tp]
                pp.writer.finish()
                consumer.pause([TopicPartition(*tp)])
        _write_run(run_pp, run)
        now = time.monotonic()
        if messages:
            last_progress = now
        _retire_finished(consumer, remaining)
        if now - last_log >= PROGRESS_EVERY_S:
            last_log = now
            for (t, p), pp in sorted(remaining.items()):
                log.info("%s[%d]: %d records, %.1f MB so far, target offset %d",
                         t, p, pp.writer.records_written, pp.writer.payload_bytes / 1e6, pp.rng.end)
        if remaining and now - last_progress > stall_timeout_s:
            stuck = ", ".join(f"{t}[{p}] from offset {pp.rng.start}, {pp.writer.records_written} records read"
                              for (t, p), pp in remaining.items())
            raise KafkaBackupError(f"No progress from Kafka for {stall_timeout_s:.0f}s; waiting on {stuck}.")


def _write_run(pp: PartitionProgress | None, run: list) -> None:
    """Hand ``run`` (messages of ``pp``'s partition) to its writer and empty it."""
    if run:
        pp.writer.write_messages(run)
        run.clear()


def _retire_finished(consumer, remaining: dict) -> None:
    """Close writers whose partition's position reached the planned end."""
    if not remaining:
        return
    positions = consumer.position([TopicPartition(t, p) for t, p in remaining])
    finished = [tp for tp in positions if tp.offset >= 0 and tp.offset >= remaining[(tp.topic, tp.partition)].rng.end]
    for tp in finished:
        remaining.pop((tp.topic, tp.partition)).writer.finish()
    if finished:
        consumer.pause(finished)


def _handle_error(error, tp, message, remaining: dict) -> None:
    code = error.code()
    pp = remaining.get(tp)
    if code == KafkaError._PARTITION_EOF:
        if pp is not None and message.offset() < pp.rng.end:
            raise DataLossError(
                f"{tp[0]}[{tp[1]}] ends at offset {message.offset()} but the plan expected records up to "
                f"{pp.rng.end}; the partition was truncated or recreated while backing up."
            )
        return
    if code == KafkaError._AUTO_OFFSET_RESET or code == KafkaError.OFFSET_OUT_OF_RANGE:
        raise DataLossError(
            f"{tp[0]}[{tp[1]}]: offsets were deleted from Kafka (retention) before this run read them: {error}."
        )
    if error.fatal() or not error.retriable():
        raise KafkaBackupError(f"Kafka error on {tp[0]}[{tp[1]}]: {error}")
    log.warning("Transient Kafka error on %s[%d]: %s", tp[0], tp[1], error)
