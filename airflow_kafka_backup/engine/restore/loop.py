"""The restore loop: verified segments in, exactly-once records out.

Per partition, one transactional producer (its ``transactional.id`` is derived from the
restore id and the target partition, so a retried task fences a zombie of the
attempt before it). Kafka's consume-transform-produce pattern with S3 as the source,
one transaction per run of whole segments (as many as :data:`COMMIT_INTERVAL_S` of work
holds):

1. stream each segment to a spool file while checksumming it; a checksum or size mismatch
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
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from airflow_kafka_backup.engine.errors import (
    ConfigurationError,
    IntegrityError,
    KafkaBackupError,
    ProducerStuckError,
)
from airflow_kafka_backup.engine.restore.attempts import RestoreAttempt, RestoreProgress, new_attempt_id, write_attempt
from airflow_kafka_backup.engine.restore.planning import PartitionRestore, PlannedSegment
from airflow_kafka_backup.engine.restore.transaction import (
    KAFKA_TIMEOUT_S,
    TRANSACTION_TIMEOUT_S,
    RedoWithReports,
    RestoreTransaction,
    bounded_call,
)
from airflow_kafka_backup.engine.storage.checksums import ChecksumWriter
from airflow_kafka_backup.engine.storage.key_layout import safe_restore_id
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore

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
# Producers replaced (each after a stuck call) before a partition's restore fails.
MAX_PRODUCER_REPLACEMENTS = 3
_COPY_CHUNK = 1 << 20
# Segments downloaded ahead of the one being produced: as many as fit in this many bytes (one
# at least; it bounds the spool directory, not memory), on this many threads.
PREFETCH_AHEAD_BYTES = 64 << 20
PREFETCH_WORKERS = 4
# Offset-fetch errors that only mean "ask again shortly" (see :func:`read_progress`).
_COORDINATOR_NOT_READY = frozenset({
    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE,
})
# A restore transaction takes whole segments until it has been open this long. Each commit
# stops producing for its delivery reports, S3 write and coordinator round trips (50-100 ms
# measured on the benchmark's machine), so every few seconds costs a few percent; a task
# killed midway redoes at most this much (exactly once all the same). Well below the
# producer's transaction.timeout.ms (60 s by default), after which the broker aborts.
COMMIT_INTERVAL_S = 5.0
# The most a user may ask for: a transaction also holds the segment during which its interval
# ran out, and must still commit well inside that 60 s.
MAX_COMMIT_INTERVAL_S = 30.0


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
    """Stream a segment to a local file; fails naming the object unless size and checksum match.

    ``cancelled`` lets a background prefetch stop between chunks instead of finishing a
    download nobody will read.
    """
    fd, path = tempfile.mkstemp(prefix="restore-", dir=spool_dir)
    try:
        with os.fdopen(fd, "wb") as out:
            hashing = ChecksumWriter(out, seg.checksum.algorithm)
            for chunk in _chunks(store.open_stream(seg.key)):
                if cancelled is not None and cancelled.is_set():
                    raise _Cancelled(seg.key)
                hashing.write(chunk)
        actual = hashing.checksum()
        if hashing.size != seg.bytes or actual != seg.checksum:
            raise IntegrityError(
                f"Segment s3://{store.bucket}/{seg.key} is corrupted or truncated: {actual.describe(hashing.size)}, "
                f"but the manifest says {seg.checksum.describe(seg.bytes)}. Nothing from this segment was produced."
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
    segment's file is handed out only after its own checksum and size matched (else its
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
    been open ``commit_interval_s`` (0: one segment per transaction); see :class:`RestoreTransaction`.
    ``transaction_timeout_s``: the producers' ``transaction.timeout.ms``, for the error of a
    transaction that outlives it.
    """
    started = time.monotonic()
    totals = _Totals()
    replacement = 0
    while True:
        try:
            _restore_with_producer(new_producer(), group_consumer, store, restore_prefix, unit, spool_dir, totals,
                                   commit_interval_s, transaction_timeout_s)
            break
        except _RedoWithNewProducer:
            continue  # bounded: the redo's transactions carry a report per record, which never redo again
        except ProducerStuckError as stuck:
            replacement += 1
            if replacement > MAX_PRODUCER_REPLACEMENTS:
                raise ProducerStuckError(
                    f"{unit.target_topic}[{unit.partition}]: {stuck} It happened {replacement} times; "
                    "giving up. A retry of the task resumes from the committed progress."
                ) from None
            log.warning("%s[%d]: %s Replacing the producer (the new one fences the stuck one and aborts its "
                        "open transaction) and resuming from the committed progress.",
                        unit.target_topic, unit.partition, stuck)
    return PartitionRestoreResult(unit.source_topic, unit.target_topic, unit.partition, totals.restored,
                                  totals.filtered, totals.segments, totals.skipped or 0, totals.resumed_from,
                                  time.monotonic() - started, totals.transactions)


class _RedoWithNewProducer(Exception):
    """The open transaction was aborted for a redo with a report per record (see :func:`_restore_with_producer`)."""


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
    # Segments ending at or before this source offset are restored one per transaction with a delivery report
    # per record: the redo of a transaction aborted for a reason those reports tell (RedoWithReports).
    report_each_through: int | None = None

    def add(self, transaction: RestoreTransaction) -> None:
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
                # The redo of an aborted transaction: one segment each, with a delivery report per record.
                redo = totals.report_each_through is not None and \
                    todo[len(todo) - left].last_offset <= totals.report_each_through
                transaction = RestoreTransaction(producer, group_metadata, store, restore_prefix, unit, attempt.attempt,
                                                 report_every_record=redo, transaction_timeout_s=transaction_timeout_s)
                try:
                    # A download that fails (a damaged segment, S3 down) aborts the open transaction too.
                    with transaction.aborted_on_failure():
                        while left and (not transaction.segments or (not redo and
                                                                     transaction.age() < commit_interval_s)):
                            seg, path = next(downloads)
                            left -= 1
                            try:
                                transaction.produce(seg, path)
                            finally:
                                os.unlink(path)
                        transaction.commit()
                except RedoWithReports as reason:
                    _redo_with_a_new_producer(transaction, totals, reason)
                totals.add(transaction)
                if time.monotonic() - last_log >= 10:
                    last_log = time.monotonic()
                    log.info("%s[%d]: %d records restored, %d/%d segments", unit.target_topic, unit.partition,
                             totals.restored, totals.segments + totals.skipped, len(unit.segments))
    except ProducerStuckError as stuck:
        totals.stuck_in_commit = getattr(stuck, "commit_counts", None)
        raise


def _redo_with_a_new_producer(transaction: RestoreTransaction, totals: _Totals, reason: RedoWithReports) -> None:
    """Restore the segments of the aborted ``transaction`` again, one transaction each, with a report per record.

    With a new producer: after a record the broker refused, the aborted producer's next
    transaction can fail on its own ("skipped sequence numbers ... requires epoch bump"),
    before the refused record is produced again and named. The new producer fences the old
    one, and reads the committed progress, where the redo starts.
    """
    unit = transaction.unit
    totals.report_each_through = transaction.segments[-1].seg.last_offset
    log.info("%s[%d]: %s; restoring %s again with a delivery report per record", unit.target_topic,
             unit.partition, reason, ", ".join(p.seg.key for p in transaction.segments))
    raise _RedoWithNewProducer() from reason
