"""Plain backup settings, validated once, before anything is read or written."""

from __future__ import annotations

from dataclasses import dataclass

from airflow_kafka_backup.engine.backup.rotation import TimeRotation
from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.formats.compression import new_run_compression
from airflow_kafka_backup.engine.formats.segment_codec import get_format
from airflow_kafka_backup.engine.settings import as_bool, check_isolation_level, clean_prefix, positive_int
from airflow_kafka_backup.engine.storage.checksums import DEFAULT_ALGORITHM, validate_algorithm
from airflow_kafka_backup.engine.storage.manifest import SegmentSettings
from airflow_kafka_backup.engine.topics.selection import TopicSelection


def _optional_positive_int(name: str, value: object) -> int | None:
    # The seed's -1 means "disabled"; "None" is a null Param rendered without native rendering.
    if value is None or value in ("", "None") or value == -1 or value == "-1":
        return None
    return positive_int(name, value)


def _pad_width(value: object) -> int:
    """``offset_pad_width``: digits of the offsets in segment keys, 0 to 20 (an int or its text)."""
    width = value
    if isinstance(width, str) and width.strip().isdigit():
        width = int(width)
    if isinstance(width, bool) or not isinstance(width, int) or not 0 <= width <= 20:
        raise ConfigurationError(f"offset_pad_width must be a whole number from 0 to 20, got {value!r}.")
    return width


@dataclass(frozen=True)
class BackupSettings:
    """What a backup run needs besides its clients. Built by :meth:`create`, which validates."""

    topics: tuple[str, ...]  # names and re:<regex> patterns (see topic_selection)
    bucket: str
    prefix: str
    segments: SegmentSettings
    isolation_level: str = "read_committed"
    allow_data_loss: bool = False
    max_work_units: int = 16
    exclude_topics: tuple[str, ...] = ()

    @property
    def selection(self) -> TopicSelection:
        return TopicSelection.parse(self.topics, self.exclude_topics)

    @classmethod
    def create(
        cls,
        *,
        topics: object,
        bucket: object,
        prefix: object = "kafka-backup",
        exclude_topics: object = None,
        flush_size: object = 10_000,
        compression: object = "zstd",
        compression_level: object = None,
        segment_checksum: object = DEFAULT_ALGORITHM,
        segment_format: object = "msgpack",
        offset_pad_width: object = 10,
        isolation_level: object = "read_committed",
        allow_data_loss: object = False,
        max_work_units: object = 16,
        rotate_interval_ms: object = None,
        rotate_schedule_interval_ms: object = None,
        timezone: object = "UTC",
    ) -> BackupSettings:
        if not isinstance(bucket, str) or not bucket.strip():
            raise ConfigurationError("bucket is required: the S3 bucket to write the backup to.")
        prefix = clean_prefix(prefix)
        level, library = new_run_compression(compression, compression_level)
        get_format(str(segment_format))
        pad = _pad_width(offset_pad_width)
        check_isolation_level(isolation_level)
        allow_data_loss = as_bool("allow_data_loss", allow_data_loss)
        rotate = _optional_positive_int("rotate_interval_ms", rotate_interval_ms)
        schedule = _optional_positive_int("rotate_schedule_interval_ms", rotate_schedule_interval_ms)
        TimeRotation(rotate, schedule, str(timezone or "UTC"))  # validates the timezone
        selection = TopicSelection.parse(topics, exclude_topics)
        return cls(
            topics=selection.entries,
            exclude_topics=selection.exclude_entries,
            bucket=bucket.strip(),
            prefix=prefix,
            segments=SegmentSettings(
                segment_format=str(segment_format),
                compression=str(compression),
                compression_level=level,
                compression_library=library,
                segment_checksum=validate_algorithm(segment_checksum),
                flush_size=positive_int("flush_size", flush_size),
                offset_pad_width=pad,
                rotate_interval_ms=rotate,
                rotate_schedule_interval_ms=schedule,
                timezone=str(timezone or "UTC"),
            ),
            isolation_level=str(isolation_level),
            allow_data_loss=allow_data_loss,
            max_work_units=positive_int("max_work_units", max_work_units),
        )
