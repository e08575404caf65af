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
