"""Unit tests: rotation and key naming of the per-partition writer (no S3)."""

from __future__ import annotations

import os

from airflow_kafka_backup.engine.backup.partition_writer import TopicPartitionWriter, WriterState
from airflow_kafka_backup.engine.records import Record
from airflow_kafka_backup.engine.storage.manifest import SegmentSettings


def _write(offsets, flush_size, tmp_path):
    closed = []
    writer = TopicPartitionWriter("t", 3, "pre", SegmentSettings("jsonl", "gzip", flush_size, 6),
                                  closed.append, spool_dir=str(tmp_path))
    for o in offsets:
        writer.write(Record(3, o, o, "CreateTime", b"k", b"v", []))
    assert writer.state in (WriterState.IDLE, WriterState.WRITING)
    writer.finish()
    assert writer.state is WriterState.IDLE
    return closed


def test_rotates_every_flush_size_records_with_gaps(tmp_path):
    offsets = [0, 1, 2, 5, 6, 9, 10]  # compaction gaps
    closed = _write(offsets, 3, tmp_path)
    assert [(s.info.first_offset, s.info.last_offset, s.info.records) for s in closed] == [
        (0, 2, 3), (5, 9, 3), (10, 10, 1)]
    assert closed[1].info.key == "pre/t/partition=3/t+3+000005.jsonl.gz"
    assert all(os.path.getsize(s.path) == s.info.bytes for s in closed)


def test_same_records_give_same_segments(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _write(range(100), 30, tmp_path / "a")
    b = _write(range(100), 30, tmp_path / "b")
    assert [s.info for s in a] == [s.info for s in b]
