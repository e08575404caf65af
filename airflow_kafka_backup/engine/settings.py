"""Validation shared by every setting: numbers, booleans, isolation levels, prefixes, topic lists.

Each function names the setting it refuses, before anything is read or written."""

from __future__ import annotations

from collections.abc import Sequence

from airflow_kafka_backup.engine.errors import ConfigurationError

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
