"""Exceptions the engine raises; each message names the thing that is wrong."""

from __future__ import annotations


class KafkaBackupError(Exception):
    """Base class: every failure the provider reports on purpose."""


class ConfigurationError(KafkaBackupError, ValueError):
    """A setting, Param or argument is invalid; raised before anything is written."""


class DataLossError(KafkaBackupError):
    """Records that were never backed up are gone from Kafka (retention, truncation)."""


class IntegrityError(KafkaBackupError):
    """An object in the backup does not match what a manifest says about it."""


class ConflictError(KafkaBackupError):
    """Writing would replace committed backup bytes with different bytes."""


class ProducerStuckError(KafkaBackupError):
    """A Kafka client call outlived its own timeout; the client is abandoned (see
    ``engine.restore.transaction.bounded_call``)."""


class RecordTooLargeError(KafkaBackupError):
    """A restored record was refused for its size; the message names its source offset and the setting to change."""
