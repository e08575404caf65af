"""Unit tests: the restore loop's fast paths (prefetch, filter skip, offset runs) against fakes.

The fakes stand in for S3 and the Kafka clients; the integration tests run the same code
against the real broker and S3 endpoint.
"""

from __future__ import annotations

import io
import os
import random
import re
import threading
import time
import types

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from airflow_kafka_backup.engine.errors import ConfigurationError, IntegrityError, KafkaBackupError, RecordTooLargeError
from airflow_kafka_backup.engine.records import Record
from airflow_kafka_backup.engine.restore.attempts import RestoreAttempt, RestoreProgress
from airflow_kafka_backup.engine.restore.loop import (
    MAX_PRODUCER_REPLACEMENTS,
    _Prefetcher,
    download_verified,
    read_progress,
    restore_partition,
    validate_commit_interval,
)
from airflow_kafka_backup.engine.restore.manifest import verify_restore
from airflow_kafka_backup.engine.restore.offset_map import OffsetMapBuilder, OffsetMapChunk
from airflow_kafka_backup.engine.restore.planning import PartitionRestore, PlannedSegment
from airflow_kafka_backup.engine.restore.transaction import _filter, _offset_runs, _source_runs
from airflow_kafka_backup.engine.storage.checksums import CRC64NVME, SHA256, Checksum, checksum_of
from airflow_kafka_backup.engine.storage.key_layout import attempt_key, chunk_key
from tests.helpers import encode_segment


class FakeStore:
    bucket = "bucket"

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = dict(objects)
        self.written: dict[str, bytes] = {}
        self.opened: list[str] = []

    def open_stream(self, key: str):
        self.opened.append(key)
        return io.BytesIO(self.objects[key])

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        self.written[key] = data

    # What verify reads back: the objects the restore wrote.
    def list_keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.written if k.startswith(prefix))

    def get_bytes(self, key: str) -> bytes:
        return self.written[key]

    def head(self, key: str) -> dict | None:
        return {} if key in self.written else None


class FakeMessage:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def offset(self) -> int:
        return self._offset


class FakeProducer:
    """Mirrors ``confluent_kafka.Producer.produce``'s positional order; offsets start at ``first_offset``."""

    def __init__(self, first_offset: int = 0) -> None:
        self.next_offset = first_offset
        self.produced: list[dict] = []
        self._undelivered: list = []
        self.transactions: list[str] = []
        self.setup: list[str] = []  # calls before the first transaction

    def list_topics(self, topic=None, timeout=None) -> None:
        self.setup.append(f"metadata {topic}")

    def init_transactions(self, timeout=None) -> None:
        self.setup.append("init")

    def begin_transaction(self) -> None:
        self.transactions.append("begin")

    def produce(self, topic, value=None, key=None, partition=-1, callback=None, on_delivery=None, timestamp=0,
                headers=None) -> None:
        self.produced.append({"topic": topic, "value": value, "key": key, "partition": partition,
                              "timestamp": timestamp, "headers": headers})
        self._undelivered.append(callback or on_delivery)
        self.callbacks = getattr(self, "callbacks", 0) + ((callback or on_delivery) is not None)

    def purge(self, in_queue=True, in_flight=True, blocking=True) -> None:
        """Like librdkafka: the queued records are dropped, each reported as purged at the next poll."""
        purged, self._undelivered = self._undelivered, []
        self._purged = [*getattr(self, "_purged", []), *purged]

    def serve_purged(self) -> None:
        purged, self._purged = getattr(self, "_purged", []), []
        for callback in purged:
            if callback is not None:
                callback(KafkaError(KafkaError._PURGE_QUEUE), None)

    def poll(self, timeout=None) -> int:
        self.serve_purged()
        delivered, self._undelivered = self._undelivered, []
        for callback in delivered:
            if callback is not None:  # like librdkafka: every record takes an offset, reported or not
                callback(None, FakeMessage(self.next_offset))
            self.next_offset += 1 + self.another_writer()
        return len(delivered)

    def another_writer(self) -> int:
        """Offsets another producer takes after each of ours (none here)."""
        return 0

    def flush(self, timeout=None) -> int:
        self.poll()
        return 0

    def send_offsets_to_transaction(self, positions, group_metadata, timeout=None) -> None:
        self.transactions.append(f"offsets {positions[0].offset}")
        self.offset_metadata = positions[0].metadata

    def commit_transaction(self, timeout=None) -> None:
        self.transactions.append("commit")

    def abort_transaction(self, timeout=None) -> None:
        self.transactions.append("abort")


class FakeGroup:
    def __init__(self, committed: int | None = None, attempt: str | None = None) -> None:
        self._committed = committed
        self._attempt = attempt  # the committed offset's metadata: the attempt that committed it

    def consumer_group_metadata(self) -> object:
        return object()

    def committed(self, partitions, timeout=None):
        (tp,) = partitions
        if self._committed is None:
            return [TopicPartition(tp.topic, tp.partition, -1001)]
        if self._attempt is None:  # TopicPartition refuses metadata=None
            return [TopicPartition(tp.topic, tp.partition, self._committed)]
        return [TopicPartition(tp.topic, tp.partition, self._committed, metadata=self._attempt)]


def _written_chunks(store: FakeStore) -> list[OffsetMapChunk]:
    """The offset-map chunks the restore wrote, in key (source offset) order."""
    return [OffsetMapChunk.from_json(data) for key, data in sorted(store.written.items()) if "/offset-map/" in key]


def _segment(records: list[Record], compression: str = "none") -> tuple[PlannedSegment, bytes]:
    data = encode_segment("jsonl", records, compression)
    key = f"bk/t/partition=0/t+0+{records[0].offset:010d}.jsonl"
    return PlannedSegment(key, records[0].offset, records[-1].offset, len(records), len(data),
                          checksum_of(CRC64NVME, data), "jsonl", compression), data


def _records(offsets, timestamp_base: int = 1000) -> list[Record]:
    return [Record(0, o, timestamp_base + o, "CreateTime", b"k%d" % o, None if o % 7 == 0 else b"v%d" % o,
                   [("h", b"%d" % o)] if o % 3 == 0 else []) for o in offsets]


@pytest.mark.parametrize("sources,targets", [
    ([], []),
    ([5], [9]),
    (list(range(10, 20)), list(range(100, 110))),
    ([0, 1, 2, 5, 6, 9], list(range(6))),  # compacted source
    (list(range(6)), [0, 1, 2, 10, 11, 12]),  # another writer interleaved in the target
    ([3, 2, 1], [0, 1, 2]),  # not increasing: no single run, however the ends look
    ([0, 2, 1, 3], [0, 1, 2, 3]),
])
def test_offset_runs_equal_the_offset_map_builder(sources, targets):
    builder = OffsetMapBuilder()
    for s, t in zip(sources, targets, strict=True):
        builder.add(s, t)
    assert _offset_runs(sources, targets) == builder.to_runs()


def test_offset_runs_equal_the_builder_on_random_gaps():
    rng = random.Random(4)
    for _ in range(200):
        n = rng.randrange(1, 60)
        sources = sorted(rng.sample(range(n * 2), n)) if rng.random() < 0.5 else list(range(7, 7 + n))
        targets = list(range(3, 3 + n)) if rng.random() < 0.5 else sorted(rng.sample(range(n * 2), n))
        builder = OffsetMapBuilder()
        for s, t in zip(sources, targets, strict=True):
            builder.add(s, t)
        assert _offset_runs(sources, targets) == builder.to_runs()


def test_source_runs_at_consecutive_targets_equal_the_builder():
    rng = random.Random(5)
    for _ in range(200):
        n = rng.randrange(0, 60)
        sources = sorted(rng.sample(range(n * 2), n)) if rng.random() < 0.7 else list(range(7, 7 + n))
        builder = OffsetMapBuilder()
        for i, source in enumerate(sources):
            builder.add(source, 1000 + i)
        assert [(s, 1000 + i, count) for s, i, count in _source_runs(sources)] == builder.to_runs()


def _old_keep(unit: PartitionRestore, offset: int, timestamp: int) -> bool:
    """The filter as it was: applied to every record."""
    if offset < unit.start_offset or (unit.end_offset is not None and offset >= unit.end_offset):
        return False
    if unit.until_timestamp is not None and timestamp >= unit.until_timestamp:
        return False
    return unit.from_timestamp is None or timestamp >= unit.from_timestamp


@pytest.mark.parametrize("bounds", [
    (0, None, None, None), (10, None, None, None), (0, 20, None, None), (10, 20, None, None),
    (15, 16, None, None), (0, None, 1012, None), (0, None, None, 1018), (12, 30, 1005, 1025),
])
def test_filter_is_skipped_only_when_it_would_keep_every_record(bounds):
    start, end, since, until = bounds
    unit = PartitionRestore("t", "t2", 0, [], start, end, since, until)
    for first, last in [(0, 9), (10, 19), (12, 18), (20, 29), (5, 25)]:
        seg = PlannedSegment("k", first, last, last - first + 1, 1, Checksum(SHA256, "x"), "jsonl", "none")
        keep = _filter(unit, seg)
        for offset in range(first, last + 1):
            expected = _old_keep(unit, offset, 1000 + offset)
            assert (keep is None and expected) or (keep is not None and keep(offset, 1000 + offset) == expected)


def _segments(chunks, compression: str = "none") -> tuple[list[PlannedSegment], dict[str, bytes]]:
    """One segment per chunk of source offsets, and the objects a store holds for them."""
    segments, objects = [], {}
    for chunk in chunks:
        seg, data = _segment(_records(chunk), compression)
        segments.append(seg)
        objects[seg.key] = data
    return segments, objects


def _segments_of_ten(end: int) -> tuple[list[PlannedSegment], dict[str, bytes]]:
    """Segments of offsets [0, 10), [10, 20), ... up to ``end``."""
    return _segments([range(first, first + 10) for first in range(0, end, 10)])


def _spool_files(path) -> list[str]:
    return sorted(os.listdir(path))


@pytest.mark.parametrize("ahead", [1, 3])
def test_prefetcher_yields_verified_files_in_order_as_many_ahead_as_fit(tmp_path, ahead):
    segments, objects = _segments_of_ten(60)
    store = FakeStore(objects)
    biggest = max(seg.bytes for seg in segments)
    assert 4 * min(seg.bytes for seg in segments) > 3 * biggest  # so 3 * biggest holds exactly 3
    # ahead=1: a budget smaller than any segment still downloads one ahead.
    budget = 1 if ahead == 1 else ahead * biggest
    with _Prefetcher(store, segments, str(tmp_path), ahead_bytes=budget) as downloads:
        for i, (seg, path) in enumerate(downloads):
            with open(path, "rb") as f:
                assert f.read() == objects[seg.key]
            assert len(downloads._ahead) == min(ahead, len(segments) - i - 1)
            assert len(_spool_files(tmp_path)) <= 1 + ahead  # this one and those ahead
            os.unlink(path)
    assert _spool_files(tmp_path) == []
    assert sorted(store.opened) == sorted(s.key for s in segments)


class _ShortReads(io.RawIOBase):
    """A body that hands out at most 1000 bytes a call, as a socket may."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readinto(self, buffer) -> int:
        return self._data.readinto(memoryview(buffer)[:1000])


class _ReadOnly:
    """A body with ``read`` only, as botocore's ``StreamingBody`` before 1.38.20."""

    def __init__(self, data: bytes) -> None:
        self.read = io.BytesIO(data).read


@pytest.mark.parametrize("body", [io.BytesIO, _ShortReads, _ReadOnly])
def test_a_download_spools_every_byte_whatever_the_body_offers(tmp_path, body):
    segments, objects = _segments([range(0, 300)])
    big = objects[segments[0].key]
    assert len(big) > 3000  # several short reads
    store = FakeStore(objects)
    store.open_stream = lambda key: body(objects[key])
    path = download_verified(store, segments[0], str(tmp_path))
    with open(path, "rb") as f:
        assert f.read() == big


def test_prefetcher_raises_for_a_damaged_segment_in_its_turn_and_cleans_up(tmp_path):
    segments, objects = _segments_of_ten(40)
    objects[segments[2].key] = objects[segments[2].key][:-1] + b"x"
    handed_out = []
    with pytest.raises(IntegrityError, match=re.escape(f"s3://bucket/{segments[2].key} is corrupted")):
        with _Prefetcher(FakeStore(objects), segments, str(tmp_path)) as downloads:
            for seg, path in downloads:
                handed_out.append(seg.key)
                os.unlink(path)
    assert handed_out == [segments[0].key, segments[1].key]  # the ones before it, not it
    assert _spool_files(tmp_path) == []


def test_prefetcher_close_mid_way_removes_the_prefetched_file(tmp_path):
    segments, objects = _segments_of_ten(30)
    with pytest.raises(RuntimeError, match="producing failed"):
        with _Prefetcher(FakeStore(objects), segments, str(tmp_path)) as downloads:
            for _seg, path in downloads:
                os.unlink(path)
                raise RuntimeError("producing failed")
    assert _spool_files(tmp_path) == []


@pytest.mark.parametrize("compression,commit_interval_s", [("none", 0), ("zstd", 0), ("none", 60)])
def test_restore_partition_produces_every_field_and_maps_offsets(tmp_path, compression, commit_interval_s):
    offsets = [o for o in range(0, 60) if o % 11 != 5]  # a compacted source
    chunks = [offsets[i:i + 20] for i in range(0, len(offsets), 20)]
    segments, objects = _segments(chunks, compression)
    store = FakeStore(objects)
    producer = FakeProducer(first_offset=1000)
    unit = PartitionRestore("t", "t2", 0, segments)
    result = restore_partition(lambda: producer, FakeGroup(), store, "bk/_restores/r", unit,
                               spool_dir=str(tmp_path), commit_interval_s=commit_interval_s)

    assert result.records_restored == len(offsets) and result.records_filtered == 0
    assert result.segments_restored == len(segments)
    expected = _records(offsets)
    assert [(p["key"], p["value"], p["headers"] or [], p["timestamp"]) for p in producer.produced] == [
        (r.key, r.value, r.headers, r.timestamp) for r in expected]
    assert {p["topic"] for p in producer.produced} == {"t2"} and {p["partition"] for p in producer.produced} == {0}
    assert all(p["headers"] is None or p["headers"] for p in producer.produced)  # never an empty list
    if commit_interval_s == 0:  # a transaction per segment
        assert producer.transactions == [
            step for seg in segments for step in ("begin", f"offsets {seg.last_offset + 1}", "commit")]
    else:  # the segments take far less than a minute: one transaction for all of them
        assert producer.transactions == ["begin", f"offsets {segments[-1].last_offset + 1}", "commit"]
    maps = _written_chunks(store)
    target = iter(range(1000, 2000))
    for chunk, offset_map in zip(chunks, maps, strict=True):  # one map chunk per segment
        builder = OffsetMapBuilder()
        for o in chunk:
            builder.add(o, next(target))
        assert offset_map.runs == tuple(builder.to_runs())
        assert offset_map.records_restored == len(chunk)
    assert _spool_files(tmp_path) == []


def test_restore_partition_filters_and_resumes(tmp_path):
    segments, objects = _segments_of_ten(40)
    store = FakeStore(objects)
    producer = FakeProducer()
    unit = PartitionRestore("t", "t2", 0, segments, start_offset=5, end_offset=35, until_timestamp=1033)
    result = restore_partition(lambda: producer, FakeGroup(committed=10), store, "r", unit, spool_dir=str(tmp_path))
    assert result.resumed_from == 10 and result.segments_skipped_as_done == 1
    assert sorted(store.opened) == sorted(s.key for s in segments[1:])  # the finished segment is not even downloaded
    kept = [r.key for r in _records(range(10, 40)) if r.offset < 33]
    assert [p["key"] for p in producer.produced] == kept
    assert result.records_restored == len(kept) and result.records_filtered == 30 - len(kept)


@pytest.mark.parametrize("commit_interval_s", [0, 60])
def test_a_damaged_segment_aborts_the_open_transaction_and_commits_nothing_after(tmp_path, commit_interval_s):
    segments, objects = _segments_of_ten(40)
    objects[segments[2].key] = objects[segments[2].key][:-1] + b"x"
    producer = FakeProducer()
    with pytest.raises(IntegrityError, match=re.escape(segments[2].key)):
        restore_partition(lambda: producer, FakeGroup(), FakeStore(objects), "r",
                          PartitionRestore("t", "t2", 0, segments), spool_dir=str(tmp_path),
                          commit_interval_s=commit_interval_s)
    if commit_interval_s == 0:  # the two segments before it committed on their own
        assert producer.transactions == ["begin", "offsets 10", "commit", "begin", "offsets 20", "commit",
                                         "begin", "abort"]
    else:  # they were in the transaction the damaged one would have joined
        assert producer.transactions == ["begin", "abort"]
    assert [p["key"] for p in producer.produced] == [r.key for r in _records(range(20))]
    assert _spool_files(tmp_path) == []


class CommittingProducer(FakeProducer):
    """Commits move the transaction's records to a shared log and its offset to the group; it can get stuck.

    ``stuck_at``: the n-th ``send_offsets_to_transaction`` (from 1) never returns, as librdkafka's
    did after a broker restart (librdkafka #5456).
    """

    def __init__(self, log: list, group: FakeGroup, first_offset: int, stuck_at: int | None = None) -> None:
        super().__init__(first_offset)
        self.log, self.group, self.stuck_at = log, group, stuck_at
        self.sends = 0
        self.pending_offset = None
        self.never = threading.Event()

    def begin_transaction(self) -> None:
        super().begin_transaction()
        self.pending: list = []

    def produce(self, topic, value=None, key=None, *args) -> None:
        super().produce(topic, value, key, *args)
        self.pending.append(key)

    def send_offsets_to_transaction(self, positions, group_metadata, timeout=None) -> None:
        self.sends += 1
        if self.sends == self.stuck_at:
            self.never.wait()  # ignores its timeout
        self.pending_offset, self.pending_attempt = positions[0].offset, positions[0].metadata

    def commit_transaction(self, timeout=None) -> None:
        super().commit_transaction()
        self.log.extend(self.pending)
        self.group._committed, self.group._attempt = self.pending_offset, self.pending_attempt


def _verified(store: FakeStore, unit: PartitionRestore, group: FakeGroup):
    """``verify_restore`` of what the restore wrote, against the progress (and attempt) the group holds."""
    (summary,) = verify_restore(store, "r", [unit], {("t2", 0): RestoreProgress(group._committed, group._attempt)})
    return summary


def test_a_stuck_transactional_call_is_given_up_on_and_a_new_producer_resumes_exactly(tmp_path, monkeypatch):
    import airflow_kafka_backup.engine.restore.transaction as restore  # where bounded_call reads its timeouts

    monkeypatch.setattr(restore, "KAFKA_TIMEOUT_S", 0.2)
    monkeypatch.setattr(restore, "WATCHDOG_GRACE_S", 0.1)
    segments, objects = _segments_of_ten(50)
    group, committed_keys, producers = FakeGroup(), [], []

    def new_producer() -> CommittingProducer:
        # The first producer gets stuck in its 3rd transaction, the second in its 1st; the third finishes.
        stuck_at = {0: 3, 1: 1}.get(len(producers))
        producers.append(CommittingProducer(committed_keys, group, 100 * len(producers), stuck_at))
        return producers[-1]

    store, unit = FakeStore(objects), PartitionRestore("t", "t2", 0, segments)
    started = time.monotonic()
    result = restore_partition(new_producer, group, store, "r", unit, spool_dir=str(tmp_path), commit_interval_s=0)
    assert time.monotonic() - started < 5
    assert len(producers) == 3
    assert committed_keys == [r.key for r in _records(range(50))]  # each record once, in order
    assert group._committed == 50
    # Three attempts were recorded; the second committed nothing, so the chain skips it.
    assert len([k for k in store.written if "/attempts/" in k]) == 3
    assert [resumed_from for resumed_from, _ in _verified(store, unit, group).attempts] == [None, 20]
    assert result.records_restored == 50 and result.segments_restored == 5
    assert result.segments_skipped_as_done == 0 and result.resumed_from is None
    assert _spool_files(tmp_path) == []


def test_a_producer_that_keeps_getting_stuck_fails_the_partition_with_a_clear_error(tmp_path, monkeypatch):
    import airflow_kafka_backup.engine.restore.transaction as restore  # where bounded_call reads its timeouts
    from airflow_kafka_backup.engine.errors import ProducerStuckError

    monkeypatch.setattr(restore, "WATCHDOG_GRACE_S", 0.05)
    monkeypatch.setattr(restore, "KAFKA_TIMEOUT_S", 0.05)
    seg, data = _segment(_records(range(10)))
    group, built = FakeGroup(), []

    def new_producer() -> CommittingProducer:
        built.append(CommittingProducer([], group, 0, stuck_at=1))
        return built[-1]

    with pytest.raises(ProducerStuckError, match=r"t2\[0\].*send_offsets_to_transaction.*giving up"):
        restore_partition(new_producer, group, FakeStore({seg.key: data}), "r", PartitionRestore("t", "t2", 0, [seg]),
                          spool_dir=str(tmp_path))
    assert len(built) == MAX_PRODUCER_REPLACEMENTS + 1


class InterleavedProducer(FakeProducer):
    """Another producer's record lands after our 7th record of each of the first ``times`` transactions."""

    def __init__(self, times: int) -> None:
        super().__init__(first_offset=500)
        self.times = times
        self.in_transaction = 0

    def begin_transaction(self) -> None:
        super().begin_transaction()
        self.in_transaction = 0

    def another_writer(self) -> int:
        self.in_transaction += 1
        return int(self.in_transaction == 7 and self.transactions.count("begin") <= self.times)


@pytest.mark.parametrize("commit_interval_s", [0, 60])
def test_only_the_first_and_last_record_of_a_segment_carry_a_delivery_callback(tmp_path, commit_interval_s):
    segments, objects = _segments_of_ten(30)
    producer = FakeProducer()
    restore_partition(lambda: producer, FakeGroup(), FakeStore(objects), "r", PartitionRestore("t", "t2", 0, segments),
                      spool_dir=str(tmp_path), commit_interval_s=commit_interval_s)
    assert producer.callbacks == 2 * len(segments)
    assert producer.transactions.count("commit") == (len(segments) if commit_interval_s == 0 else 1)


def test_a_record_of_another_producer_between_ours_aborts_and_redoes_the_segment_with_exact_offsets(tmp_path):
    seg, data = _segment(_records(range(0, 20)))
    store = FakeStore({seg.key: data})
    # Also during the redo, which has a report per record and so maps the gap instead of redoing again.
    producer = InterleavedProducer(times=2)
    result = restore_partition(lambda: producer, FakeGroup(), store, "r", PartitionRestore("t", "t2", 0, [seg]),
                               spool_dir=str(tmp_path))
    assert producer.transactions == ["begin", "abort", "begin", "offsets 20", "commit"]
    (chunk,) = _written_chunks(store)
    # The redo: 20 records from 521 on, with a foreign record after our 7th (at 528).
    assert chunk.runs == ((0, 521, 7), (7, 529, 13))
    assert result.records_restored == 20


def test_a_transaction_of_segments_with_a_foreign_record_is_redone_a_segment_at_a_time(tmp_path):
    segments, objects = _segments_of_ten(30)
    store = FakeStore(objects)
    producer = InterleavedProducer(times=1)  # in the first transaction (all three segments) only
    result = restore_partition(lambda: producer, FakeGroup(), store, "r", PartitionRestore("t", "t2", 0, segments),
                               spool_dir=str(tmp_path), commit_interval_s=60)
    assert producer.transactions == ["begin", "abort", *[step for end in (10, 20, 30)
                                                         for step in ("begin", f"offsets {end}", "commit")]]
    # Each segment is downloaded (and verified) again for its redo.
    assert sorted(store.opened) == sorted([s.key for s in segments] * 2)
    chunks = sorted(_written_chunks(store), key=lambda c: c.runs[0])
    # 30 records from 500 + 7 + 30 = 531 on (the aborted ones and the foreign one took offsets too).
    assert [c.runs for c in chunks] == [((0, 531, 10),), ((10, 541, 10),), ((20, 551, 10),)]
    assert result.records_restored == 30 and result.segments_restored == 3
    assert _spool_files(tmp_path) == []


class FailingCommitProducer(FakeProducer):
    """The first commit fails as librdkafka's does when a record without a callback failed delivery;
    with ``lasting``, the record at ``bad_index`` of every transaction fails, and its report says why."""

    def __init__(self, lasting: bool, bad_index: int = 4) -> None:
        super().__init__()
        self.lasting, self.bad_index, self.commits = lasting, bad_index, 0

    def begin_transaction(self) -> None:
        super().begin_transaction()
        self.in_transaction = 0

    def poll(self, timeout=None) -> int:
        self.serve_purged()
        delivered, self._undelivered = self._undelivered, []
        for callback in delivered:
            failed = self.lasting and self.in_transaction == self.bad_index
            self.in_transaction += 1
            if callback is not None:
                error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large") if failed else None
                callback(error, FakeMessage(self.next_offset))
            self.next_offset += 1
        return len(delivered)

    def commit_transaction(self, timeout=None) -> None:
        self.commits += 1
        if self.lasting or self.commits == 1:
            raise KafkaException(KafkaError(KafkaError._INCONSISTENT, "1 message(s) failed delivery "
                                            "(see individual delivery reports)", txn_requires_abort=True))
        super().commit_transaction()


def test_a_commit_failed_by_an_unreported_record_is_redone_with_a_report_per_record(tmp_path):
    seg, data = _segment(_records(range(10)))
    producer = FailingCommitProducer(lasting=False)
    result = restore_partition(lambda: producer, FakeGroup(), FakeStore({seg.key: data}), "r",
                               PartitionRestore("t", "t2", 0, [seg]), spool_dir=str(tmp_path))
    assert producer.transactions == ["begin", "offsets 10", "abort", "begin", "offsets 10", "commit"]
    assert result.records_restored == 10


def test_a_lasting_delivery_failure_is_reported_with_its_own_cause(tmp_path):
    seg, data = _segment(_records(range(10)))
    producer = FailingCommitProducer(lasting=True)
    with pytest.raises(RecordTooLargeError) as raised:
        restore_partition(lambda: producer, FakeGroup(), FakeStore({seg.key: data}), "r",
                          PartitionRestore("t", "t2", 0, [seg]), spool_dir=str(tmp_path))
    assert producer.transactions == ["begin", "offsets 10", "abort", "begin", "abort"]
    # The record the broker refused, by its source offset and size (key b"k4", value b"v4"), and the fix.
    assert str(raised.value).startswith(f"t[0] offset 4 (in {seg.key}) is 4 bytes (key + value + headers)")
    assert f"set max.message.bytes={4 + (64 << 10)} on the topic" in str(raised.value)
    assert "--entity-name t2 " in str(raised.value)


class StuckAbortProducer(CommittingProducer):
    """Its commit fails, and then its abort never returns (as after a broker restart)."""

    def commit_transaction(self, timeout=None) -> None:
        raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Broker: transport failure"))

    def abort_transaction(self, timeout=None) -> None:
        self.never.wait()


def test_a_stuck_abort_replaces_the_producer_too(tmp_path, monkeypatch):
    import airflow_kafka_backup.engine.restore.transaction as restore  # where bounded_call reads its timeouts

    monkeypatch.setattr(restore, "KAFKA_TIMEOUT_S", 0.2)
    monkeypatch.setattr(restore, "WATCHDOG_GRACE_S", 0.1)
    seg, data = _segment(_records(range(10)))
    group, committed_keys, producers = FakeGroup(), [], []

    def new_producer() -> CommittingProducer:
        kind = StuckAbortProducer if not producers else CommittingProducer
        producers.append(kind(committed_keys, group, 100 * len(producers)))
        return producers[-1]

    result = restore_partition(new_producer, group, FakeStore({seg.key: data}), "r",
                               PartitionRestore("t", "t2", 0, [seg]), spool_dir=str(tmp_path))
    assert [type(p) for p in producers] == [StuckAbortProducer, CommittingProducer]
    assert committed_keys == [r.key for r in _records(range(10))] and result.records_restored == 10


class CommitsThenHangs(CommittingProducer):
    """Its first commit takes effect on the broker, then never returns to the caller."""

    def commit_transaction(self, timeout=None) -> None:
        super().commit_transaction()
        self.never.wait()


@pytest.mark.parametrize("commit_interval_s", [0, 60])  # the stuck commit holds the first segment, or all three
def test_a_stuck_commit_that_went_through_is_counted_once(tmp_path, monkeypatch, commit_interval_s):
    import airflow_kafka_backup.engine.restore.transaction as restore  # where bounded_call reads its timeouts

    monkeypatch.setattr(restore, "KAFKA_TIMEOUT_S", 0.2)
    monkeypatch.setattr(restore, "WATCHDOG_GRACE_S", 0.1)
    segments, objects = _segments_of_ten(30)
    group, committed_keys, producers = FakeGroup(), [], []

    def new_producer() -> CommittingProducer:
        kind = CommitsThenHangs if not producers else CommittingProducer
        producers.append(kind(committed_keys, group, 100 * len(producers)))
        return producers[-1]

    store, unit = FakeStore(objects), PartitionRestore("t", "t2", 0, segments)
    result = restore_partition(new_producer, group, store, "r", unit, spool_dir=str(tmp_path),
                               commit_interval_s=commit_interval_s)
    assert committed_keys == [r.key for r in _records(range(30))]  # each once: the next producer skipped it
    assert result.records_restored == 30 and result.segments_restored == 3
    # Verify reads the stuck producer's chunks for what its commit held, the replacement's for the rest.
    summary = _verified(store, unit, group)
    assert summary.records_restored == 30
    assert len(summary.attempts) == (2 if commit_interval_s == 0 else 1)
    # The replacement producer restores what the stuck commit did not hold: two segments, or nothing.
    assert len(producers[1].produced) == (20 if commit_interval_s == 0 else 0)


@pytest.mark.parametrize("value,expected", [(0, 0.0), (5, 5.0), ("2.5", 2.5), (30.0, 30.0)])
def test_commit_interval_accepts_seconds_from_zero_to_the_bound(value, expected):
    assert validate_commit_interval(value) == expected


@pytest.mark.parametrize("value", [-0.1, 30.5, float("nan"), float("inf"), "five", "", None, True, [5]])
def test_commit_interval_refuses_anything_else_naming_the_setting(value):
    with pytest.raises(ConfigurationError, match=r"commit_interval_seconds must be a number of seconds from 0 to 30"):
        validate_commit_interval(value)


class _NotReadyGroup(FakeGroup):
    """An offset fetch on a brand-new cluster: refused ``failures`` times while ``__consumer_offsets`` is made."""

    def __init__(self, failures: int, code: int = KafkaError.NOT_COORDINATOR, as_result: bool = False) -> None:
        super().__init__(committed=42)
        self.failures, self.code, self.as_result, self.calls = failures, code, as_result, 0

    def committed(self, partitions, timeout=None):
        self.calls += 1
        if self.calls <= self.failures:
            if self.as_result:
                # A TopicPartition cannot be built with an error; the engine reads only these attributes.
                return [types.SimpleNamespace(offset=-1001, error=KafkaError(self.code))]
            raise KafkaException(KafkaError(self.code, "Failed to get committed offsets: Broker: Not coordinator"))
        return super().committed(partitions, timeout)


@pytest.mark.parametrize("as_result", [False, True])
@pytest.mark.parametrize("code", [KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                                  KafkaError.COORDINATOR_NOT_AVAILABLE])
def test_progress_is_read_again_while_the_group_coordinator_is_not_ready(code, as_result):
    group = _NotReadyGroup(failures=2, code=code, as_result=as_result)
    assert read_progress(group, "t", 0).next_offset == 42
    assert group.calls == 3


def test_progress_gives_up_on_a_coordinator_that_stays_unready_at_the_timeout():
    group = _NotReadyGroup(failures=10**6)
    started = time.monotonic()
    with pytest.raises(KafkaException, match="Not coordinator"):
        read_progress(group, "t", 0, timeout=0.5)
    assert time.monotonic() - started < 2 and group.calls >= 2


@pytest.mark.parametrize("as_result", [False, True])
def test_progress_fails_at_once_on_any_other_error(as_result):
    group = _NotReadyGroup(failures=1, code=KafkaError.GROUP_AUTHORIZATION_FAILED, as_result=as_result)
    with pytest.raises(KafkaException if not as_result else KafkaBackupError, match="(?i)authoriz|GROUP_AUTH"):
        read_progress(group, "t", 0)
    assert group.calls == 1


def test_the_producer_learns_the_cluster_before_init_transactions(tmp_path):
    seg, data = _segment(_records(range(5)))
    producer = FakeProducer()
    unit = PartitionRestore("t", "t2", 0, [seg])
    restore_partition(lambda: producer, FakeGroup(), FakeStore({seg.key: data}), "r", unit, spool_dir=str(tmp_path))
    assert producer.setup == ["metadata t2", "init"]


class FencedProducer(FakeProducer):
    """A zombie attempt: a retry's producer with the same ``transactional.id`` has fenced it since it produced."""

    def send_offsets_to_transaction(self, positions, group_metadata, timeout=None) -> None:
        raise KafkaException(KafkaError(KafkaError._FENCED, "Producer fenced by newer instance", fatal=True))


def test_a_fenced_attempt_writes_no_offset_map_chunk(tmp_path):
    """Its records are aborted: a chunk of theirs would only be litter (no committed progress names its attempt)."""
    segments, objects = _segments_of_ten(20)
    store = FakeStore(objects)
    with pytest.raises(KafkaException, match="fenced"):
        restore_partition(FencedProducer, FakeGroup(), store, "r", PartitionRestore("t", "t2", 0, segments),
                          spool_dir=str(tmp_path), commit_interval_s=0)
    assert _written_chunks(store) == []
    assert _spool_files(tmp_path) == []


@pytest.mark.parametrize("committed,previous", [(None, None), (10, "a1")])
def test_each_producer_records_its_attempt_before_producing_and_commits_under_its_id(tmp_path, committed, previous):
    """The attempt record (where it resumed, after whose commits), its chunk keys and its progress metadata agree."""
    segments, objects = _segments_of_ten(30)
    store = FakeStore(objects)

    class RecordedFirst(FakeProducer):
        def begin_transaction(self) -> None:
            assert [k for k in store.written if "/attempts/" in k], "the attempt must be recorded before producing"
            super().begin_transaction()

    producer = RecordedFirst()
    restore_partition(lambda: producer, FakeGroup(committed, previous), store, "r",
                      PartitionRestore("t", "t2", 0, segments), spool_dir=str(tmp_path))
    (record_key,) = [k for k in store.written if "/attempts/" in k]
    attempt = RestoreAttempt.from_json(store.written[record_key])
    assert (attempt.target_topic, attempt.partition, attempt.resumed_from, attempt.previous) == (
        "t2", 0, committed, previous)
    assert record_key == attempt_key("r", "t2", 0, attempt.attempt)
    assert producer.offset_metadata == attempt.attempt
    restored = [s for s in segments if committed is None or s.first_offset >= committed]
    assert sorted(k for k in store.written if "/offset-map/" in k) == [
        chunk_key("r", "t2", 0, s.first_offset, attempt.attempt) for s in restored]


def test_a_partition_already_restored_records_no_attempt(tmp_path):
    segments, objects = _segments_of_ten(20)
    store = FakeStore(objects)
    restore_partition(FakeProducer, FakeGroup(20, "a1"), store, "r", PartitionRestore("t", "t2", 0, segments),
                      spool_dir=str(tmp_path))
    assert store.written == {}


class TimedOutProducer(FakeProducer):
    """The broker aborted the open transaction once it outlived transaction.timeout.ms, fencing the producer."""

    def produce(self, *args) -> None:
        if len(self.produced) == 15:
            raise KafkaException(KafkaError(KafkaError._FATAL, "Unable to produce message: Local: Fatal error",
                                            fatal=True))
        super().produce(*args)


def test_a_transaction_that_outlived_the_transaction_timeout_fails_saying_how_to_fix_it(tmp_path):
    segments, objects = _segments_of_ten(20)
    unit = PartitionRestore("t", "t2", 0, segments)
    with pytest.raises(KafkaBackupError, match=r"t2\[0\]: Kafka failed the restore transaction holding "
                                               r"bk/t/partition=0/t\+0\+0000000010.jsonl after it had been open 0s "
                                               r"\(Unable to produce.*\), longer than the producer's "
                                               r"transaction.timeout.ms \(-1\).*set transaction.timeout.ms in the "
                                               r"kafka connection's extra"):
        restore_partition(TimedOutProducer, FakeGroup(), FakeStore(objects), "r", unit, spool_dir=str(tmp_path),
                          commit_interval_s=0, transaction_timeout_s=-0.001)  # every transaction is older than that
    with pytest.raises(KafkaException, match="Local: Fatal error"):  # a failure in a young transaction is Kafka's
        restore_partition(TimedOutProducer, FakeGroup(), FakeStore(objects), "r", unit, spool_dir=str(tmp_path),
                          commit_interval_s=0, transaction_timeout_s=60.0)
    assert _spool_files(tmp_path) == []


class RefusingBrokerProducer(FakeProducer):
    """As librdkafka on a broker refusing the record at ``bad_index`` of each transaction as too large: its
    delivery report says so, and every produce() after it fails with a state error that does not."""

    def __init__(self, bad_index: int = 3) -> None:
        super().__init__()
        self.bad_index, self.failed = bad_index, False

    def begin_transaction(self) -> None:
        super().begin_transaction()
        self.in_transaction, self.failed = 0, False

    def produce(self, *args) -> None:
        if self.failed:
            raise KafkaException(KafkaError(KafkaError._STATE, "Unable to produce message: Local: Erroneous state"))
        super().produce(*args)

    def poll(self, timeout=None) -> int:
        self.serve_purged()
        delivered, self._undelivered = self._undelivered, []
        for callback in delivered:
            refused = self.in_transaction == self.bad_index
            self.in_transaction += 1
            self.failed = self.failed or refused
            if callback is not None:
                error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large") if refused else None
                callback(error, FakeMessage(self.next_offset))
            self.next_offset += 1
        return len(delivered)


def test_a_record_the_broker_refuses_mid_transaction_is_named_after_a_redo_with_reports(tmp_path):
    seg, data = _segment(_records(range(10)))
    producer = RefusingBrokerProducer()
    # poll() runs every 1,000 records: make it run after each one, as librdkafka's background delivery would.
    producer.produce = lambda *args, p=producer: (RefusingBrokerProducer.produce(p, *args), p.poll())
    with pytest.raises(RecordTooLargeError) as raised:
        restore_partition(lambda: producer, FakeGroup(), FakeStore({seg.key: data}), "r",
                          PartitionRestore("t", "t2", 0, [seg]), spool_dir=str(tmp_path))
    assert producer.transactions == ["begin", "abort", "begin", "abort"]  # the redo gave the record its report
    # Offset 3 holds key b"k3", value b"v3" and the header ("h", b"3"): 2 + 2 + 1 + 1 bytes.
    assert str(raised.value).startswith(f"t[0] offset 3 (in {seg.key}) is 6 bytes (key + value + headers), and "
                                        "the broker refused it as too large for t2")
    assert _spool_files(tmp_path) == []


class PurgedFirstProducer(FakeProducer):
    """As librdkafka was seen to behave on a broker refusing the record at ``bad_index`` as too large: the
    records queued behind it are reported purged *before* its own report arrives, and after the abort this
    producer's next transaction fails on its own ("skipped sequence numbers ... requires epoch bump")."""

    def __init__(self, bad_index: int = 3) -> None:
        super().__init__()
        self.bad_index, self.poisoned = bad_index, False

    def begin_transaction(self) -> None:
        super().begin_transaction()
        self.in_transaction = 0

    def produce(self, *args) -> None:
        if self.poisoned:
            raise KafkaException(KafkaError(KafkaError._STATE, "Unable to produce message: Local: Erroneous state"))
        super().produce(*args)

    def abort_transaction(self, timeout=None) -> None:
        super().abort_transaction(timeout)
        self.poisoned = True

    def __len__(self) -> int:
        return len(self._undelivered)

    def poll(self, timeout=None) -> int:
        self.serve_purged()
        delivered, self._undelivered = self._undelivered, []
        first = self.in_transaction
        self.in_transaction += len(delivered)
        refused = self.bad_index - first
        reports = [(i, None) for i in range(min(refused, len(delivered)))]
        if 0 <= refused < len(delivered):
            reports += [(i, KafkaError(KafkaError._PURGE_QUEUE)) for i in range(refused + 1, len(delivered))]
            reports.append((refused, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large")))
        for index, error in reports:
            if delivered[index] is not None:
                delivered[index](error, FakeMessage(self.next_offset + index))
        self.next_offset += len(delivered)
        return len(delivered)


def test_a_refused_record_reported_after_the_purged_ones_is_named_by_a_redo_on_a_new_producer(tmp_path):
    """Issue #20's race, made deterministic: only the last record's report (purged) says the transaction
    failed, so it is redone with a report per record, on a new producer (this one is poisoned by the abort),
    and the refused record is named by its own report even though the purged ones arrive first."""
    seg, data = _segment(_records(range(10)))
    producers: list[PurgedFirstProducer] = []

    def new_producer() -> PurgedFirstProducer:
        producers.append(PurgedFirstProducer())
        return producers[-1]

    with pytest.raises(RecordTooLargeError) as raised:
        restore_partition(new_producer, FakeGroup(), FakeStore({seg.key: data}), "r",
                          PartitionRestore("t", "t2", 0, [seg]), spool_dir=str(tmp_path))
    assert [p.transactions for p in producers] == [["begin", "abort"], ["begin", "abort"]]
    assert [p.callbacks for p in producers] == [2, 10]  # first and last, then a report per record
    assert str(raised.value).startswith(f"t[0] offset 3 (in {seg.key}) is 6 bytes (key + value + headers), and "
                                        "the broker refused it as too large for t2")
    assert _spool_files(tmp_path) == []
