"""ui.timeline and ui.page: the gap drawn where the recorded gap is, the colours, escaping, no secrets."""

from __future__ import annotations

import re

from airflow_kafka_backup.engine.coverage import RestoreRecord, summarize_coverage
from airflow_kafka_backup.engine.storage.checksums import SHA256, Checksum
from airflow_kafka_backup.engine.storage.manifest import PartitionRange, RunManifest, SegmentInfo, SegmentSettings
from airflow_kafka_backup.ui.locations import BackupLocation
from airflow_kafka_backup.ui.overview import backup_overview
from airflow_kafka_backup.ui.page import render_page
from airflow_kafka_backup.ui.rpo import CommitMeasurement
from airflow_kafka_backup.ui.timeline import Axis, axis_for, merge_intervals

NOW = 1_800_000_000_000
S = SegmentSettings("msgpack", "zstd", 100, 10)


def _seg(partition: int, first: int, last: int, t0: int, t1: int) -> SegmentInfo:
    return SegmentInfo(f"kb/<t>/partition={partition}/{first}", "<t>", partition, first, last, last - first + 1,
                       t0, t1, 100, Checksum(SHA256, "0" * 64))


def _overview(rpo_s: float = 60, measured_ago_ms: int = 5_000) -> dict:
    t = NOW - 600_000
    first = RunManifest("r1", S, [PartitionRange("<t>", 0, 0, 100)], [_seg(0, 0, 99, t, t + 99_000)])
    second = RunManifest("r2", S, [PartitionRange("<t>", 0, 150, 200, lost_start=100, lost_end=150)],
                         [_seg(0, 150, 199, t + 300_000, t + 349_000)])
    restore = RestoreRecord("kafka_restore/<run>", NOW - 1_000, {"<t>": "<t>-r"}, None, t + 320_000, {"<t>": 120}, 1)
    coverage = summarize_coverage("bucket", "kb", [first, second], [NOW - 500_000, NOW - measured_ago_ms - 1_000],
                                  [restore])
    location = BackupLocation("bucket", "kb", "aws_default", "sse_key_var", {"<dag>"}, {"<dag>": rpo_s})
    return backup_overview(location, coverage, NOW - 2_000, NOW,
                           CommitMeasurement(NOW - measured_ago_ms, {"<t>": {"records": 0}}),
                           {"dag_id": "<dag>", "run_id": "r2", "state": "success", "finished_ms": NOW - 4_000})


def test_the_gap_is_drawn_between_the_records_either_side_of_it():
    overview = _overview()
    html = render_page([overview], NOW, 60)
    axis = axis_for(overview, NOW)
    gaps = re.findall(r'<rect class="gap" x="([\d.]+)" y="[\d.]+" width="([\d.]+)"[^>]*data-partition="0" '
                      r'data-start-offset="100" data-end-offset="150" data-start-ms="(\d+)" data-end-ms="(\d+)"', html)
    assert gaps  # on the topic's row and on partition 0's
    t = NOW - 600_000
    for x, width, start, end in gaps:
        assert (int(start), int(end)) == (t + 99_000, t + 300_000)
        assert float(x) == axis.x(t + 99_000)
        assert abs(float(x) + float(width) - axis.x(t + 300_000)) < 0.02
    spans = re.findall(r'<rect class="span" x="([\d.]+)"[^>]*data-start-ms="(\d+)" data-end-ms="(\d+)"', html)
    assert {(int(s), int(e)) for _, s, e in spans} == {(t, t + 99_000), (t + 300_000, t + 349_000)}
    assert 'class="restore"' in html and f'data-at-ms="{t + 320_000}"' in html
    assert 'class="now-line"' in html and f'data-at-ms="{NOW - 60_000}"' in html  # the RPO line


def test_the_rpo_colour_follows_the_lag():
    assert _overview(rpo_s=60, measured_ago_ms=5_000)["rpo"]["status"] == "green"
    assert _overview(rpo_s=60, measured_ago_ms=50_000)["rpo"]["status"] == "amber"
    red = _overview(rpo_s=60, measured_ago_ms=61_000)
    assert red["rpo"]["status"] == "red"
    assert 'class="pill rpo-status rpo-red" data-status="red"' in render_page([red], NOW, 60)


def test_names_are_escaped_and_no_secret_or_connection_detail_is_shown():
    html = render_page([_overview()], NOW, 60)
    assert "<t>" not in html and "&lt;t&gt;" in html and "&lt;dag&gt;" in html
    # The location knows the SSE-C key's Variable name and the connection id, the page shows neither.
    assert "sse_key_var" not in html and "aws_default" not in html
    assert "S3 data read 2 s ago" in html and "kept 60 s" in html


def test_axis_and_intervals():
    axis = Axis(1_000, 2_000, 100)
    assert (axis.x(1_000), axis.x(1_500), axis.x(5_000), axis.x(0)) == (0.0, 50.0, 100.0, 0.0)
    assert merge_intervals([(5, 6), (1, 3), (2, 4)]) == [(1, 4), (5, 6)]
    assert "No backup DAG that you may read" in render_page([], NOW, 60)
