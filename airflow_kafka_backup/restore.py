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

Every blocking transactional call runs under a watchdog (:func:`bounded_call`): librdkafka
can ignore the timeout of ``send_offsets_to_transaction`` and ``init_transactions`` once
its cached coordinator broker went away (librdkafka #5456, #5511), which would leave the
task hanging for ever. When a call outlives its timeout, the producer is abandoned and a
new one is built with the same ``transactional.id``: its ``init_transactions`` fences the
stuck one and aborts its open transaction, and the restore resumes from the committed
progress, exactly as a retried task would.

While segment k is produced, segment k+1 is downloaded and verified on one background
thread (:class:`_Prefetcher`), so at most one spool file waits beside the one being
produced. Step 1 still completes before step 2 for every segment: a segment's records
are produced only after its own download has been verified.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from confluent_kafka import KafkaException, TopicPartition

from airflow_kafka_backup.compression import get_compression
from airflow_kafka_backup.errors import IntegrityError, KafkaBackupError, ProducerStuckError
from airflow_kafka_backup.key_layout import chunk_key, safe_run_id
from airflow_kafka_backup.object_store import S3ObjectStore
from airflow_kafka_backup.offset_map import OffsetMapBuilder, OffsetMapChunk, OffsetRun
from airflow_kafka_backup.restore_planning import PartitionRestore, PlannedSegment
from airflow_kafka_backup.segment_codec import HashingWriter, decode_fields, get_format

log = logging.getLogger(__name__)
T = TypeVar("T")

PRODUCER_OVERRIDES: dict[str, object] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "batch.size": 1_000_000,
    # Bound the producer's queue (librdkafka's default is 1 GiB).
    "queue.buffering.max.kbytes": 65_536,
}
KAFKA_TIMEOUT_S = 60.0
# How long past its own timeout a transactional call may run before the watchdog gives up on it.
WATCHDOG_GRACE_S = 10.0
# Producers replaced (each after a stuck call) before a partition's restore fails.
MAX_PRODUCER_REPLACEMENTS = 3
_COPY_CHUNK = 1 << 20
# Serve delivery reports this often while producing, so they do not pile up until flush().
_POLL_EVERY = 1000


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


class _Cancelled(Exception):
    """A prefetch that is no longer wanted (the restore failed or ended) stopped early."""


def download_verified(store: S3ObjectStore, seg: PlannedSegment, spool_dir: str | None = None,
                      cancelled: threading.Event | None = None) -> str:
    """Stream a segment to a local file; fails naming the object unless size and sha256 match.

    ``cancelled`` lets a background prefetch stop between chunks instead of finishing a
    download nobody will read.
    """
    fd, path = tempfile.mkstemp(prefix="restore-", dir=spool_dir)
    try:
        with os.fdopen(fd, "wb") as out:
            hashing = HashingWriter(out)
            body = store.open_stream(seg.key)
            while chunk := body.read(_COPY_CHUNK):
                if cancelled is not None and cancelled.is_set():
                    raise _Cancelled(seg.key)
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


class _Prefetcher:
    """Iterates ``(segment, verified spool file)`` in order, downloading one segment ahead.

    Downloads run on a single background thread: while the caller produces segment k,
    segment k+1 is downloaded and verified. A segment's file is handed out only after
    its own sha256 and size matched (else its :class:`IntegrityError`, naming the object,
    is raised in its turn), and at most one more file exists beside the one being
    produced from. The caller deletes the files it is handed; :meth:`close` stops the
    download still in flight and deletes its file.
    """

    def __init__(self, store: S3ObjectStore, segments: Sequence[PlannedSegment], spool_dir: str | None) -> None:
        self._store = store
        self._segments = segments
        self._spool_dir = spool_dir
        self._in_flight: Future[str] | None = None
        self._cancelled = threading.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="restore-prefetch")

    def __enter__(self) -> _Prefetcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _download(self, seg: PlannedSegment) -> Future[str]:
        return self._executor.submit(download_verified, self._store, seg, self._spool_dir, self._cancelled)

    def __iter__(self) -> Iterator[tuple[PlannedSegment, str]]:
        for i, seg in enumerate(self._segments):
            current = self._in_flight if self._in_flight is not None else self._download(seg)
            # Queued behind ``current`` on the one worker thread, so it downloads while the
            # caller produces ``seg``.
            has_next = i + 1 < len(self._segments)
            self._in_flight = self._download(self._segments[i + 1]) if has_next else None
            yield seg, current.result()  # re-raises the download's IntegrityError

    def close(self) -> None:
        self._cancelled.set()
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None and not in_flight.cancel():
            try:
                os.unlink(in_flight.result())
            except Exception:  # stopped or failed: download_verified removed its own file
                pass
        self._executor.shutdown(wait=True)


def bounded_call(call: Callable[..., T], *args: object) -> T:
    """``call(*args, KAFKA_TIMEOUT_S)``, given up on when it outlives that timeout by :data:`WATCHDOG_GRACE_S`.

    For librdkafka's blocking transactional calls, which take a timeout but can ignore it
    (librdkafka #5456, #5511). The call runs on a daemon thread (confluent-kafka releases
    the GIL while it waits); when it does not return in time, :class:`ProducerStuckError`
    is raised here and the thread is left behind with its producer, which the caller must
    then stop using. A daemon thread, not an executor's: a stuck executor thread would
    hold up interpreter exit.
    """
    timeout = KAFKA_TIMEOUT_S
    outcome: list = []
    finished = threading.Event()

    def run() -> None:
        try:
            outcome.append((True, call(*args, timeout)))
        except BaseException as error:  # handed to the caller below
            outcome.append((False, error))
        finally:
            finished.set()

    threading.Thread(target=run, name=f"kafka-{getattr(call, '__name__', 'call')}", daemon=True).start()
    if not finished.wait(timeout + WATCHDOG_GRACE_S):
        raise ProducerStuckError(
            f"The Kafka producer's {getattr(call, '__name__', 'call')} did not return within its {timeout:.0f}s "
            "timeout (a librdkafka coordinator bug after a broker restart, librdkafka #5456/#5511)."
        )
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def restore_partition(
    new_producer: Callable[[], Any],
    group_consumer,
    store: S3ObjectStore,
    restore_prefix: str,
    unit: PartitionRestore,
    spool_dir: str | None = None,
) -> PartitionRestoreResult:
    """Restore one partition with transactional producers whose ``transactional.id`` is unique to it.

    ``new_producer()`` builds a producer with that ``transactional.id``; a second one is built
    only when a transactional call of the first got stuck (see :func:`bounded_call`), up to
    :data:`MAX_PRODUCER_REPLACEMENTS` times. ``group_consumer`` is a consumer of the restore's
    progress group (see :func:`progress_group`); it is only used for its committed offsets
    and group metadata, never subscribed.
    """
    started = time.monotonic()
    totals = _Totals()
    for replacement in range(MAX_PRODUCER_REPLACEMENTS + 1):
        try:
            _restore_with_producer(new_producer(), group_consumer, store, restore_prefix, unit, spool_dir, totals)
            break
        except ProducerStuckError as stuck:
            if replacement == MAX_PRODUCER_REPLACEMENTS:
                raise ProducerStuckError(
                    f"{unit.target_topic}[{unit.partition}]: {stuck} It happened {replacement + 1} times; "
                    "giving up. A retry of the task resumes from the committed progress."
                ) from None
            log.warning("%s[%d]: %s Replacing the producer (the new one fences the stuck one and aborts its "
                        "open transaction) and resuming from the committed progress.",
                        unit.target_topic, unit.partition, stuck)
    return PartitionRestoreResult(unit.source_topic, unit.target_topic, unit.partition, totals.restored,
                                  totals.filtered, totals.segments, totals.skipped or 0, totals.resumed_from,
                                  time.monotonic() - started)


@dataclass
class _Totals:
    """What one partition's restore did, summed over its producers (the first one's resume point counts)."""

    restored: int = 0
    filtered: int = 0
    segments: int = 0
    skipped: int | None = None
    resumed_from: int | None = None
    # (last source offset, records restored, records filtered) of the segment whose commit got stuck:
    # it may have committed all the same, which the next producer's committed progress tells.
    stuck_in_commit: tuple[int, int, int] | None = None


def _restore_with_producer(producer, group_consumer, store: S3ObjectStore, restore_prefix: str,
                           unit: PartitionRestore, spool_dir: str | None, totals: _Totals) -> None:
    """Restore what the committed progress says is left of ``unit`` with ``producer``, adding to ``totals``."""
    bounded_call(producer.init_transactions)
    group_metadata = group_consumer.consumer_group_metadata()
    resume = committed_progress(group_consumer, unit.target_topic, unit.partition)
    first_attempt = totals.skipped is None
    if resume is not None and first_attempt:
        log.info("%s[%d]: resuming after a previous attempt at source offset %d",
                 unit.target_topic, unit.partition, resume)
    todo = [seg for seg in unit.segments if resume is None or seg.last_offset >= resume]
    if first_attempt:
        totals.skipped, totals.resumed_from = len(unit.segments) - len(todo), resume
    if totals.stuck_in_commit is not None:
        last_offset, n_restored, n_filtered = totals.stuck_in_commit
        totals.stuck_in_commit = None
        if resume is not None and resume > last_offset:  # the stuck commit went through
            totals.restored += n_restored
            totals.filtered += n_filtered
            totals.segments += 1
    last_log = time.monotonic()
    with _Prefetcher(store, todo, spool_dir) as downloads:
        for seg, path in downloads:
            try:
                n_restored, n_filtered = _restore_segment(producer, group_metadata, store, restore_prefix, unit,
                                                          seg, path)
            except ProducerStuckError as stuck:
                totals.stuck_in_commit = getattr(stuck, "commit_counts", None)
                raise
            finally:
                os.unlink(path)
            totals.restored += n_restored
            totals.filtered += n_filtered
            totals.segments += 1
            if time.monotonic() - last_log >= 10:
                last_log = time.monotonic()
                log.info("%s[%d]: %d records restored, %d/%d segments", unit.target_topic, unit.partition,
                         totals.restored, totals.segments + totals.skipped, len(unit.segments))


class _RedoWithReports(Exception):
    """The transaction was aborted for a reason a delivery report per record resolves (see :func:`_restore_segment`)."""


def _restore_segment(producer, group_metadata, store, restore_prefix, unit, seg, path) -> tuple[int, int]:
    """Restore one verified segment in one transaction; returns (records restored, records filtered out).

    Only the first and the last record produced carry a delivery callback (a Python call
    per record would cost as much as the produce itself). Offsets within a partition
    grow in produce order, so when the last target offset minus the first is n - 1 the n
    records sit at consecutive offsets and the offset map is exact. When it is not, a
    record of another producer landed between ours: the transaction is aborted and the
    segment restored again with a delivery report per record. A record that fails
    delivery fails the commit (a transactional producer's guarantee), so two reports
    are enough to know every record landed; when the commit fails that way, the segment
    is restored again with a report per record too, so that a lasting failure is
    reported with its own cause (record too large, not authorized, ...).
    """
    try:
        return _produce_segment(producer, group_metadata, store, restore_prefix, unit, seg, path, False)
    except _RedoWithReports as redo:
        log.info("%s[%d]: %s; restoring %s again with a delivery report per record", unit.target_topic,
                 unit.partition, redo, seg.key)
        return _produce_segment(producer, group_metadata, store, restore_prefix, unit, seg, path, True)


def _produce_segment(producer, group_metadata, store, restore_prefix, unit, seg, path,
                     report_every_record: bool) -> tuple[int, int]:
    fmt, codec = get_format(seg.segment_format), get_compression(seg.compression)
    sources: list[int] = []  # source offsets, in produce order
    reported: list[int] = []  # target offsets from the delivery reports, in produce order
    errors: list[str] = []

    def on_delivery(error, message) -> None:
        # Within one partition, delivery reports arrive in produce order.
        if error is None:
            reported.append(message.offset())
        else:
            errors.append(str(error))

    filtered = 0
    keep = _filter(unit, seg)
    produce, poll = producer.produce, producer.poll
    topic, partition = unit.target_topic, unit.partition
    add_source = sources.append
    # Each record is produced when the next one has been read, so that the last one is
    # known when it is produced: it gets the second delivery callback.
    callback = on_delivery
    # The held record, in locals rather than a tuple: no allocation per record.
    holding = False
    held_value = held_key = held_headers = None
    held_timestamp = 0
    producer.begin_transaction()
    try:
        with open(path, "rb") as raw:
            for _, offset, timestamp, _, key, value, headers in decode_fields(fmt, raw, codec):
                if keep is not None and not keep(offset, timestamp):
                    filtered += 1
                    continue
                if holding:
                    # Positional arguments (topic, value, key, partition, callback, on_delivery,
                    # timestamp, headers) spare a keyword dict per record. Timestamp 0 lets the
                    # producer stamp the record, as it would without one; None means no headers.
                    try:
                        produce(topic, held_value, held_key, partition, callback, None, held_timestamp, held_headers)
                    except BufferError:
                        _produce_when_room(producer, topic, held_value, held_key, held_timestamp, held_headers,
                                           partition, callback)
                    if not report_every_record:
                        callback = None
                holding = True
                # confluent-kafka takes headers as a list (msgpack decodes them as a tuple); None: no headers.
                held_value, held_key, held_headers = value, key, list(headers) if headers else None
                held_timestamp = timestamp if timestamp > 0 else 0
                add_source(offset)
                if len(sources) % _POLL_EVERY == 0:
                    poll(0)
            if holding:
                try:
                    produce(topic, held_value, held_key, partition, on_delivery, None, held_timestamp, held_headers)
                except BufferError:
                    _produce_when_room(producer, topic, held_value, held_key, held_timestamp, held_headers,
                                       partition, on_delivery)
        producer.flush(KAFKA_TIMEOUT_S)
        expected_reports = len(sources) if report_every_record else min(len(sources), 2)
        if errors or len(reported) != expected_reports:
            raise KafkaBackupError(
                f"Producing {seg.key} to {unit.target_topic}[{unit.partition}] failed: "
                f"{errors[:3] or 'missing delivery reports'}"
            )
        if report_every_record or not reported:
            targets = reported
        elif reported[-1] - reported[0] == len(sources) - 1:
            targets = list(range(reported[0], reported[-1] + 1))
        else:
            raise _RedoWithReports("another producer wrote to the partition during the transaction")
        store.put_bytes(
            chunk_key(restore_prefix, unit.target_topic, unit.partition, seg.first_offset),
            OffsetMapChunk(unit.source_topic, unit.target_topic, unit.partition, seg.key, seg.sha256,
                           len(sources), filtered, tuple(_offset_runs(sources, targets))).to_json(),
        )
        bounded_call(producer.send_offsets_to_transaction,
                     [TopicPartition(unit.target_topic, unit.partition, seg.last_offset + 1)], group_metadata)
        try:
            bounded_call(producer.commit_transaction)
        except ProducerStuckError as stuck:
            stuck.commit_counts = (seg.last_offset, len(sources), filtered)
            raise
        except KafkaException as error:
            if report_every_record or not error.args[0].txn_requires_abort():
                raise
            raise _RedoWithReports(f"the commit failed ({error.args[0].str()})") from error
    except ProducerStuckError:
        raise  # nothing more to ask of this producer: the next one aborts its transaction
    except BaseException as failure:
        try:
            bounded_call(producer.abort_transaction)
        except ProducerStuckError as stuck:
            raise stuck from failure  # replace the producer, as for any stuck call
        except Exception as abort_failure:
            if isinstance(failure, _RedoWithReports):
                raise abort_failure from failure  # no redo on a producer that could not abort
            log.exception("Aborting the restore transaction failed")  # the original failure is the one to report
        raise
    return len(sources), filtered


def _produce_when_room(producer, topic: str, value: bytes | None, key: bytes | None, timestamp: int,
                       headers: list | None, partition: int, on_delivery: Callable | None) -> None:
    """Produce once the producer's queue has room (it raised BufferError): serve reports until it does."""
    while True:
        producer.poll(0.05)
        try:
            producer.produce(topic, value, key, partition, on_delivery, None, timestamp, headers)
            return
        except BufferError:
            continue


def _filter(unit: PartitionRestore, seg: PlannedSegment) -> Callable[[int, int], bool] | None:
    """``keep(offset, timestamp)`` for the records of ``seg``, or ``None`` when every record is kept.

    ``None`` when the segment lies wholly inside the offset bounds and there is no time
    window: the manifest's first and last offsets are those of the segment's first and
    last records, and the segment's bytes were just verified against that manifest.
    """
    start, end = unit.start_offset, unit.end_offset
    since, until = unit.from_timestamp, unit.until_timestamp
    if since is None and until is None and seg.first_offset >= start and (end is None or seg.last_offset < end):
        return None

    def keep(offset: int, timestamp: int) -> bool:
        if offset < start or (end is not None and offset >= end):
            return False
        if until is not None and timestamp >= until:
            return False
        return since is None or timestamp >= since

    return keep


def _offset_runs(sources: list[int], targets: list[int]) -> list[OffsetRun]:
    """The offset map runs of one transaction (as :class:`OffsetMapBuilder` builds them).

    A plain topic restores as one run: both lists are then consecutive integers, which
    two list comparisons (in C) confirm far faster than adding pair by pair.
    """
    if sources and _consecutive(sources) and _consecutive(targets):
        return [(sources[0], targets[0], len(sources))]
    builder = OffsetMapBuilder()
    for source, target in zip(sources, targets, strict=True):
        builder.add(source, target)
    return builder.to_runs()


def _consecutive(numbers: list[int]) -> bool:
    """``numbers`` is ``n, n + 1, n + 2, ...`` (non-empty)."""
    return numbers == list(range(numbers[0], numbers[0] + len(numbers)))
