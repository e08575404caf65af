"""Plain backup settings, validated once, before anything is read or written."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from airflow_kafka_backup.compression import get_compression
from airflow_kafka_backup.errors import ConfigurationError
from airflow_kafka_backup.manifest import SegmentSettings
from airflow_kafka_backup.rotation import TimeRotation
from airflow_kafka_backup.segment_codec import get_format
from airflow_kafka_backup.topic_selection import TopicSelection

ISOLATION_LEVELS = ("read_committed", "read_uncommitted")


def positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value))
        except ValueError:
            raise ConfigurationError(f"{name} must be a whole number, got {value!r}.") from None
    if value <= 0:
        raise ConfigurationError(f"{name} must be greater than 0, got {value}.")
    return value


def check_isolation_level(name: object) -> str:
    """``read_committed`` or ``read_uncommitted``; anything else (a typo) is refused, naming it."""
    if name not in ISOLATION_LEVELS:
        raise ConfigurationError(f"isolation_level must be one of {', '.join(ISOLATION_LEVELS)}, got {name!r}.")
    return str(name)


def as_bool(name: str, value: object) -> bool:
    """A bool, or its text ("true"/"false", any case) as a DAG without native rendering renders it."""
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise ConfigurationError(f"{name} must be true or false, got {value!r}.")


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


def clean_prefix(value: object) -> str:
    """The ``prefix`` Param as the keys use it: leading and trailing slashes stripped; empty parts refused.

    ``/kafka-backup/`` and ``kafka-backup`` name one place, so they are one prefix. A doubled
    slash (``a//b``) is refused rather than collapsed: S3 keys keep it, so other tools (and
    an older run of this one) see ``a//b`` and ``a/b`` as two places, and silently writing to
    the other would split a backup. An empty prefix (or ``/``) is allowed and writes the
    backup at the bucket's root (``<topic>/...``, ``_manifests/...``); ``retention_days``
    refuses it, since its lifecycle rule would then cover the whole bucket.
    """
    if not isinstance(value, str):
        raise ConfigurationError(f"prefix must be text, got {value!r}.")
    prefix = value.strip("/")
    if "//" in prefix:
        raise ConfigurationError(
            f"prefix {value!r} has an empty path part ('//'), which S3 keys would keep: write it with single "
            f"slashes ({'/'.join(part for part in prefix.split('/') if part)!r}).")
    return prefix


def validate_topics(topics: object) -> list[str]:
    if isinstance(topics, str):
        topics = [t.strip() for t in topics.split(",")]
    if not isinstance(topics, Sequence) or not topics or not all(isinstance(t, str) and t for t in topics):
        raise ConfigurationError(f"topics must be a non-empty list of topic names, got {topics!r}.")
    return list(dict.fromkeys(topics))


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
        compression: object = "gzip",
        segment_format: object = "jsonl",
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
        get_compression(str(compression))
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
