"""engine.coverage: spans, recorded gaps placed in time, holes, totals and restores, from manifests alone."""

from __future__ import annotations

from airflow_kafka_backup.engine.coverage import RestoreRecord, partition_coverage, summarize_coverage
from airflow_kafka_backup.engine.storage.checksums import SHA256, Checksum
from airflow_kafka_backup.engine.storage.manifest import PartitionRange, RunManifest, SegmentInfo, SegmentSettings

SETTINGS = SegmentSettings("msgpack", "zstd", 100, 10)


def seg(topic: str, partition: int, first: int, last: int, t0: int, t1: int, size: int = 1000) -> SegmentInfo:
    return SegmentInfo(f"p/{topic}/partition={partition}/{topic}+{partition}+{first:010d}.msgpack", topic, partition,
                       first, last, last - first + 1, t0, t1, size, Checksum(SHA256, "0" * 64))


def test_a_recorded_loss_splits_the_spans_and_sits_in_time_between_the_records_either_side():
    ranges = [PartitionRange("t", 0, 0, 100), PartitionRange("t", 0, 150, 220, lost_start=100, lost_end=150)]
    segments = [seg("t", 0, 0, 49, 1_000, 1_049), seg("t", 0, 50, 99, 1_050, 1_099), seg("t", 0, 150, 219, 5_000,
                                                                                          5_069)]
    cov = partition_coverage(0, ranges, segments)
    assert [(s.start_offset, s.end_offset, s.segments, s.records, s.min_timestamp, s.max_timestamp)
            for s in cov.spans] == [(0, 100, 2, 100, 1_000, 1_099), (150, 220, 1, 70, 5_000, 5_069)]
    (gap,) = cov.gaps
    assert (gap.start_offset, gap.end_offset, gap.offsets) == (100, 150, 50)
    assert (gap.after_timestamp, gap.before_timestamp) == (1_099, 5_000)
    assert cov.problems == []
    assert cov.to_dict()["lost_offsets"] == 50 and cov.to_dict()["records"] == 170


def test_a_hole_no_manifest_explains_is_a_problem_and_a_new_span():
    cov = partition_coverage(3, [PartitionRange("t", 3, 0, 10), PartitionRange("t", 3, 20, 30)], [], label="t")
    assert [(s.start_offset, s.end_offset) for s in cov.spans] == [(0, 10), (20, 30)]
    assert cov.gaps == []
    assert cov.problems and "offsets 10..19 are in no committed manifest" in cov.problems[0]


def test_runs_join_up_and_a_rerun_counts_its_segments_once():
    first = RunManifest("r1", SETTINGS, [PartitionRange("t", 0, 0, 50), PartitionRange("t", 1, 0, 0)],
                        [seg("t", 0, 0, 49, 10, 59)])
    second = RunManifest("r2", SETTINGS, [PartitionRange("t", 0, 50, 80), PartitionRange("t", 1, 0, 5)],
                         [seg("t", 0, 50, 79, 60, 89), seg("t", 1, 0, 4, 70, 74)])
    rerun = RunManifest("r2-again", SETTINGS, second.ranges, second.segments)
    restore = RestoreRecord.from_manifest({"restore_id": "kafka_restore/run1", "settings": {
        "topic_mapping": {"t": "t2"}, "from_timestamp": None, "until_timestamp": 70},
        "partitions": [{"source_topic": "t", "target_topic": "t2", "partition": 0, "records_restored": 60},
                       {"source_topic": "t", "target_topic": "t2", "partition": 1, "records_restored": 0}]}, 99)
    cov = summarize_coverage("b", "p", [first, second, rerun], [1_000, 2_000, 3_000], [restore])
    assert cov.manifests == 3 and cov.last_commit_ms == 3_000
    (incarnation,) = cov.topics["t"]
    body = incarnation.to_dict()
    assert (body["partitions"], body["segments"], body["records"], body["bytes"]) == (2, 3, 85, 3000)
    assert (body["min_timestamp"], body["max_timestamp"], body["lost_offsets"]) == (10, 89, 0)
    assert [(p["partition"], p["start_offset"], p["end_offset"]) for p in body["by_partition"]] == [(0, 0, 80),
                                                                                                     (1, 0, 5)]
    (r,) = cov.to_dict()["restores"]
    assert r["records_restored"] == {"t": 60} and r["until_timestamp"] == 70 and r["partitions"] == 2
