"""Unit tests: settings validation messages, manifest determinism, checkpoint merging."""

from __future__ import annotations

import pytest

from airflow_kafka_backup.engine.backup.settings import BackupSettings
from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.storage.checksums import SHA256, Checksum
from airflow_kafka_backup.engine.storage.key_layout import manifest_key, segment_key
from airflow_kafka_backup.engine.storage.manifest import (
    PartitionRange,
    RunManifest,
    SegmentInfo,
    SegmentSettings,
    checkpoints_from_json,
    checkpoints_to_json,
    merge_checkpoints,
)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"flush_size": 0}, "flush_size must be greater than 0"),
        ({"flush_size": "ten"}, "flush_size must be a whole number"),
        ({"compression": "lz4"}, "Unknown compression 'lz4'"),
        ({"topics": []}, "topics must be a non-empty list"),
        ({"bucket": None}, "bucket is required"),
        ({"offset_pad_width": -1}, "offset_pad_width"),
        ({"isolation_level": "dirty"}, "isolation_level"),
        ({"allow_data_loss": "yes"}, "allow_data_loss"),
    ],
)
def test_bad_settings_are_refused_with_a_message_naming_them(override, message):
    kwargs = {"topics": ["t"], "bucket": "b", **override}
    with pytest.raises(ConfigurationError, match=message):
        BackupSettings.create(**kwargs)


def test_the_text_a_dag_without_native_rendering_renders_is_read_as_the_value_it_stands_for():
    settings = BackupSettings.create(topics=["t"], bucket="b", offset_pad_width="12", allow_data_loss="False",
                                     rotate_interval_ms="None", rotate_schedule_interval_ms="None")
    assert settings.segments.offset_pad_width == 12 and settings.allow_data_loss is False
    assert settings.segments.rotate_interval_ms is None and settings.segments.rotate_schedule_interval_ms is None
    assert BackupSettings.create(topics=["t"], bucket="b", allow_data_loss="true").allow_data_loss is True
    with pytest.raises(ConfigurationError, match="offset_pad_width must be a whole number from 0 to 20, got '21'"):
        BackupSettings.create(topics=["t"], bucket="b", offset_pad_width="21")


def test_templated_strings_are_accepted():
    s = BackupSettings.create(topics="a, b", bucket="b", flush_size="25", prefix="/x/")
    assert s.topics == ("a", "b") and s.segments.flush_size == 25 and s.prefix == "x"


def test_keys():
    assert segment_key("p/", "t", 2, 42, 10, ".jsonl") == "p/t/partition=2/t+2+0000000042.jsonl"
    assert segment_key("", "t", 2, 42, 0, ".jsonl.gz") == "t/partition=2/t+2+42.jsonl.gz"
    assert manifest_key("p", "manual__2026-01-01T00:00:00+00:00") == \
        "p/_manifests/run=manual__2026-01-01T00_00_00_00_00.json"


def test_manifest_round_trip_is_deterministic():
    seg = SegmentInfo("k", "t", 0, 0, 9, 10, 1, 2, 100, Checksum(SHA256, "ab"))
    m = RunManifest("r", SegmentSettings("jsonl", "gzip", 10, 10),
                    [PartitionRange("t", 1, 0, 0), PartitionRange("t", 0, 0, 10, None, None)], [seg])
    again = RunManifest.from_json(m.to_json())
    assert again.to_json() == m.to_json()
    assert again.end_offsets() == {("t", 0): 10, ("t", 1): 0}


def test_checkpoints_only_move_forward():
    merged = merge_checkpoints({("t", 0): 10, ("t", 1): 5}, {("t", 0): 7, ("u", 0): 1})
    assert merged == {("t", 0): 10, ("t", 1): 5, ("u", 0): 1}
    assert checkpoints_from_json(checkpoints_to_json(merged)) == merged
