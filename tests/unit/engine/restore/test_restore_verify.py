"""Unit tests: the restore's verify step refuses offset maps that do not describe the planned segments.

S3 is a dict here; the integration tests verify real restores (and damaged ones) on the real endpoint.
"""

from __future__ import annotations

import json

import pytest

from airflow_kafka_backup.engine.errors import IntegrityError
from airflow_kafka_backup.engine.restore.attempts import RestoreAttempt, attempt_chain, committer_of, write_attempt
from airflow_kafka_backup.engine.restore.loop import RestoreProgress
from airflow_kafka_backup.engine.restore.manifest import load_offset_map, verify_restore, write_restore_manifest
from airflow_kafka_backup.engine.restore.offset_map import OffsetMapChunk
from airflow_kafka_backup.engine.restore.planning import PartitionRestore, PlannedSegment
from airflow_kafka_backup.engine.storage.checksums import SHA256, Checksum
from airflow_kafka_backup.engine.storage.key_layout import attempt_key, chunk_key

PREFIX = "bk/_restores/kafka_restore/r"
ATTEMPT = "a1"


class DictStore:
    bucket = "b"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def list_keys(self, prefix: str):
        return sorted(k for k in self.objects if k.startswith(prefix))

    def get_bytes(self, key: str) -> bytes:
        return self.objects[key]

    def head(self, key: str):
        return {} if key in self.objects else None

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        self.objects[key] = data


def _segment(i: int) -> PlannedSegment:
    return PlannedSegment(f"bk/t/partition=0/seg{i}", 10 * i, 10 * i + 9, 10, 100,
                          Checksum(SHA256, f"sha{i}"), "jsonl", "none")


def _write_chunk(store: DictStore, seg: PlannedSegment, runs, attempt: str = ATTEMPT) -> None:
    restored = sum(n for _, _, n in runs)
    chunk = OffsetMapChunk("t", "t2", 0, seg.key, seg.checksum, restored, 10 - restored, tuple(runs))
    store.objects[chunk_key(PREFIX, "t2", 0, seg.first_offset, attempt)] = chunk.to_json()


def _unit_with_chunks(*runs_per_segment) -> tuple[DictStore, PartitionRestore]:
    """Segments of 10 records at source offsets 0.., 10.., ...; each chunk with the runs given (all restored),
    all written by one attempt that restored the partition from the start."""
    store, unit = DictStore(), PartitionRestore("t", "t2", 0)
    write_attempt(store, PREFIX, RestoreAttempt(ATTEMPT, "t2", 0, None, None))
    for i, runs in enumerate(runs_per_segment):
        unit.segments.append(_segment(i))
        _write_chunk(store, unit.segments[-1], runs)
    return store, unit


def _done(unit: PartitionRestore, attempt: str = ATTEMPT) -> dict:
    """The progress a finished restore of ``unit`` committed, last by ``attempt``."""
    return {("t2", 0): RestoreProgress(unit.segments[-1].last_offset + 1, attempt)}


def test_exact_maps_pass():
    store, unit = _unit_with_chunks([(0, 100, 10)], [(10, 110, 4), (15, 114, 5)])  # source 14 filtered out
    (summary,) = verify_restore(store, PREFIX, [unit], _done(unit))
    assert (summary.records_restored, summary.records_filtered, summary.next_source_offset) == (19, 1, 20)
    assert summary.attempts == ((None, ATTEMPT),)


def test_progress_short_of_the_last_segment_is_refused():
    store, unit = _unit_with_chunks([(0, 100, 10)], [(10, 110, 10)])
    with pytest.raises(IntegrityError, match=r"t2\[0\]: restore progress is at source offset 10, expected 20"):
        verify_restore(store, PREFIX, [unit], {("t2", 0): RestoreProgress(10, ATTEMPT)})


def _retried_with_a_zombie() -> tuple[DictStore, PartitionRestore]:
    """Attempt a1 committed seg0, then was fenced by a2 (resumed at 10), which committed seg1 and seg2.

    a1's chunk for seg1 describes records its aborted transaction produced, and it landed in S3
    after a2's (a zombie's late write); so did a chunk of a0, an attempt that never committed.
    """
    store, unit = DictStore(), PartitionRestore("t", "t2", 0, [_segment(0), _segment(1), _segment(2)])
    write_attempt(store, PREFIX, RestoreAttempt("a0", "t2", 0, None, None))
    write_attempt(store, PREFIX, RestoreAttempt("a1", "t2", 0, None, None))
    write_attempt(store, PREFIX, RestoreAttempt("a2", "t2", 0, 10, "a1"))
    _write_chunk(store, unit.segments[0], [(0, 0, 10)], "a1")
    _write_chunk(store, unit.segments[1], [(10, 11, 10)], "a2")  # after a1's aborted records and its marker
    _write_chunk(store, unit.segments[2], [(20, 22, 10)], "a2")
    _write_chunk(store, unit.segments[1], [(10, 10, 10)], "a1")  # the zombie's, late
    _write_chunk(store, unit.segments[0], [(0, 50, 10)], "a0")
    return store, unit


def test_the_chunks_of_attempts_whose_transactions_aborted_are_never_read():
    store, unit = _retried_with_a_zombie()
    (summary,) = verify_restore(store, PREFIX, [unit], _done(unit, "a2"))
    assert summary.attempts == ((None, "a1"), (10, "a2"))
    write_restore_manifest(store, PREFIX, "kafka_restore/r", "bk", {}, [summary])
    assert load_offset_map(store, PREFIX, "t2", 0).runs == ((0, 0, 10), (10, 11, 10), (20, 22, 10))


def test_a_segment_whose_committing_attempt_wrote_no_chunk_is_refused():
    store, unit = _retried_with_a_zombie()
    del store.objects[chunk_key(PREFIX, "t2", 0, 10, "a2")]  # a1's (aborted) chunk for it does not stand in
    with pytest.raises(IntegrityError, match=r"Segment bk/t/partition=0/seg1 was planned but never restored to "
                                             r"t2\[0\]: the restore attempt that committed it \(a2\) wrote no "
                                             r"offset-map chunk s3://b/.*/00000000000000000010-a2.json"):
        verify_restore(store, PREFIX, [unit], _done(unit, "a2"))


def test_a_missing_attempt_record_is_refused_naming_it():
    store, unit = _retried_with_a_zombie()
    del store.objects[attempt_key(PREFIX, "t2", 0, "a1")]
    with pytest.raises(IntegrityError, match=r"attempt a1 committed progress, but its record "
                                             r"s3://b/bk/_restores/kafka_restore/r/attempts/t2/partition=0/a1.json"):
        verify_restore(store, PREFIX, [unit], _done(unit, "a2"))


@pytest.mark.parametrize("earlier", [RestoreAttempt("a1", "t2", 0, 10, "a2"), RestoreAttempt("a1", "t2", 0, 20, None)])
def test_an_attempt_chain_that_loops_or_goes_backwards_is_refused(earlier):
    store = DictStore()
    write_attempt(store, PREFIX, earlier)
    write_attempt(store, PREFIX, RestoreAttempt("a2", "t2", 0, 10, "a1"))
    with pytest.raises(IntegrityError, match="attempt records are damaged: attempt a2 resumed at source offset 10 "
                                             "after attempt a1"):
        attempt_chain(store, PREFIX, "t2", 0, RestoreProgress(20, "a2"))


@pytest.mark.parametrize("progress,why", [
    (RestoreProgress(20, None), r"its progress \(20\) names no attempt"),
    (RestoreProgress(20, "a2"), "its oldest attempt a2 resumed at 10 after a commit that names none"),
])
def test_progress_committed_by_a_version_without_attempts_is_refused_saying_so(progress, why):
    store = DictStore()
    write_attempt(store, PREFIX, RestoreAttempt("a2", "t2", 0, 10, None))
    with pytest.raises(IntegrityError, match=rf"t2\[0\]: {why}: .* without restore attempts.*new DAG run"):
        attempt_chain(store, PREFIX, "t2", 0, progress)


def test_a_restore_manifest_without_attempt_chains_is_refused_saying_so():
    store, unit = _retried_with_a_zombie()
    (summary,) = verify_restore(store, PREFIX, [unit], _done(unit, "a2"))
    write_restore_manifest(store, PREFIX, "kafka_restore/r", "bk", {}, [summary])
    key = f"{PREFIX}/restore-manifest.json"
    manifest = json.loads(store.objects[key])
    del manifest["partitions"][0]["attempts"]
    store.objects[key] = json.dumps(manifest).encode()
    with pytest.raises(IntegrityError, match="restore-manifest.json was written by a version .* without restore "
                                             "attempts"):
        load_offset_map(store, PREFIX, "t2", 0)


def test_each_source_offset_belongs_to_the_last_attempt_that_resumed_at_or_before_it():
    chain = ((None, "a1"), (10, "a2"), (30, "a3"))
    assert [committer_of(chain, o) for o in (0, 9, 10, 29, 30, 99)] == ["a1", "a1", "a2", "a2", "a3", "a3"]
    assert committer_of(chain[1:], 0) is None  # before the first resume point of a chain
    assert committer_of((), 0) is None


@pytest.mark.parametrize("runs,problem", [
    ([(500, 0, 3)], r"runs outside source offsets 0..9: \[\(500, 0, 3\)\]"),  # another segment's offsets
    ([(0, 100, 5), (8, 105, 5)], r"runs outside source offsets 0..9"),  # runs past the segment's end
])
def test_a_chunk_mapping_offsets_outside_its_segment_is_refused(runs, problem):
    store, unit = _unit_with_chunks(runs)
    with pytest.raises(IntegrityError, match=f"Segment bk/t/partition=0/seg0: .*{problem}"):
        verify_restore(store, PREFIX, [unit], _done(unit))


def test_a_chunk_whose_runs_do_not_add_up_to_its_restored_count_is_refused():
    store, unit = _unit_with_chunks([(0, 100, 10)])
    key = chunk_key(PREFIX, "t2", 0, 0, ATTEMPT)
    chunk = OffsetMapChunk.from_json(store.objects[key])
    store.objects[key] = OffsetMapChunk(*[getattr(chunk, f) for f in ("source_topic", "target_topic", "partition",
                                                                          "segment", "checksum")],
                                        9, 1, chunk.runs).to_json()
    with pytest.raises(IntegrityError, match="maps 10 records .* but 9 were restored"):
        verify_restore(store, PREFIX, [unit], _done(unit))


def test_two_segments_claiming_one_target_offset_are_refused():
    store, unit = _unit_with_chunks([(0, 100, 10)], [(10, 109, 10)])
    with pytest.raises(IntegrityError, match=r"t2\[0\]: the offset maps of bk/t/partition=0/seg0 and "
                                             r"bk/t/partition=0/seg1 both claim target offset 109"):
        verify_restore(store, PREFIX, [unit], _done(unit))


def test_a_chunk_mapping_one_source_offset_twice_is_refused():
    store, unit = _unit_with_chunks([(0, 100, 5), (4, 105, 5)])
    with pytest.raises(IntegrityError, match="seg0: its offset map maps source offset 4 twice"):
        verify_restore(store, PREFIX, [unit], _done(unit))


def test_an_offset_map_is_read_only_through_a_verified_restore_manifest():
    store, _ = _retried_with_a_zombie()
    with pytest.raises(IntegrityError, match=r"restore-manifest.json is missing: the restore was not verified"):
        load_offset_map(store, PREFIX, "t2", 0)
