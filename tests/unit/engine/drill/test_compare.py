"""The drill's comparison: digests over key, value, ordered headers, timestamp and type, in order, and the
first differing offset named."""

from __future__ import annotations

from dataclasses import replace

import pytest

from airflow_kafka_backup.engine.drill.compare import (
    CREATE_TIME,
    LOG_APPEND_TIME,
    ObservedRecord,
    compare_partition,
    with_source_offsets,
)
from tests.unit.fake_message import FakeMessage


def rec(offset: int, key=b"k", value=b"v", headers=(("h", b"1"),), ts=1_700_000_000_000, ts_type=CREATE_TIME):
    return ObservedRecord(offset, key, value, tuple(headers), ts, ts_type)


def restored(source: ObservedRecord, target_offset: int, **changes) -> ObservedRecord:
    return replace(source, target_offset=target_offset, **changes)


def compare(source, restore, compacted=False, window=(10, 15)):
    return compare_partition("orders", "drill.orders", 0, window, source, restore, compacted=compacted)


SOURCE = [rec(o, key=f"k{o}".encode()) for o in range(10, 15)]


def test_identical_sides_pass_with_equal_digests():
    result = compare(SOURCE, [restored(r, i) for i, r in enumerate(SOURCE)])
    assert result.ok and result.source.records == result.restored.records == 5
    assert result.source.sha256 == result.restored.sha256
    assert (result.source.first_offset, result.source.last_offset) == (10, 14)


@pytest.mark.parametrize("change, reason", [
    ({"value": None}, "value differs"),  # null is not empty
    ({"value": b""}, "value differs"),
    ({"key": None}, "key differs"),
    ({"headers": (("h", None),)}, "headers differs"),
    ({"headers": (("h", b"1"), ("h", b"1"))}, "headers differs"),  # a duplicate dropped or added
    ({"timestamp": 1_700_000_000_001}, "timestamp differs"),
])
def test_a_changed_field_is_named_with_its_offset(change, reason):
    restore = [restored(r, i, **(change if r.source_offset == 12 else {})) for i, r in enumerate(SOURCE)]
    result = compare(SOURCE, restore)
    assert result.first_difference == {"source_offset": 12, "target_offset": 2, "reason": reason}
    assert result.source.sha256 != result.restored.sha256


def test_header_order_counts():
    source = [rec(10, headers=(("a", b"1"), ("b", b"2")))]
    result = compare(source, [restored(source[0], 0, headers=(("b", b"2"), ("a", b"1")))], window=(10, 11))
    assert not result.ok and result.first_difference["reason"] == "headers differs"


def test_the_first_of_several_differences_is_named_and_both_digests_cover_everything():
    restore = [restored(r, i, value=b"x" if r.source_offset in (11, 13) else r.value) for i, r in enumerate(SOURCE)]
    result = compare(SOURCE, restore)
    assert result.first_difference["source_offset"] == 11
    assert result.source.records == result.restored.records == 5


def test_a_missing_record_is_named():
    restore = [restored(r, i) for i, r in enumerate(r for r in SOURCE if r.source_offset != 13)]
    result = compare(SOURCE, restore)
    assert result.first_difference == {"source_offset": 13, "target_offset": None,
                                       "reason": "the source record is missing from the restore"}


def test_an_extra_restored_record_is_named_unless_the_source_was_compacted_since():
    source = [r for r in SOURCE if r.source_offset != 12]
    restore = [restored(r, i) for i, r in enumerate(SOURCE)]
    assert compare(source, restore).first_difference["source_offset"] == 12
    compacted = compare(source, restore, compacted=True)
    assert compacted.ok and compacted.compacted_in_source == 1


def test_log_append_time_is_restored_as_create_time_and_broker_stamped_timestamps_are_left_out():
    source = [rec(10, ts_type=LOG_APPEND_TIME), rec(11, ts=-1, ts_type=0)]
    restore = [restored(source[0], 0, timestamp_type=CREATE_TIME),
               restored(source[1], 1, timestamp=1_800_000_000_000, timestamp_type=CREATE_TIME)]
    result = compare(source, restore, window=(10, 12))
    assert result.ok and result.source.sha256 == result.restored.sha256
    wrong_type = compare(source[:1], [restored(source[0], 0, timestamp_type=LOG_APPEND_TIME)], window=(10, 11))
    assert "timestamp type (CreateTime vs LogAppendTime)" in wrong_type.first_difference["reason"]


def Message(offset, key=b"k", value=b"v", headers=None, ts=(CREATE_TIME, 5)) -> FakeMessage:  # noqa: N802
    return FakeMessage(offset, key, value, headers, ts)


def test_restored_records_get_their_source_offsets_from_the_offset_map():
    # Source offsets 100..102 went to 0..2, then (a gap in the source) 110..111 to 3..4.
    runs = [(110, 3, 2), (100, 0, 3)]
    paired = list(with_source_offsets([Message(t) for t in range(6)], runs))
    assert [(r.source_offset, r.target_offset) for r in paired] == [
        (100, 0), (101, 1), (102, 2), (110, 3), (111, 4), (-1, 5)]  # 5: the map does not name it
    assert paired[0].headers == ()
