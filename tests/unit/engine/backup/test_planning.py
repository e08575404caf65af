"""Unit tests: range planning, retention-gap detection and work-unit grouping (no Kafka)."""

from __future__ import annotations

import pytest

from airflow_kafka_backup.engine.backup.planning import group_work_units, plan_ranges
from airflow_kafka_backup.engine.errors import ConfigurationError, DataLossError
from airflow_kafka_backup.engine.storage.checksums import SHA256, Checksum
from airflow_kafka_backup.engine.topics.offsets import OffsetBounds


def test_new_partition_starts_at_log_start_and_checkpoint_resumes():
    ranges = plan_ranges({("t", 0): OffsetBounds(5, 10), ("t", 1): OffsetBounds(0, 10)}, {("t", 1): 7}, False)
    assert [(r.partition, r.start, r.end) for r in ranges] == [(0, 5, 10), (1, 7, 10)]


def test_checkpoint_below_log_start_fails_naming_topic_partition_and_offsets():
    with pytest.raises(DataLossError, match=r"t\[1\] offsets 3\.\.4.*allow_data_loss"):
        plan_ranges({("t", 1): OffsetBounds(5, 10)}, {("t", 1): 3}, False)


def test_allowed_data_loss_is_recorded_in_the_range():
    (r,) = plan_ranges({("t", 1): OffsetBounds(5, 10)}, {("t", 1): 3}, True)
    assert (r.start, r.end, r.lost_start, r.lost_end) == (5, 10, 3, 5)


def test_checkpoint_beyond_end_of_the_same_incarnation_is_refused():
    # A recreated topic has another topic ID (see incarnations.identify); with the same one, Kafka lost records.
    with pytest.raises(DataLossError, match="same topic ID"):
        plan_ranges({("t", 0): OffsetBounds(0, 3)}, {("t", 0): 9}, False)


def test_work_units_respect_the_limit_balance_and_are_deterministic():
    bounds = {("t", p): OffsetBounds(0, 100 * (p + 1)) for p in range(50)}
    ranges = plan_ranges(bounds, {}, False)
    units = group_work_units(ranges, 8)
    assert len(units) == 8
    assert sorted((r["topic"], r["partition"]) for u in units for r in u) == sorted(bounds)
    loads = [sum(r["end"] - r["start"] for r in u) for u in units]
    assert max(loads) - min(loads) <= 5000
    assert group_work_units(ranges, 8) == units


def test_empty_ranges_make_no_work_units():
    assert group_work_units(plan_ranges({("t", 0): OffsetBounds(4, 4)}, {}, False), 8) == []


def test_manual_ranges_clamp_to_the_checkpoint_and_snap_to_committed_segments():
    from airflow_kafka_backup.engine.backup.manual_ranges import parse_manual_ranges, resolve_manual_ranges
    from airflow_kafka_backup.engine.storage.manifest import PartitionRange, RunManifest, SegmentInfo, SegmentSettings

    settings = SegmentSettings("jsonl", "gzip", 100, 10)
    segs = [SegmentInfo(f"k{first}", "t", 0, first, first + 99, 100, 0, 0, 1,
                        Checksum(SHA256, "x")) for first in (0, 100, 200)]
    manifest = RunManifest("r", settings, [PartitionRange("t", 0, 0, 300)], segs)
    requested = parse_manual_ranges({"t": {"0": [150, 1000]}, "u": {"0": [0, 5]}})
    bounds = {("t", 0): OffsetBounds(0, 400), ("u", 0): OffsetBounds(0, 9)}
    (only,) = resolve_manual_ranges(requested, bounds, {("t", 0): 300}, [manifest], False)
    assert (only.range.start, only.range.end, only.cuts, only.settings) == (100, 300, (200,), settings)


def test_manual_range_below_the_log_start_is_data_loss():
    from airflow_kafka_backup.engine.backup.manual_ranges import resolve_manual_ranges

    with pytest.raises(DataLossError, match=r"t\[0\] offsets 0\.\.9"):
        resolve_manual_ranges({("t", 0): (0, 50)}, {("t", 0): OffsetBounds(10, 60)}, {("t", 0): 60}, [], False)


def test_split_at_cuts_makes_one_pass_per_segment():
    from airflow_kafka_backup.engine.storage.manifest import PartitionRange
    from airflow_kafka_backup.operators.backup import split_at_cuts

    ranges = [PartitionRange("t", 0, 100, 400), PartitionRange("t", 1, 0, 50)]
    passes = split_at_cuts(ranges, {"t[0]": [200, 300, 999]})
    assert [[(r.partition, r.start, r.end) for r in p] for p in passes] == [
        [(0, 100, 200), (1, 0, 50)], [(0, 200, 300)], [(0, 300, 400)]]
    assert split_at_cuts(ranges, {}) == [ranges]


def test_an_unknown_isolation_level_is_refused_not_read_as_read_uncommitted():
    from confluent_kafka import IsolationLevel

    from airflow_kafka_backup.engine.topics.offsets import isolation_level

    assert isolation_level("read_committed") == IsolationLevel.READ_COMMITTED
    assert isolation_level("read_uncommitted") == IsolationLevel.READ_UNCOMMITTED
    with pytest.raises(ConfigurationError, match="isolation_level must be one of read_committed, read_uncommitted, "
                                                 "got 'read_commited'"):
        isolation_level("read_commited")
