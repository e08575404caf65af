"""The restore loop: verified segments in, exactly-once records out.

Per partition, one transactional producer (its ``transactional.id`` is derived from the
restore id and the target partition, so a retried task fences a zombie of the
attempt before it). Kafka's consume-transform-produce pattern with S3 as the source,
one transaction per run of whole segments (as many as :data:`COMMIT_INTERVAL_S` of work
holds):

1. stream each segment to a spool file while hashing it; a sha256 or size mismatch
   fails naming the object, and nothing of that segment is produced;
2. produce its records (after the offset and time filters) to the same partition
   number, with the original key, value, headers and timestamp;
3. at the transaction's end, ``send_offsets_to_transaction``: the next source offset, as
   the committed offset of the restore's own consumer group on the target partition, with
   the producer's attempt id as its metadata (a producer a retry has already fenced is
   refused here, before it writes anything to S3);
4. write each of its segments' offset-map chunk to S3 (source -> target offsets), under
   a key holding the attempt id;
5. commit.

A retry reads that committed offset and skips every segment below it, so a restore
killed at any point and retried produces each record exactly once. Each producer is a
new attempt: before producing it records where it resumed and whose commits it follows
(:mod:`restore_attempts`), so the chunks of committed transactions are told apart from
those of aborted ones, whatever order their writes reached S3 in.

Every blocking transactional call runs under a watchdog (:func:`bounded_call`): librdkafka
can ignore the timeout of ``send_offsets_to_transaction`` and ``init_transactions`` once
its cached coordinator broker went away (librdkafka #5456, #5511), which would leave the
task hanging for ever. When a call outlives its timeout, the producer is abandoned and a
new one is built with the same ``transactional.id``: its ``init_transactions`` fences the
stuck one and aborts its open transaction, and the restore resumes from the committed
progress, exactly as a retried task would.

While segment k is produced, the segments after it are downloaded and verified on
background threads (:class:`_Prefetcher`): one ahead when segments are big, as many as
fit in :data:`PREFETCH_AHEAD_BYTES` when they are small. Step 1 still completes before
step 2 for every segment: a segment's records are produced only after its own download
has been verified.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from airflow_kafka_backup.compression import get_compression
from airflow_kafka_backup.errors import (
    ConfigurationError,
    IntegrityError,
    KafkaBackupError,
    ProducerStuckError,
    RecordTooLargeError,
)
from airflow_kafka_backup.key_layout import chunk_key, safe_restore_id
from airflow_kafka_backup.object_store import S3ObjectStore
from airflow_kafka_backup.offset_map import OffsetMapBuilder, OffsetMapChunk, OffsetRun
from airflow_kafka_backup.record_size import MESSAGE_MAX_BYTES, TOPIC_MAX_MESSAGE_BYTES, topic_max_message_bytes
from airflow_kafka_backup.records import record_bytes
from airflow_kafka_backup.restore_attempts import RestoreAttempt, RestoreProgress, new_attempt_id, write_attempt
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
# Segments downloaded ahead of the one being produced: as many as fit in this many bytes (one
# at least; it bounds the spool directory, not memory), on this many threads.
PREFETCH_AHEAD_BYTES = 64 << 20
PREFETCH_WORKERS = 4
# Offset-map chunks (one per segment) written at once when a transaction commits. With the
# prefetch threads, 8 requests at most: within botocore's default pool of 10 connections.
CHUNK_WRITERS = 4
# Offset-fetch errors that only mean "ask again shortly" (see :func:`read_progress`).
_COORDINATOR_NOT_READY = frozenset({
    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE,
})
# Serve delivery reports this often while producing, so they do not pile up until flush().
_POLL_EVERY = 1000
# A restore transaction takes whole segments until it has been open this long. Each commit
# stops producing for its delivery reports, S3 write and coordinator round trips (50-100 ms
# measured on the benchmark's machine), so every few seconds costs a few percent; a task
# killed midway redoes at most this much (exactly once all the same). Well below the
# producer's transaction.timeout.ms (60 s by default), after which the broker aborts.
COMMIT_INTERVAL_S = 5.0
# The most a user may ask for: a transaction also holds the segment during which its interval
# ran out, and must still commit well inside that 60 s.
MAX_COMMIT_INTERVAL_S = 30.0
# librdkafka's default transaction.timeout.ms. A transaction that Kafka fails after being open
# longer than the producer's timeout most likely timed out: one segment took that long to produce.
TRANSACTION_TIMEOUT_S = 60.0


def validate_commit_interval(value: object) -> float:
    """``commit_interval_seconds`` as a float: 0 (a transaction per segment) up to :data:`MAX_COMMIT_INTERVAL_S`.

    Kafka Connect calls the same knob ``transaction.boundary.interval.ms``. Longer transactions
    commit less often (faster for small segments) but a killed task redoes more, and
    read_committed consumers of the target see the records later.
    """
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_COMMIT_INTERVAL_S:
        raise ConfigurationError(
            f"commit_interval_seconds must be a number of seconds from 0 to {MAX_COMMIT_INTERVAL_S:g} "
            f"(a restore transaction must commit well inside the producer's 60 s transaction timeout), "
            f"got {value!r}."
        )
    return float(value)


def transactional_id(restore_id: str, target_topic: str, partition: int) -> str:
    return f"airflow-kafka-backup-restore-{safe_restore_id(restore_id)}-{target_topic}-{partition}"


def progress_group(restore_id: str) -> str:
    """The consumer group whose committed offsets are the restore's progress (next source offset)."""
    return f"airflow-kafka-backup-restore-{safe_restore_id(restore_id)}"


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
    transactions_committed: int

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
            for chunk in _chunks(store.open_stream(seg.key)):
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


def _chunks(body) -> Iterator[bytes | memoryview]:
    """The chunks of a streaming S3 body, read into one reused buffer.

    ``read(n)`` would allocate, zero and copy a fresh chunk each time: 0.38 against 0.23 ms
    of CPU per MB with ``readinto``, measured against moto. ``StreamingBody.readinto``
    arrived in botocore 1.38.20 (boto/botocore#2746); older ones are read by copy.
    """
    readinto = getattr(body, "readinto", None)
    if readinto is None:
        while chunk := body.read(_COPY_CHUNK):
            yield chunk
        return
    buffer = memoryview(bytearray(_COPY_CHUNK))
    while size := readinto(buffer):
        yield buffer[:size]


def progress_of(group_consumer, units: Iterable[PartitionRestore]) -> dict[tuple[str, int], RestoreProgress]:
    """The committed progress of every unit with segments to restore, by target partition (what verify checks)."""
    return {(u.target_topic, u.partition): read_progress(group_consumer, u.target_topic, u.partition)
            for u in units if u.segments}


def read_progress(group_consumer, target_topic: str, partition: int,
                  timeout: float = KAFKA_TIMEOUT_S) -> RestoreProgress:
    """The restore's committed progress on the target partition, and the attempt that committed it.

    An offset fetch refused because the group coordinator is not ready is tried again until
    ``timeout``: librdkafka's ``committed()`` does not retry those. A cluster that has never
    stored a consumer offset (one rebuilt for the restore) refuses its first fetch with
    NOT_COORDINATOR while the broker creates ``__consumer_offsets``.
    """
    deadline = time.monotonic() + timeout
    backoff = 0.1
    while True:
        failure: Exception | None = None
        try:
            (tp,) = group_consumer.committed([TopicPartition(target_topic, partition)],
                                             timeout=max(deadline - time.monotonic(), 1.0))
        except KafkaException as raised:  # librdkafka raises some errors, and reports others on the partition
            failure, error = raised, raised.args[0]
        else:
            if tp.error is None:
                if tp.offset < 0:
                    return RestoreProgress(None, None)
                return RestoreProgress(tp.offset, tp.metadata or None)
            error = tp.error
        if error.code() not in _COORDINATOR_NOT_READY or time.monotonic() + backoff > deadline:
            raise failure or KafkaBackupError(
                f"Could not read restore progress for {target_topic}[{partition}]: {error}")
        log.info("%s[%d]: the group coordinator is not ready (%s); reading the restore progress again in %.1fs",
                 target_topic, partition, error.str(), backoff)
        time.sleep(backoff)
        backoff = min(backoff * 2, 1.0)


class _Prefetcher:
    """Iterates ``(segment, verified spool file)`` in order, downloading ahead of the caller.

    While the caller produces segment k, the segments after it are downloaded and verified
    on background threads: as many as fit in ``ahead_bytes`` (at least one), on up to
    ``workers`` threads. Big segments thus download one ahead; small ones many at once, so
    that a restore of small segments is not bound by one S3 round trip per segment. A
    segment's file is handed out only after its own sha256 and size matched (else its
    :class:`IntegrityError`, naming the object, is raised in its turn). The caller deletes
    the files it is handed; :meth:`close` stops the downloads still in flight and deletes
    their files.
    """

    def __init__(self, store: S3ObjectStore, segments: Sequence[PlannedSegment], spool_dir: str | None,
                 ahead_bytes: int = PREFETCH_AHEAD_BYTES, workers: int = PREFETCH_WORKERS) -> None:
        self._store = store
        self._segments = segments
        self._spool_dir = spool_dir
        self._ahead_bytes = ahead_bytes
        self._submitted = 0  # segments handed to the executor so far
        self._ahead: deque[tuple[PlannedSegment, Future[str]]] = deque()
        self._cancelled = threading.Event()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="restore-prefetch")

    def __enter__(self) -> _Prefetcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _download_ahead(self) -> None:
        """Start downloads until the ones waiting would exceed ``ahead_bytes`` (one at least)."""
        waiting = sum(seg.bytes for seg, _ in self._ahead)
        while self._submitted < len(self._segments):
            seg = self._segments[self._submitted]
            if self._ahead and waiting + seg.bytes > self._ahead_bytes:
                return
            self._ahead.append((seg, self._executor.submit(download_verified, self._store, seg, self._spool_dir,
                                                           self._cancelled)))
            self._submitted += 1
            waiting += seg.bytes

    def __iter__(self) -> Iterator[tuple[PlannedSegment, str]]:
        self._download_ahead()
        while self._ahead:
            seg, current = self._ahead.popleft()
            self._download_ahead()  # the next ones download while the caller produces ``seg``
            yield seg, current.result()  # re-raises the download's IntegrityError

    def close(self) -> None:
        self._cancelled.set()
        while self._ahead:
            _, download = self._ahead.popleft()
            if not download.cancel():
                try:
                    os.unlink(download.result())
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
    commit_interval_s: float = COMMIT_INTERVAL_S,
    transaction_timeout_s: float = TRANSACTION_TIMEOUT_S,
) -> PartitionRestoreResult:
    """Restore one partition with transactional producers whose ``transactional.id`` is unique to it.

    ``new_producer()`` builds a producer with that ``transactional.id``; a second one is built
    only when a transactional call of the first got stuck (see :func:`bounded_call`), up to
    :data:`MAX_PRODUCER_REPLACEMENTS` times. ``group_consumer`` is a consumer of the restore's
    progress group (see :func:`progress_group`); it is only used for its committed offsets
    and group metadata, never subscribed. A transaction takes whole segments until it has
    been open ``commit_interval_s`` (0: one segment per transaction); see :class:`_Transaction`.
    ``transaction_timeout_s``: the producers' ``transaction.timeout.ms``, for the error of a
    transaction that outlives it.
    """
    started = time.monotonic()
    totals = _Totals()
    for replacement in range(MAX_PRODUCER_REPLACEMENTS + 1):
        try:
            _restore_with_producer(new_producer(), group_consumer, store, restore_prefix, unit, spool_dir, totals,
                                   commit_interval_s, transaction_timeout_s)
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
                                  time.monotonic() - started, totals.transactions)


@dataclass
class _Totals:
    """What one partition's restore did, summed over its producers (the first one's resume point counts)."""

    restored: int = 0
    filtered: int = 0
    segments: int = 0
    transactions: int = 0
    skipped: int | None = None
    resumed_from: int | None = None
    # (last source offset, records restored, records filtered, segments) of the transaction whose commit
    # got stuck: it may have committed all the same, which the next producer's committed progress tells.
    stuck_in_commit: tuple[int, int, int, int] | None = None

    def add(self, transaction: _Transaction) -> None:
        """Count a committed transaction."""
        self.restored += transaction.restored
        self.filtered += transaction.filtered
        self.segments += len(transaction.segments)
        self.transactions += 1


def _restore_with_producer(producer, group_consumer, store: S3ObjectStore, restore_prefix: str,
                           unit: PartitionRestore, spool_dir: str | None, totals: _Totals,
                           commit_interval_s: float, transaction_timeout_s: float) -> None:
    """Restore what the committed progress says is left of ``unit`` with ``producer``, adding to ``totals``."""
    # Learn the cluster's brokers before looking for the transaction coordinator. librdkafka drops
    # its bootstrap connection once it knows them, losing a FindCoordinator sent on it meanwhile;
    # init_transactions then waits for its 500 ms coordinator query timer. Measured on the local
    # broker: 0.06 s per init this way, against 0.51 s for about half of them without.
    bounded_call(lambda timeout: producer.list_topics(unit.target_topic, timeout=timeout))
    bounded_call(producer.init_transactions)
    group_metadata = group_consumer.consumer_group_metadata()
    # Read after init_transactions, which fenced every earlier producer of this partition and
    # completed or aborted its open transaction: no commit can land behind this read.
    progress = read_progress(group_consumer, unit.target_topic, unit.partition)
    resume = progress.next_offset
    first_attempt = totals.skipped is None
    if resume is not None and first_attempt:
        log.info("%s[%d]: resuming after a previous attempt at source offset %d",
                 unit.target_topic, unit.partition, resume)
    todo = [seg for seg in unit.segments if resume is None or seg.last_offset >= resume]
    if first_attempt:
        totals.skipped, totals.resumed_from = len(unit.segments) - len(todo), resume
    if totals.stuck_in_commit is not None:
        last_offset, n_restored, n_filtered, n_segments = totals.stuck_in_commit
        totals.stuck_in_commit = None
        if resume is not None and resume > last_offset:  # the stuck commit went through
            totals.restored += n_restored
            totals.filtered += n_filtered
            totals.segments += n_segments
            totals.transactions += 1
    attempt = RestoreAttempt(new_attempt_id(), unit.target_topic, unit.partition, resume, progress.attempt)
    if todo:
        write_attempt(store, restore_prefix, attempt)
    last_log = time.monotonic()
    left = len(todo)
    try:
        with _Prefetcher(store, todo, spool_dir) as prefetcher:
            downloads = iter(prefetcher)
            while left:
                transaction = _Transaction(producer, group_metadata, store, restore_prefix, unit, attempt.attempt,
                                           transaction_timeout_s=transaction_timeout_s)
                # A download that fails (a damaged segment, S3 down) aborts the open transaction too.
                try:
                    with transaction.aborted_on_failure():
                        while left and (not transaction.segments or transaction.age() < commit_interval_s):
                            seg, path = next(downloads)
                            left -= 1
                            try:
                                transaction.produce(seg, path)
                            finally:
                                os.unlink(path)
                except _RedoWithReports as redo:  # a record failed while producing (the transaction is aborted)
                    _redo_with_reports(transaction, totals, spool_dir, redo)
                else:
                    _commit_or_redo(transaction, totals, spool_dir)
                if time.monotonic() - last_log >= 10:
                    last_log = time.monotonic()
                    log.info("%s[%d]: %d records restored, %d/%d segments", unit.target_topic, unit.partition,
                             totals.restored, totals.segments + totals.skipped, len(unit.segments))
    except ProducerStuckError as stuck:
        totals.stuck_in_commit = getattr(stuck, "commit_counts", None)
        raise


def _commit_or_redo(transaction: _Transaction, totals: _Totals, spool_dir: str | None) -> None:
    """Commit ``transaction``; when that needs a delivery report per record, restore its segments again with them.

    A redo downloads (and verifies) its segments again, one at a time and one transaction each:
    it is rare (another producer wrote to the target partition, or a record failed delivery),
    and the transaction's segments need not stay spooled until its commit.
    """
    try:
        with transaction.aborted_on_failure():
            transaction.commit()
        totals.add(transaction)
        return
    except _RedoWithReports as redo:
        _redo_with_reports(transaction, totals, spool_dir, redo)


def _redo_with_reports(transaction: _Transaction, totals: _Totals, spool_dir: str | None,
                       redo: _RedoWithReports) -> None:
    """Restore the segments of the aborted ``transaction`` again, one transaction each, with a report per record."""
    unit = transaction.unit
    log.info("%s[%d]: %s; restoring %s again with a delivery report per record", unit.target_topic,
             unit.partition, redo, ", ".join(p.seg.key for p in transaction.segments))
    for produced in transaction.segments:
        again = _Transaction(transaction.producer, transaction.group_metadata, transaction.store,
                             transaction.restore_prefix, transaction.unit, transaction.attempt,
                             report_every_record=True,
                             transaction_timeout_s=transaction.transaction_timeout_s)
        path = download_verified(transaction.store, produced.seg, spool_dir)
        try:
            with again.aborted_on_failure():
                again.produce(produced.seg, path)
        finally:
            os.unlink(path)
        with again.aborted_on_failure():
            again.commit()
        totals.add(again)


class _RedoWithReports(Exception):
    """The transaction was aborted for a reason a delivery report per record resolves (see :class:`_Transaction`)."""


@dataclass
class _ProducedSegment:
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
        # Within one partition, delivery reports arrive in produce order.
        if error is None:
            self.reported.append(message.offset())
            return
        if error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
            self.too_large.append(len(self.reported) + len(self.errors))
        self.errors.append(str(error))

    def raise_if_too_large(self, unit: PartitionRestore, report_every_record: bool) -> None:
        """Name the first record the broker refused as too large, with the fix; without a report per record,
        redo the transaction with them, which tells which record it was and its size."""
        if not self.too_large:
            return
        if not report_every_record:
            raise _RedoWithReports("the broker refused a record as too large")
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
            raise _RedoWithReports("another producer wrote to the partition during the transaction")
        return [(source, first + index, count) for source, index, count in self.source_runs]


class _Transaction:
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
    that way, the segments are restored again with a report per record too, so that a
    lasting failure is reported with its own cause (record too large, not authorized, ...).
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
        self.segments: list[_ProducedSegment] = []
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
                bounded_call(self.producer.abort_transaction)
            except ProducerStuckError as stuck:
                raise stuck from failure  # replace the producer, as for any stuck call
            except Exception as abort_failure:
                if isinstance(failure, _RedoWithReports):
                    raise abort_failure from failure  # no redo on a producer that could not abort
                log.exception("Aborting the restore transaction failed")  # the original failure is the one to report
            if isinstance(failure, KafkaException) and self.age() > self.transaction_timeout_s:
                raise self._timed_out(failure) from failure
            raise

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
        produced = _ProducedSegment(seg)
        self.segments.append(produced)
        fmt, codec = get_format(seg.segment_format), get_compression(seg.compression)
        report_every_record = self.report_every_record
        filtered = 0
        keep = _filter(self.unit, seg)
        producer = self.producer
        produce, poll = producer.produce, producer.poll
        topic, partition = self.unit.target_topic, self.unit.partition
        sources = produced.sources if report_every_record else []
        add_source = sources.append
        # Each record is produced when the next one has been read, so that the last one is
        # known when it is produced: it gets the second delivery callback.
        on_delivery = callback = produced.on_delivery
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
                    # Positional arguments (topic, value, key, partition, callback, on_delivery,
                    # timestamp, headers) spare a keyword dict per record. Timestamp 0 lets the
                    # producer stamp the record, as it would without one; None means no headers.
                    try:
                        produce(topic, held_value, held_key, partition, callback, None, held_timestamp, held_headers)
                    except BufferError:
                        _produce_when_room(producer, topic, held_value, held_key, held_timestamp, held_headers,
                                           partition, callback)
                    except KafkaException as error:
                        _raise_if_too_large(error, self.unit, seg.key, held_offset, held_key, held_value, held_headers)
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
                try:
                    produce(topic, held_value, held_key, partition, on_delivery, None, held_timestamp, held_headers)
                except BufferError:
                    _produce_when_room(producer, topic, held_value, held_key, held_timestamp, held_headers,
                                       partition, on_delivery)
                except KafkaException as error:
                    _raise_if_too_large(error, self.unit, seg.key, held_offset, held_key, held_value, held_headers)
                    raise
        produced.restored, produced.filtered = len(sources), filtered
        if not report_every_record:
            produced.source_runs = _source_runs(sources)

    def _explain_failed_produce(self, produced: _ProducedSegment, error: KafkaException) -> None:
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
            raise _RedoWithReports(f"producing failed ({error.args[0].str() if error.args else error})") from error
        for _ in range(20):  # the failed record's report is normally queued already
            if produced.too_large:
                break
            self.producer.poll(0.1)
        produced.raise_if_too_large(self.unit, True)

    def commit(self) -> None:
        """Wait for the delivery reports, add the progress, write each segment's offset-map chunk, then commit."""
        unit, report_every_record = self.unit, self.report_every_record
        self.producer.flush(KAFKA_TIMEOUT_S)
        chunks = {
            chunk_key(self.restore_prefix, unit.target_topic, unit.partition, produced.seg.first_offset, self.attempt):
                OffsetMapChunk(unit.source_topic, unit.target_topic, unit.partition, produced.seg.key,
                               produced.seg.sha256, produced.restored, produced.filtered,
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
            raise _RedoWithReports(f"the commit failed ({error.args[0].str()})") from error

    @property
    def restored(self) -> int:
        return sum(produced.restored for produced in self.segments)

    @property
    def filtered(self) -> int:
        return sum(produced.filtered for produced in self.segments)


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
