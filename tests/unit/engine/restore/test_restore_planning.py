"""Unit tests: restore planning from manifests (chain, overlaps, newest captures, bounds), with an in-memory store."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from airflow_kafka_backup.engine.backup.manual_ranges import resolve_manual_ranges
from airflow_kafka_backup.engine.backup.planning import plan_ranges
from airflow_kafka_backup.engine.chain import check_chain
from airflow_kafka_backup.engine.errors import ConfigurationError, IntegrityError
from airflow_kafka_backup.engine.restore.planning import RestoreSettings, plan_restore
from airflow_kafka_backup.engine.storage.checksums import SHA256, Checksum
from airflow_kafka_backup.engine.storage.manifest import (
    PartitionRange,
    RunManifest,
    SegmentInfo,
    SegmentSettings,
    write_manifest,
)
from airflow_kafka_backup.engine.storage.object_store import ObjectEntry
from airflow_kafka_backup.engine.time_window import parse_timestamp
from airflow_kafka_backup.engine.topics.offsets import OffsetBounds
from airflow_kafka_backup.engine.verify import verify_backup

JSONL = SegmentSettings("jsonl", "gzip", 100, 10)
MSGPACK = SegmentSettings("msgpack", "zstd", 100, 10)


class MemoryStore:
    """The few S3ObjectStore calls planning and a quick verify make, over a dict.

    Each PUT is stamped ``clock_ms`` (its LastModified), which then moves on by ``tick_ms`` (S3 keeps
    whole seconds: set it to 0 for writes within one second); a listing's ETag is the bytes' MD5, as
    S3's for an unencrypted single-part PUT.
    """

    bucket = "bucket"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.modified: dict[str, int] = {}
        self.clock_ms = 1_780_000_000_000
        self.tick_ms = 1000

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        self.objects[key] = data
        self.modified[key] = self.clock_ms
        self.clock_ms += self.tick_ms

    def list_entries(self, prefix: str) -> list[ObjectEntry]:
        return [ObjectEntry(k, len(self.objects[k]), self.modified.get(k, 0),
                            '"' + hashlib.md5(self.objects[k]).hexdigest() + '"') for k in self.list_keys(prefix)]

    def get_bytes(self, key: str) -> bytes:
        return self.objects[key]

    def list_keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))

    def head(self, key: str) -> dict | None:
        if key not in self.objects:
            return None
        return {"ContentLength": 1, "Metadata": {"sha256": "x"}}


def segment(first: int, last: int, key: str | None = None) -> SegmentInfo:
    return SegmentInfo(key or f"p/t/partition=0/t+0+{first:010d}.jsonl.gz", "t", 0, first, last,
                       last - first + 1, 1, 1, 1, Checksum(SHA256, "x"))


def commit(store: MemoryStore, run_id: str, ranges: list[PartitionRange], segments: list[SegmentInfo],
           settings: SegmentSettings = JSONL, **captures) -> None:
    for seg in segments:
        store.objects.setdefault(seg.key, b"segment")
    write_manifest(store, "p", RunManifest(run_id, settings, ranges, segments, **captures))


def test_a_loss_recorded_on_an_empty_range_is_not_a_hole():
    # Retention emptied an idle partition before the run, which moved on with allow_data_loss.
    (lossy,) = plan_ranges({("t", 0): OffsetBounds(150, 150)}, {("t", 0): 100}, True)
    assert (lossy.start, lossy.end, lossy.lost_start, lossy.lost_end) == (150, 150, 100, 150)
    ranges = [PartitionRange("t", 0, 0, 100), lossy, PartitionRange("t", 0, 150, 200)]
    check_chain("t", 0, ranges)
    with pytest.raises(IntegrityError, match=r"hole: offsets 100\.\.149"):
        check_chain("t", 0, [ranges[0], ranges[2]])  # the same gap without the recorded loss


def test_overlapping_segments_under_different_keys_fail_the_plan_and_verify_naming_both():
    store = MemoryStore()
    commit(store, "scheduled__1", [PartitionRange("t", 0, 0, 200)], [segment(0, 99), segment(100, 199)])
    rebuilt = segment(100, 199, key="p/t/partition=0/t+0+0000000100.msgpack.zst")
    commit(store, "manual__1", [PartitionRange("t", 0, 100, 200)], [rebuilt], MSGPACK)
    with pytest.raises(IntegrityError, match=r"t\[0\] overlap") as refused:
        plan_restore(store, "p", RestoreSettings.create(topics=["t"]))
    assert f"s3://bucket/{rebuilt.key}" in str(refused.value)
    assert "s3://bucket/p/t/partition=0/t+0+0000000100.jsonl.gz" in str(refused.value)
    report = verify_backup(store, "p", deep=False)
    assert [p for p in report.problems if "overlap" in p], report.problems


def test_the_same_segment_named_by_two_runs_is_planned_once():
    store = MemoryStore()
    commit(store, "scheduled__1", [PartitionRange("t", 0, 0, 100)], [segment(0, 99)])
    commit(store, "manual__1", [PartitionRange("t", 0, 0, 100)], [segment(0, 99)])
    (unit,) = plan_restore(store, "p", RestoreSettings.create(topics=["t"])).partitions
    assert [s.first_offset for s in unit.segments] == [0]
    assert verify_backup(store, "p", deep=False).ok


def test_verify_reports_two_manifests_disagreeing_about_a_segment():
    store = MemoryStore()
    commit(store, "a", [PartitionRange("t", 0, 0, 100)], [segment(0, 99)])
    other = replace(segment(0, 99), checksum=Checksum(SHA256, "y"))
    commit(store, "b", [PartitionRange("t", 0, 0, 100)], [other])
    assert any("disagree" in p and "run b" in p for p in verify_backup(store, "p", deep=False).problems)


@pytest.mark.parametrize(("older", "newer"), [("run_a", "run_b"), ("run_b", "run_a")])
def test_group_offsets_of_an_idle_partition_come_from_the_newer_run(older, newer):
    # Partition 0 idle at 100 in both runs; partition 1 moved on, and the group caught up meanwhile.
    # Both listing orders: the newer run must win whichever manifest is read first.
    store = MemoryStore()
    commit(store, older, [PartitionRange("t", 0, 0, 100), PartitionRange("t", 1, 0, 10)],
           [segment(0, 99)], consumer_groups={"g": {"t": {"0": 50}}},
           topics=[{"topic": "t", "configs": {"retention.ms": "1"}}])
    commit(store, newer, [PartitionRange("t", 0, 100, 100), PartitionRange("t", 1, 10, 20)], [],
           consumer_groups={"g": {"t": {"0": 100}}}, topics=[{"topic": "t", "configs": {"retention.ms": "2"}}])
    plan = plan_restore(store, "p", RestoreSettings.create(topics=["t"]))
    assert plan.group_offsets == {"g": {"t": {"0": 100}}}
    assert plan.topic_metadata["t"]["configs"] == {"retention.ms": "2"}


def test_a_manual_range_across_runs_with_different_settings_is_refused_naming_where():
    jsonl, msgpack = segment(0, 99), segment(100, 199, key="p/t/partition=0/t+0+0000000100.msgpack.zst")
    manifests = [RunManifest("a", JSONL, [PartitionRange("t", 0, 0, 100)], [jsonl]),
                 RunManifest("b", MSGPACK, [PartitionRange("t", 0, 100, 200)], [msgpack])]
    bounds = {("t", 0): OffsetBounds(0, 300)}
    with pytest.raises(ConfigurationError, match=r"t\[0\] spans .*jsonl, gzip.*from offset 100.*msgpack, zstd"):
        resolve_manual_ranges({("t", 0): (50, 150)}, bounds, {("t", 0): 200}, manifests, False)
    (inside,) = resolve_manual_ranges({("t", 0): (120, 150)}, bounds, {("t", 0): 200}, manifests, False)
    assert (inside.range.start, inside.range.end, inside.settings) == (100, 200, MSGPACK)


def test_a_manual_range_across_the_old_and_the_new_gzip_encoder_is_refused_and_each_rebuilds_with_its_own():
    """gzip from before levels were recorded (zlib, level 6) and ISA-L's gzip are different bytes, so different
    settings: a manual range may rebuild either run's segments, each with its recorded encoder, not both at once."""
    isal = SegmentSettings("jsonl", "gzip", 100, 10, compression_level=1, compression_library="isal")
    old, new = segment(0, 99), segment(100, 199)
    manifests = [RunManifest("a", JSONL, [PartitionRange("t", 0, 0, 100)], [old]),
                 RunManifest("b", isal, [PartitionRange("t", 0, 100, 200)], [new])]
    bounds = {("t", 0): OffsetBounds(0, 300)}
    with pytest.raises(ConfigurationError, match=r"jsonl, gzip, flush_size 100\) and.*jsonl, gzip level 1 \(isal\)"):
        resolve_manual_ranges({("t", 0): (50, 150)}, bounds, {("t", 0): 200}, manifests, False)
    (first,) = resolve_manual_ranges({("t", 0): (10, 20)}, bounds, {("t", 0): 200}, manifests, False)
    (second,) = resolve_manual_ranges({("t", 0): (120, 150)}, bounds, {("t", 0): 200}, manifests, False)
    assert (first.settings, second.settings) == (JSONL, isal)
    assert first.settings.compression_level is None  # re-written with zlib at level 6, as committed


@pytest.mark.parametrize("value", [1717200000, "1717200000", 20240101, "20240101", 99_999_999_999])
def test_epoch_seconds_and_dashless_dates_are_refused(value):
    with pytest.raises(ConfigurationError, match=r"until_timestamp .* looks like epoch seconds"):
        parse_timestamp("until_timestamp", value)


@pytest.mark.parametrize(("value", "expected"), [
    (0, 0), ("0", 0), (1717200000000, 1717200000000), ("2024-06-01T00:00:00Z", 1717200000000),
    ("2024-06-01", 1717200000000), (None, None),
])
def test_epoch_milliseconds_and_iso_are_accepted(value, expected):
    assert parse_timestamp("until_timestamp", value) == expected


@pytest.mark.parametrize("target", ["payments restored", "a/b", "é", ".", "..", "x" * 250])
def test_illegal_target_topic_names_are_refused_before_anything_is_created(target):
    with pytest.raises(ConfigurationError, match="not legal in Kafka"):
        RestoreSettings.create(topics=["orders", "payments"], topic_mapping={"payments": target})


def test_legal_target_topic_names_pass():
    settings = RestoreSettings.create(topics=["a", "b"], topic_mapping={"a": "A.restored_1-x", "b": "x" * 249})
    assert settings.topic_mapping == {"a": "A.restored_1-x", "b": "x" * 249}


def test_group_offsets_on_partitions_the_backup_does_not_have_are_dropped_with_a_warning(caplog):
    # The topic grew to 3 partitions between the run's partition list and its group capture.
    store = MemoryStore()
    commit(store, "scheduled__1", [PartitionRange("t", 0, 0, 100)], [segment(0, 99)],
           consumer_groups={"g": {"t": {"0": 50, "2": 7}}, "only-new": {"t": {"1": 3}}})
    plan = plan_restore(store, "p", RestoreSettings.create(topics=["t"]))
    assert plan.group_offsets == {"g": {"t": {"0": 50}}}  # only-new had nothing left to move
    assert "Consumer group g has offsets on t partitions 2, which the backup does not have (it has 1)" in caplog.text


def test_a_group_mapping_naming_a_group_without_offsets_on_the_restored_topics_says_so():
    from airflow_kafka_backup.engine.restore.group_offsets import target_groups

    with pytest.raises(ConfigurationError, match="names groups with no recorded offsets on the topics being "
                                                 r"restored: \['biling'\]"):
        target_groups({"billing": {}}, {"biling": "billing-v2"})
