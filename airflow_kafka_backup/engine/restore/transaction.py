"""One restore transaction: whole segments produced into it, their delivery reports, their offset-map chunks.

Split from :mod:`~airflow_kafka_backup.engine.restore.loop`, which decides when a transaction
begins, commits or is redone; this module is what happens inside one. :func:`bounded_call` is
here because the transaction's blocking calls are the ones it guards.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from airflow_kafka_backup.engine.errors import (
    KafkaBackupError,
    ProducerStuckError,
    RecordTooLargeError,
)
from airflow_kafka_backup.engine.formats.base import decode_fields
from airflow_kafka_backup.engine.formats.compression import get_compression
from airflow_kafka_backup.engine.formats.segment_codec import get_format
from airflow_kafka_backup.engine.record_size import MESSAGE_MAX_BYTES, TOPIC_MAX_MESSAGE_BYTES, topic_max_message_bytes
from airflow_kafka_backup.engine.records import record_bytes
from airflow_kafka_backup.engine.restore.offset_map import OffsetMapBuilder, OffsetMapChunk, OffsetRun
from airflow_kafka_backup.engine.restore.planning import PartitionRestore, PlannedSegment
from airflow_kafka_backup.engine.storage.key_layout import chunk_key
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore

log = logging.getLogger(__name__)
T = TypeVar("T")

KAFKA_TIMEOUT_S = 60.0
# How long past its own timeout a transactional call may run before the watchdog gives up on it.
WATCHDOG_GRACE_S = 10.0
# Offset-map chunks (one per segment) written at once when a transaction commits. With the
# prefetch threads, 8 requests at most: within botocore's default pool of 10 connections.
CHUNK_WRITERS = 4
# Serve delivery reports this often while producing, so they do not pile up until flush().
_POLL_EVERY = 1000
# librdkafka's default transaction.timeout.ms. A transaction that Kafka fails after being open
# longer than the producer's timeout most likely timed out: one segment took that long to produce.
TRANSACTION_TIMEOUT_S = 60.0


def bounded_call(call: Callable[..., T], *args: object, serve: Callable[[float], object] | None = None) -> T:
    """``call(*args, KAFKA_TIMEOUT_S)``, given up on when it outlives that timeout by :data:`WATCHDOG_GRACE_S`.

    For librdkafka's blocking transactional calls, which take a timeout but can ignore it
    (librdkafka #5456, #5511). The call runs on a daemon thread (confluent-kafka releases
    the GIL while it waits); when it does not return in time, :class:`ProducerStuckError`
    is raised here and the thread is left behind with its producer, which the caller must
    then stop using. A daemon thread, not an executor's: a stuck executor thread would
    hold up interpreter exit.

    ``serve``: called (``producer.poll``) on this thread while the call runs. ``abort_transaction``
    waits for the delivery reports of the messages it purges to be served, and only a poll
    serves them: without one it times out ("the event queue must be polled ... in a separate
    thread") whenever a failure left messages queued.
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
    deadline = time.monotonic() + timeout + WATCHDOG_GRACE_S
    while not finished.wait(0.05 if serve is not None else max(0.0, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            break
        serve(0)
    if not finished.is_set():
        raise ProducerStuckError(
            f"The Kafka producer's {getattr(call, '__name__', 'call')} did not return within its {timeout:.0f}s "
            "timeout (a librdkafka coordinator bug after a broker restart, librdkafka #5456/#5511)."
        )
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


class RedoWithReports(Exception):
    """The transaction was aborted for a reason a delivery report per record resolves (see
    :class:`RestoreTransaction`)."""


@dataclass
class ProducedSegment:
    """A segment whose records went into the open transaction, and the delivery reports they got."""

    seg: PlannedSegment
    restored: int = 0
    filtered: int = 0
    # Per run of consecutive source offsets: (its first source offset, the index of that record
    # among those produced, records). Runs, not offsets, so that a transaction of many segments
    # keeps a few tuples per segment rather than an int per record.
    source_runs: list[tuple[int, int, int]] = field(default_factory=list)
    sources: list[int] = field(default_factory=list)  # every source offset: only with a report per record
    reported: list[int] = field(default_factory=list)  # target offsets from the delivery reports, in produce order
    errors: list[str] = field(default_factory=list)
    # The index of the delivery report of each record refused for its size.
    too_large: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # key + value + header bytes per record: only with a report each

    def on_delivery(self, error, message) -> None:
        # Within one partition, the reports of delivered records arrive in produce order.
        if error is None:
            self.reported.append(message.offset())
        else:
            self.errors.append(str(error))

    def on_record_delivery(self, index: int, error, message) -> None:
        """The report of the record at ``index`` among those produced (a report per record only).

        By index, not by the order of arrival: when the broker refuses a record, the reports of
        the records queued behind it ("purged") can arrive before its own.
        """
        if error is not None and error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
            self.too_large.append(index)
        self.on_delivery(error, message)

    def raise_if_too_large(self, unit: PartitionRestore, report_every_record: bool) -> None:
        """Name the first record the broker refused as too large, with the fix; without a report per record,
        redo the transaction with them, which tells which record it was and its size."""
        if not self.too_large:
            return
        if not report_every_record:
            raise RedoWithReports("the broker refused a record as too large")
        index = self.too_large[0]
        raise refused_by_broker(unit, self.seg.key, self.sources[index], self.sizes[index])

    def offset_runs(self, unit: PartitionRestore, report_every_record: bool) -> list[OffsetRun]:
        """Where this segment's records went, from its delivery reports (all of them have arrived)."""
        expected = self.restored if report_every_record else min(self.restored, 2)
        self.raise_if_too_large(unit, report_every_record)
        if self.errors or len(self.reported) != expected:
            raise KafkaBackupError(
                f"Producing {self.seg.key} to {unit.target_topic}[{unit.partition}] failed: "
                f"{self.errors[:3] or 'missing delivery reports'}"
            )
        if report_every_record:
            return _offset_runs(self.sources, self.reported)
        if not self.reported:
            return []
        first, last = self.reported[0], self.reported[-1]
        if last - first != self.restored - 1:
            raise RedoWithReports("another producer wrote to the partition during the transaction")
        return [(source, first + index, count) for source, index, count in self.source_runs]


class RestoreTransaction:
    """One restore transaction: whole segments are produced into it, then it commits them with their progress.

    Committing takes the delivery reports of everything in flight, an S3 write per segment
    and three round trips to the coordinators, during which nothing is produced. So a
    transaction takes segments until it has been open ``commit_interval_s`` (the caller
    decides, between segments): with small segments, one commit per segment would bound
    the restore by commits per second.

    Only the first and the last record of each segment carry a delivery callback (a Python
    call per record would cost as much as the produce itself). Offsets within a partition
    grow in produce order, so when the last target offset minus the first is n - 1 the n
    records of the segment sit at consecutive offsets and its offset map is exact. When
    it is not, a record of another producer landed between ours: the transaction is
    aborted and its segments restored again with a delivery report per record. A record
    that fails delivery fails the commit (a transactional producer's guarantee), so two
    reports per segment are enough to know every record landed; when the commit fails
    that way, or a report says a record failed (one refused mid-segment fails those queued
    behind it as "purged", and only their reports may carry a callback), the segments are
    restored again with a report per record too, so that a lasting failure is reported with
    its own cause (record too large, not authorized, ...). The loop does that redo on a new
    producer (see ``loop._redo_with_a_new_producer``).
    """

    def __init__(self, producer, group_metadata, store: S3ObjectStore, restore_prefix: str, unit: PartitionRestore,
                 attempt: str, report_every_record: bool = False,
                 transaction_timeout_s: float = TRANSACTION_TIMEOUT_S) -> None:
        self.producer = producer
        self.group_metadata = group_metadata
        self.store = store
        self.restore_prefix = restore_prefix
        self.unit = unit
        self.attempt = attempt  # the producer's attempt id: in the chunk keys and the progress offset's metadata
        self.report_every_record = report_every_record
        self.transaction_timeout_s = transaction_timeout_s
        self.segments: list[ProducedSegment] = []
        self._began = time.monotonic()
        producer.begin_transaction()

    def age(self) -> float:
        return time.monotonic() - self._began

    @contextmanager
    def aborted_on_failure(self) -> Iterator[None]:
        """Abort the transaction when the block fails (a stuck producer is left to the next one to abort)."""
        try:
            yield
        except ProducerStuckError:
            raise  # nothing more to ask of this producer: the next one aborts its transaction
        except BaseException as failure:
            try:
                self._drain()
                bounded_call(self.producer.abort_transaction, serve=self.producer.poll)
            except ProducerStuckError as stuck:
                raise stuck from failure  # replace the producer, as for any stuck call
            except Exception as abort_failure:
                if isinstance(failure, RedoWithReports):
                    raise abort_failure from failure  # no redo on a producer that could not abort
                log.exception("Aborting the restore transaction failed")  # the original failure is the one to report
            if isinstance(failure, KafkaException) and self.age() > self.transaction_timeout_s:
                raise self._timed_out(failure) from failure
            raise

    def _drain(self) -> None:
        """Drop the records not yet sent and serve the delivery reports of all the transaction's records.

        ``abort_transaction`` would purge the queue too, but then waits for those reports to be
        served, and fails ("the event queue must be polled ... prior to calling abort") when
        they are not served in time. Served here, before it, it has nothing left to wait for.
        """
        self.producer.purge(in_queue=True, in_flight=False)
        self.producer.flush(KAFKA_TIMEOUT_S)

    def _timed_out(self, failure: KafkaException) -> KafkaBackupError:
        """The error for a transaction Kafka failed after it was open longer than the producer's transaction timeout.

        A segment is produced in one transaction, so a segment that takes longer than the
        producer's ``transaction.timeout.ms`` to produce (a huge one, or a slow link) is
        aborted by the broker every time: a retry would fail the same way. Its fix is the
        connection's, and librdkafka's own error ("Local: Fatal error") does not tell it.
        """
        unit = self.unit
        return KafkaBackupError(
            f"{unit.target_topic}[{unit.partition}]: Kafka failed the restore transaction holding "
            f"{', '.join(p.seg.key for p in self.segments)} after it had been open {self.age():.0f}s "
            f"({failure.args[0].str() if failure.args else failure}), longer than the producer's "
            f"transaction.timeout.ms ({self.transaction_timeout_s * 1000:.0f}), after which the broker aborts it. Each "
            "segment is produced in one transaction: set transaction.timeout.ms in the kafka connection's extra "
            "above the time the largest segment takes to produce (the broker caps it at its "
            "transaction.max.timeout.ms, 15 minutes by default)."
        )

    def produce(self, seg: PlannedSegment, path: str) -> None:
        """Produce the records of one verified segment (spooled at ``path``) that pass the unit's filters."""
        try:
            self._produce_records(seg, path)
        except KafkaException as error:
            self._explain_failed_produce(self.segments[-1], error)
            raise

    def _produce_records(self, seg: PlannedSegment, path: str) -> None:
        produced = ProducedSegment(seg)
        self.segments.append(produced)
        produce_segment_records(self.producer, self.unit, seg, path, produced, self.report_every_record)

    def _explain_failed_produce(self, produced: ProducedSegment, error: KafkaException) -> None:
        """Raise what a failed ``produce()`` means, when the delivery reports can tell; else return.

        A record the broker refused fails the transaction, and the produce() calls after it
        fail with a state error that does not say why. The reports served here do: a record
        refused as too large is named (:func:`refused_by_broker`). Without a report per record
        (this one may not carry one), the transaction is redone with them, so that the cause
        is found. A fatal error (the producer was fenced, say) is left to the caller as it is.
        """
        if error.args and error.args[0].fatal():
            return
        if not self.report_every_record:
            raise RedoWithReports(f"producing failed ({error.args[0].str() if error.args else error})") from error
        # The refused record's report comes with the broker's answer, which a busy broker can take seconds to
        # give: serve reports until it arrives or none is outstanding (bounded by the client's own timeout).
        deadline = time.monotonic() + KAFKA_TIMEOUT_S
        while not any(p.too_large for p in self.segments) and len(self.producer) and time.monotonic() < deadline:
            self.producer.poll(0.1)
        self._raise_delivery_failure()

    def _raise_delivery_failure(self) -> None:
        """Raise what the delivery reports served so far say failed, if anything did.

        With a report per record, a record refused as too large is named, in whichever segment
        of the transaction it was: the records after it fail only with "purged", so its own
        report is the one that tells. Without one, only the first and last records of each
        segment carry a report, and the one that failed need not be among them: the
        transaction is redone with a report per record (:class:`RedoWithReports`).
        """
        failed = [produced for produced in self.segments if produced.errors]
        if not failed:
            return
        if not self.report_every_record:
            raise RedoWithReports(f"a record failed delivery ({failed[0].errors[0]})")
        for produced in failed:
            produced.raise_if_too_large(self.unit, True)
        unit = self.unit
        raise KafkaBackupError(f"Producing {failed[0].seg.key} to {unit.target_topic}[{unit.partition}] failed: "
                               f"{failed[0].errors[:3]}")

    def commit(self) -> None:
        """Wait for the delivery reports, add the progress, write each segment's offset-map chunk, then commit."""
        unit, report_every_record = self.unit, self.report_every_record
        self.producer.flush(KAFKA_TIMEOUT_S)
        self._raise_delivery_failure()
        chunks = {
            chunk_key(self.restore_prefix, unit.target_topic, unit.partition, produced.seg.first_offset, self.attempt):
                OffsetMapChunk(unit.source_topic, unit.target_topic, unit.partition, produced.seg.key,
                               produced.seg.checksum, produced.restored, produced.filtered,
                               tuple(produced.offset_runs(unit, report_every_record))).to_json()
            for produced in self.segments
        }
        last_offset = self.segments[-1].seg.last_offset
        # Before the chunks are written: a zombie attempt that a retry has fenced is refused here by the
        # coordinator and writes nothing. One fenced just after still writes its chunks, under its own
        # attempt id, which no committed progress names (see restore_attempts).
        bounded_call(self.producer.send_offsets_to_transaction,
                     [TopicPartition(unit.target_topic, unit.partition, last_offset + 1, metadata=self.attempt)],
                     self.group_metadata)
        # In parallel: a transaction of many small segments would otherwise wait one round trip per chunk.
        with ThreadPoolExecutor(max_workers=CHUNK_WRITERS, thread_name_prefix="restore-offset-map") as pool:
            for _ in pool.map(self.store.put_bytes, chunks, chunks.values()):
                pass  # re-raises the first failed write
        try:
            bounded_call(self.producer.commit_transaction)
        except ProducerStuckError as stuck:
            stuck.commit_counts = (last_offset, self.restored, self.filtered, len(self.segments))
            raise
        except KafkaException as error:
            if report_every_record or not error.args[0].txn_requires_abort():
                raise
            raise RedoWithReports(f"the commit failed ({error.args[0].str()})") from error

    @property
    def restored(self) -> int:
        return sum(produced.restored for produced in self.segments)

    @property
    def filtered(self) -> int:
        return sum(produced.filtered for produced in self.segments)


def produce_segment_records(producer, unit: PartitionRestore, seg: PlannedSegment, path: str,
                            produced: ProducedSegment, report_every_record: bool) -> None:
    """Produce the records of one verified segment (spooled at ``path``) that pass the unit's filters.

    The per-record loop of the restore: only the first and the last record carry a delivery
    callback unless ``report_every_record`` (see :class:`RestoreTransaction`); ``produced``
    gathers what the reports and the counts need.
    """
    fmt, codec = get_format(seg.segment_format), get_compression(seg.compression)
    filtered = 0
    keep = _filter(unit, seg)
    produce, poll = producer.produce, producer.poll
    topic, partition = unit.target_topic, unit.partition
    sources = produced.sources if report_every_record else []
    add_source = sources.append
    # Each record is produced when the next one has been read, so that the last one is
    # known when it is produced: it gets the second delivery callback.
    on_delivery = callback = produced.on_delivery
    record_delivery = produced.on_record_delivery
    # The held record, in locals rather than a tuple: no allocation per record.
    holding = False
    held_value = held_key = held_headers = None
    held_timestamp = held_offset = 0
    with open(path, "rb") as raw:
        for _, offset, timestamp, _, key, value, headers in decode_fields(fmt, raw, codec):
            if keep is not None and not keep(offset, timestamp):
                filtered += 1
                continue
            if holding:
                if report_every_record:
                    callback = partial(record_delivery, len(sources) - 1)
                # Positional arguments (topic, value, key, partition, callback, on_delivery,
                # timestamp, headers) spare a keyword dict per record. Timestamp 0 lets the
                # producer stamp the record, as it would without one; None means no headers.
                try:
                    produce(topic, held_value, held_key, partition, callback, None, held_timestamp, held_headers)
                except BufferError:
                    _produce_when_room(producer, topic, held_value, held_key, held_timestamp, held_headers,
                                       partition, callback)
                except KafkaException as error:
                    _raise_if_too_large(error, unit, seg.key, held_offset, held_key, held_value, held_headers)
                    raise
                if not report_every_record:
                    callback = None
            holding = True
            # confluent-kafka takes headers as a list (msgpack decodes them as a tuple); None: no headers.
            held_value, held_key, held_headers = value, key, list(headers) if headers else None
            held_timestamp = timestamp if timestamp > 0 else 0
            held_offset = offset
            add_source(offset)
            if report_every_record:  # a redo: the size of a record the broker refuses is told
                produced.sizes.append(record_bytes(key, value, headers))
            if len(sources) % _POLL_EVERY == 0:
                poll(0)
        if holding:
            if report_every_record:
                on_delivery = partial(record_delivery, len(sources) - 1)
            try:
                produce(topic, held_value, held_key, partition, on_delivery, None, held_timestamp, held_headers)
            except BufferError:
                _produce_when_room(producer, topic, held_value, held_key, held_timestamp, held_headers,
                                   partition, on_delivery)
            except KafkaException as error:
                _raise_if_too_large(error, unit, seg.key, held_offset, held_key, held_value, held_headers)
                raise
    produced.restored, produced.filtered = len(sources), filtered
    if not report_every_record:
        produced.source_runs = _source_runs(sources)


def _raise_if_too_large(error: KafkaException, unit: PartitionRestore, segment_key: str, source_offset: int,
                        key: bytes | None, value: bytes | None, headers: list | None) -> None:
    """When ``produce()`` refused a record as larger than the producer's limit, say which one and how to fix it.

    Any other failure is left to the caller to raise as it is (the transaction's own handling reads it).
    """
    if not error.args or error.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
        return
    size = record_bytes(key, value, headers)
    raise RecordTooLargeError(
        f"{unit.source_topic}[{unit.partition}] offset {source_offset} (in {segment_key}) is {size} bytes (key + "
        f"value + headers), more than the restore producer's {MESSAGE_MAX_BYTES} allows: set "
        f'"{MESSAGE_MAX_BYTES}": {topic_max_message_bytes(size)} or more in the kafka connection\'s extra, or leave '
        "it out there (the restore sizes it from the backup when the manifests record record sizes)."
    ) from error


def refused_by_broker(unit: PartitionRestore, segment_key: str, source_offset: int, size: int) -> RecordTooLargeError:
    """The error for a record the broker refused as too large: its source offset, and the topic config that fixes it."""
    needed = topic_max_message_bytes(size)
    return RecordTooLargeError(
        f"{unit.source_topic}[{unit.partition}] offset {source_offset} (in {segment_key}) is {size} bytes (key + "
        f"value + headers), and the broker refused it as too large for {unit.target_topic}: set "
        f"{TOPIC_MAX_MESSAGE_BYTES}={needed} on the topic (kafka-configs.sh --alter --entity-type topics "
        f"--entity-name {unit.target_topic} --add-config {TOPIC_MAX_MESSAGE_BYTES}={needed}), and restore again.")


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


def _source_runs(sources: list[int]) -> list[tuple[int, int, int]]:
    """(first source offset, its index in ``sources``, length) of each run of consecutive offsets in ``sources``."""
    if not sources:
        return []
    if _consecutive(sources):
        return [(sources[0], 0, len(sources))]
    runs, start = [], 0
    for index in range(1, len(sources)):
        if sources[index] != sources[index - 1] + 1:
            runs.append((sources[start], start, index - start))
            start = index
    runs.append((sources[start], start, len(sources) - start))
    return runs


def _consecutive(numbers: list[int]) -> bool:
    """``numbers`` is ``n, n + 1, n + 2, ...`` (non-empty)."""
    return numbers == list(range(numbers[0], numbers[0] + len(numbers)))
