"""Reading exact offset ranges of a partition back from Kafka, for the comparison."""

from __future__ import annotations

import time
from collections.abc import Iterator

from confluent_kafka import KafkaError, TopicPartition

from airflow_kafka_backup.engine.errors import KafkaBackupError

BATCH = 500
POLL_TIMEOUT_S = 0.5
# A read that gets neither a record nor the partition's end for this long has stalled.
STALL_TIMEOUT_S = 60.0


def read_range(consumer, topic: str, partition: int, start: int, end: int | None = None,
               stall_timeout_s: float = STALL_TIMEOUT_S) -> Iterator:
    """The messages of ``topic[partition]`` with ``start <= offset < end`` (``end`` None: up to the partition's
    end), in order. ``consumer`` must have ``enable.partition.eof`` set; it is assigned here and unassigned after."""
    if end is not None and start >= end:
        return
    consumer.assign([TopicPartition(topic, partition, start)])
    try:
        last_progress = time.monotonic()
        while True:
            messages = consumer.consume(BATCH, POLL_TIMEOUT_S)
            if not messages and time.monotonic() - last_progress > stall_timeout_s:
                raise KafkaBackupError(f"Reading {topic}[{partition}] from offset {start} stalled for "
                                       f"{stall_timeout_s:.0f} s.")
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return
                    raise KafkaBackupError(f"Reading {topic}[{partition}] failed: {error.str()}")
                last_progress = time.monotonic()
                if end is not None and message.offset() >= end:
                    return
                yield message
                if end is not None and message.offset() == end - 1:
                    return
    finally:
        consumer.unassign()


def first_at_or_after(consumer, topic: str, partition: int, offset: int, end: int | None = None):
    """The first message at ``offset`` or after it (below ``end``), or None."""
    messages = read_range(consumer, topic, partition, offset, end)
    try:
        return next(messages, None)
    finally:
        messages.close()  # unassigns now, not when the generator is collected
