"""Unit tests: the restore's verify step refuses offset maps that do not describe the planned segments.

S3 is a dict here; the integration tests verify real restores (and damaged ones) on the real endpoint.
"""

from __future__ import annotations

import pytest

from airflow_kafka_backup.errors import IntegrityError
from airflow_kafka_backup.key_layout import chunk_key
from airflow_kafka_backup.offset_map import OffsetMapChunk
from airflow_kafka_backup.restore_manifest import verify_restore
from airflow_kafka_backup.restore_planning import PartitionRestore, PlannedSegment

PREFIX = "bk/_restores/kafka_restore/r"


class DictStore:
    bucket = "b"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def list_keys(self, prefix: str):
        return sorted(k for k in self.objects if k.startswith(prefix))

    def get_bytes(self, key: str) -> bytes:
        return self.objects[key]


def _unit_with_chunks(*runs_per_segment) -> tuple[DictStore, PartitionRestore]:
    """Segments of 10 records at source offsets 0.., 10.., ...; each chunk with the runs given (all restored)."""
    store, unit = DictStore(), PartitionRestore("t", "t2", 0)
    for i, runs in enumerate(runs_per_segment):
        seg = PlannedSegment(f"bk/t/partition=0/seg{i}", 10 * i, 10 * i + 9, 10, 100, f"sha{i}", "jsonl", "none")
        unit.segments.append(seg)
        restored = sum(n for _, _, n in runs)
        chunk = OffsetMapChunk("t", "t2", 0, seg.key, seg.sha256, restored, 10 - restored, tuple(runs))
        store.objects[chunk_key(PREFIX, "t2", 0, seg.first_offset)] = chunk.to_json()
    return store, unit


def test_exact_maps_pass():
    store, unit = _unit_with_chunks([(0, 100, 10)], [(10, 110, 4), (15, 114, 5)])  # source 14 filtered out
    (summary,) = verify_restore(store, PREFIX, [unit])
    assert (summary.records_restored, summary.records_filtered, summary.next_source_offset) == (19, 1, 20)


@pytest.mark.parametrize("runs,problem", [
    ([(500, 0, 3)], r"runs outside source offsets 0..9: \[\(500, 0, 3\)\]"),  # another segment's offsets
    ([(0, 100, 5), (8, 105, 5)], r"runs outside source offsets 0..9"),  # runs past the segment's end
])
def test_a_chunk_mapping_offsets_outside_its_segment_is_refused(runs, problem):
    store, unit = _unit_with_chunks(runs)
    with pytest.raises(IntegrityError, match=f"Segment bk/t/partition=0/seg0: .*{problem}"):
        verify_restore(store, PREFIX, [unit])


def test_a_chunk_whose_runs_do_not_add_up_to_its_restored_count_is_refused():
    store, unit = _unit_with_chunks([(0, 100, 10)])
    key = chunk_key(PREFIX, "t2", 0, 0)
    chunk = OffsetMapChunk.from_json(store.objects[key])
    store.objects[key] = OffsetMapChunk(*[getattr(chunk, f) for f in ("source_topic", "target_topic", "partition",
                                                                          "segment", "sha256")],
                                        9, 1, chunk.runs).to_json()
    with pytest.raises(IntegrityError, match="maps 10 records .* but 9 were restored"):
        verify_restore(store, PREFIX, [unit])


def test_two_segments_claiming_one_target_offset_are_refused():
    store, unit = _unit_with_chunks([(0, 100, 10)], [(10, 109, 10)])
    with pytest.raises(IntegrityError, match=r"t2\[0\]: the offset maps of bk/t/partition=0/seg0 and "
                                             r"bk/t/partition=0/seg1 both claim target offset 109"):
        verify_restore(store, PREFIX, [unit])


def test_a_chunk_mapping_one_source_offset_twice_is_refused():
    store, unit = _unit_with_chunks([(0, 100, 5), (4, 105, 5)])
    with pytest.raises(IntegrityError, match="seg0: its offset map maps source offset 4 twice"):
        verify_restore(store, PREFIX, [unit])
