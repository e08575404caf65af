"""The record model: everything Kafka stores about a record, byte for byte."""

from __future__ import annotations

from dataclasses import dataclass, field

# Kafka's TimestampType names (org.apache.kafka.common.record.TimestampType), indexed by
# the number confluent-kafka returns from Message.timestamp().
TIMESTAMP_TYPES: tuple[str, ...] = ("NoTimestampType", "CreateTime", "LogAppendTime")
TIMESTAMP_TYPE_NUMBERS: dict[str, int] = {name: i for i, name in enumerate(TIMESTAMP_TYPES)}

Header = tuple[str, "bytes | None"]


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record. ``None`` key or value means null, which is not the same as ``b""``.

    Headers stay an ordered list: Kafka allows duplicate names and null values, and
    consumers may depend on their order.
    """

    partition: int
    offset: int
    timestamp: int
    timestamp_type: str
    key: bytes | None
    value: bytes | None
    headers: list[Header] = field(default_factory=list)

    @classmethod
    def from_message(cls, message) -> Record:
        """Build from a ``confluent_kafka.Message`` without copying or decoding its bytes."""
        ts_type, ts = message.timestamp()
        return cls(
            message.partition(),
            message.offset(),
            ts,
            TIMESTAMP_TYPES[ts_type],
            message.key(),
            message.value(),
            message.headers() or [],
        )


def record_bytes(key: bytes | None, value: bytes | None, headers: list | None) -> int:
    """A record's payload as Kafka sizes it: key + value + every header's name (UTF-8) and value.

    What the manifests record per segment (its largest record) so that a restore can size its
    producer and check its target topics before producing (see :mod:`airflow_kafka_backup.engine.record_size`).
    Kafka's framing (a few bytes per record and per header, 61 per batch) comes on top.
    """
    size = (len(key) if key else 0) + (len(value) if value else 0)
    if headers:
        for name, header_value in headers:
            size += len(name.encode("utf-8")) + (len(header_value) if header_value else 0)
    return size
