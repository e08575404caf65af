"""Unit tests: time-based rotation cuts on record timestamps, deterministically."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from airflow_kafka_backup.engine.backup.partition_writer import TopicPartitionWriter
from airflow_kafka_backup.engine.backup.rotation import TimeRotation
from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.records import Record
from airflow_kafka_backup.engine.storage.manifest import SegmentSettings

ZURICH = ZoneInfo("Europe/Zurich")


def _segments(timestamps, tmp_path, **rotation):
    closed = []
    settings = SegmentSettings("jsonl", "none", 1_000_000, 10, **rotation)
    writer = TopicPartitionWriter("t", 0, "p", settings, closed.append, spool_dir=str(tmp_path))
    for offset, ts in enumerate(timestamps):
        writer.write(Record(0, offset, ts, "CreateTime", None, b"v", []))
    writer.finish()
    return [s.info for s in closed]


def test_rotate_interval_caps_the_record_time_a_segment_spans(tmp_path):
    timestamps = [0, 400, 900, 1000, 1500, 1400, 2600, 100]  # out of order, as CreateTime can be
    infos = _segments(timestamps, tmp_path, rotate_interval_ms=1000)
    assert all(i.max_timestamp - i.min_timestamp <= 1000 for i in infos)
    assert [(i.first_offset, i.last_offset) for i in infos] == [(0, 3), (4, 5), (6, 6), (7, 7)]
    assert _segments(timestamps, tmp_path, rotate_interval_ms=1000) == infos


def test_schedule_cuts_on_the_local_hour_in_zurich(tmp_path):
    start = int(datetime(2026, 3, 29, 0, 30, tzinfo=ZURICH).timestamp() * 1000)  # DST starts at 02:00
    timestamps = [start + minute * 60_000 for minute in range(0, 240, 7)]
    infos = _segments(timestamps, tmp_path, rotate_schedule_interval_ms=3_600_000, timezone="Europe/Zurich")
    for info in infos:
        first = datetime.fromtimestamp(info.min_timestamp / 1000, ZURICH)
        last = datetime.fromtimestamp(info.max_timestamp / 1000, ZURICH)
        assert (first.date(), first.hour) == (last.date(), last.hour)
    hours = [datetime.fromtimestamp(i.min_timestamp / 1000, ZURICH).hour for i in infos]
    assert hours == [0, 1, 3, 4, 5], "02:00-03:00 does not exist on the day DST starts"


def test_schedule_window_aligns_to_local_midnight():
    rotation = TimeRotation(schedule_interval_ms=86_400_000, timezone_name="Europe/Zurich")
    before = int(datetime(2026, 6, 1, 23, 59, tzinfo=ZURICH).timestamp() * 1000)
    after = int(datetime(2026, 6, 2, 0, 1, tzinfo=ZURICH).timestamp() * 1000)
    assert rotation.window(after) == rotation.window(before) + 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"interval_ms": 0}, "rotate_interval_ms"),
    ({"schedule_interval_ms": -5}, "rotate_schedule_interval_ms"),
    ({"timezone_name": "Mars/Olympus"}, "Unknown timezone 'Mars/Olympus'"),
])
def test_bad_rotation_settings_are_named(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        TimeRotation(**kwargs)
