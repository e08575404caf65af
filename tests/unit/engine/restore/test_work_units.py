"""Unit tests: restore work units written to S3, read back by reference, checked by their digest."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from airflow_kafka_backup.engine.errors import IntegrityError
from airflow_kafka_backup.engine.restore.planning import PartitionRestore, PlannedSegment
from airflow_kafka_backup.engine.restore.work_units import read_work_unit, write_work_units
from airflow_kafka_backup.engine.storage.checksums import SHA256, Checksum
from tests.unit.engine.restore.test_restore_planning import MemoryStore

FOLDER = "bk/_restores/kafka_restore/manual__1"


def _units() -> list[list[PartitionRestore]]:
    def partition(p: int) -> PartitionRestore:
        segments = [PlannedSegment(f"bk/t/partition={p}/t+{p}+{i:010d}.jsonl", i, i + 9, 10, 99,
                                   Checksum(SHA256, "cd" * 32), "jsonl",
                                   "none", 5, 6, 70) for i in (0, 10)]
        return PartitionRestore("t", "t-restored", p, segments, start_offset=3, from_timestamp=4)
    return [[partition(0), partition(2)], [partition(1)]]


def test_units_round_trip_through_s3_and_xcom_carries_only_small_references():
    store = MemoryStore()
    refs = write_work_units(store, FOLDER, _units())
    assert [read_work_unit(store, ref) for ref in refs] == _units()
    assert [(r["partitions"], r["segments"]) for r in refs] == [(2, 4), (1, 2)]
    assert all(r["work_unit_key"].startswith(FOLDER + "/work-units/unit-") for r in refs)
    assert len(json.dumps(refs)) < 300 * len(refs)  # whatever the segments, a few hundred bytes a unit
    assert all(len(store.objects[r["work_unit_key"]]) > 500 for r in refs)


def test_a_retry_reads_the_same_bytes_and_a_new_plan_never_overwrites_them():
    store = MemoryStore()
    refs = write_work_units(store, FOLDER, _units())
    written = dict(store.objects)
    assert write_work_units(store, FOLDER, _units()) == refs and store.objects == written  # same plan, same objects
    other = _units()
    other[0][0].start_offset = 5
    new_refs = write_work_units(store, FOLDER, other)
    assert new_refs[0]["work_unit_key"] != refs[0]["work_unit_key"]
    assert {k: v for k, v in store.objects.items() if k in written} == written
    assert read_work_unit(store, refs[0]) == _units()[0]


def test_a_unit_changed_after_the_plan_is_refused():
    store = MemoryStore()
    (ref, _) = write_work_units(store, FOLDER, _units())
    key = ref["work_unit_key"]
    store.objects[key] = store.objects[key].replace(b'"start_offset":3', b'"start_offset":0')
    with pytest.raises(IntegrityError, match="changed after the plan"):
        read_work_unit(store, ref)


def test_units_inline_in_xcom_from_an_earlier_version_are_still_read():
    unit = _units()[0]
    assert read_work_unit(MemoryStore(), [p.to_dict() for p in unit]) == unit


def test_a_partition_encodes_as_asdict_did():
    """to_dict skips asdict's deep copy; the dict (keys, order, values) and so the bytes are the same, but for
    each segment's checksum, written as one field named after its algorithm (as manifests write it)."""
    for unit in _units():
        for partition in unit:
            expected = asdict(partition)
            for segment in expected["segments"]:
                checksum = segment.pop("checksum")
                segment[checksum["algorithm"]] = checksum["value"]
            assert json.dumps(partition.to_dict()) == json.dumps(expected)
            assert PartitionRestore.from_dict(partition.to_dict()) == partition
