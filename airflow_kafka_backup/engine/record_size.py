"""Record sizes: what a restore needs of its producer and its target topics to write the largest record.

The backup records each segment's largest record (key + value + header names and values,
:func:`~airflow_kafka_backup.engine.records.record_bytes`) in the manifest. From that the restore

- sizes its producer (:func:`producer_size_config`): librdkafka refuses locally any message
  above its ``message.max.bytes`` (1 MB by default), and waits for ever for queue room when
  one is above ``queue.buffering.max.kbytes``;
- checks each target topic's ``max.message.bytes`` (:func:`record_size_problems`) before
  anything is produced, and raises it on the topics it creates (:func:`created_topic_size_config`).

Kafka limits record *batches*, not records: the broker refuses a batch larger than the
topic's ``max.message.bytes``. A batch of one record is the record's payload plus Kafka's
framing: 61 bytes of batch header and at least 7 of record header (1 byte per varint and the
attributes), and 2 more per header. The checks count the framing at its smallest
(:data:`MIN_FRAMING_BYTES`), so a target is never refused for a record that fits; the
producer is given generous room (:data:`PRODUCER_HEADROOM_BYTES`), since a producer limit
above the need costs nothing.

Manifests written before the size was recorded say nothing about their segments' records:
a restore of only those keeps the producer's configured limit and does not check the
targets' (it cannot know); mixed with newer ones, the sizes that are known are used as a
lower bound. A record that is still too large fails naming its source offset and the
setting that fixes it (see ``restore.RecordTooLargeError``).
"""

from __future__ import annotations

from collections.abc import Iterable

MESSAGE_MAX_BYTES = "message.max.bytes"  # the producer's (and the broker's default for topics)
TOPIC_MAX_MESSAGE_BYTES = "max.message.bytes"
QUEUE_MAX_KBYTES = "queue.buffering.max.kbytes"
LIBRDKAFKA_MESSAGE_MAX_BYTES = 1_000_000  # librdkafka's default message.max.bytes
LIBRDKAFKA_MESSAGE_MAX_BYTES_LIMIT = 1_000_000_000  # the most librdkafka accepts for message.max.bytes
RESTORE_QUEUE_KBYTES = 65_536  # the restore producer's queue bound when records are small
# A batch of one record with no headers is at least this much larger than the record's payload.
MIN_FRAMING_BYTES = 61 + 7
# Room the producer gets above the largest payload: batch and record framing (61 + 41 bytes at
# most) and up to 10 bytes per header (6,000 headers' worth).
PRODUCER_HEADROOM_BYTES = 64 << 10


def largest(sizes: Iterable[int | None]) -> int | None:
    """The largest of the known ``sizes`` (None: not recorded, an older manifest's); None when none is known.

    With some unknown it is a lower bound of the real largest: still right to refuse a target
    by, and still better to size a producer by than nothing.
    """
    return max((size for size in sizes if size is not None), default=None)


def producer_message_max_bytes(largest_record: int | None) -> int | None:
    """The ``message.max.bytes`` a producer needs for records up to ``largest_record`` bytes.

    None when librdkafka's default (1 MB) is enough, or the size is unknown: the connection's
    (or librdkafka's) setting is left as it is.
    """
    if largest_record is None or largest_record + PRODUCER_HEADROOM_BYTES <= LIBRDKAFKA_MESSAGE_MAX_BYTES:
        return None
    return min(largest_record + PRODUCER_HEADROOM_BYTES, LIBRDKAFKA_MESSAGE_MAX_BYTES_LIMIT)


def producer_size_config(largest_record: int | None, connection: dict) -> dict[str, object]:
    """Producer settings for records up to ``largest_record`` bytes; a setting in ``connection`` wins.

    ``message.max.bytes`` as :func:`producer_message_max_bytes`; ``queue.buffering.max.kbytes``
    (the restore bounds it at 64 MiB) at least twice the largest record, since librdkafka never
    finds room in its queue for a message above it and produce() would wait for ever.
    ``batch.size`` needs nothing: librdkafka always sends a message larger than it, alone.
    """
    out: dict[str, object] = {}
    needed = producer_message_max_bytes(largest_record)
    if needed is not None and MESSAGE_MAX_BYTES not in connection:
        out[MESSAGE_MAX_BYTES] = needed
    limit = int(connection.get(MESSAGE_MAX_BYTES, needed or LIBRDKAFKA_MESSAGE_MAX_BYTES))
    out[QUEUE_MAX_KBYTES] = max(RESTORE_QUEUE_KBYTES, -(-2 * limit // 1024))
    return out


def topic_max_message_bytes(largest_record: int) -> int:
    """The ``max.message.bytes`` the restore gives a topic it creates whose records are too large for the default."""
    return largest_record + PRODUCER_HEADROOM_BYTES


def fits(largest_record: int, max_message_bytes: int) -> bool:
    """Whether a batch of the one record can fit ``max_message_bytes`` (framing counted at its smallest)."""
    return largest_record + MIN_FRAMING_BYTES <= max_message_bytes


def created_topic_size_config(largest_record: int | None, configs: dict[str, str],
                              broker_defaults: dict[str, str], overrides: dict) -> dict[str, str]:
    """``configs`` of a topic the restore creates, with ``max.message.bytes`` raised when its records need it.

    Not when ``topic_configs`` (``overrides``) sets it: the user's value is kept, and checked
    like an existing topic's (:func:`record_size_problems`).
    """
    if largest_record is None or TOPIC_MAX_MESSAGE_BYTES in overrides:
        return configs
    effective = _as_int(configs.get(TOPIC_MAX_MESSAGE_BYTES, broker_defaults.get(TOPIC_MAX_MESSAGE_BYTES)))
    if effective is not None and fits(largest_record, effective):
        return configs
    return {**configs, TOPIC_MAX_MESSAGE_BYTES: str(topic_max_message_bytes(largest_record))}


def record_size_problems(topic: str, largest_record: int | None, configs: dict[str, str], created: bool,
                         socket_request_max_bytes: int | None = None) -> list[str]:
    """Why ``topic`` (with effective ``configs``) cannot take a record of ``largest_record`` bytes, each with its fix.

    ``socket_request_max_bytes``: the broker's limit on any request, which no topic config lifts.
    """
    if largest_record is None:
        return []
    problems = []
    limit = _as_int(configs.get(TOPIC_MAX_MESSAGE_BYTES))
    suggested = topic_max_message_bytes(largest_record)
    if limit is not None and not fits(largest_record, limit):
        if created:
            fix = f'set "{TOPIC_MAX_MESSAGE_BYTES}" to {suggested} or more in topic_configs (or leave it out)'
        else:
            fix = (f"set {TOPIC_MAX_MESSAGE_BYTES}={suggested} on the topic (kafka-configs.sh --alter --entity-type "
                   f"topics --entity-name {topic} --add-config {TOPIC_MAX_MESSAGE_BYTES}={suggested})")
        problems.append(f"the largest record to restore into {topic} is {largest_record} bytes (key + value + "
                        f"headers), more than its {TOPIC_MAX_MESSAGE_BYTES}={limit} lets the broker take ({fix})")
    if socket_request_max_bytes is not None and not fits(largest_record, socket_request_max_bytes):
        problems.append(f"the largest record to restore into {topic} is {largest_record} bytes (key + value + "
                        f"headers), more than the broker's socket.request.max.bytes={socket_request_max_bytes} "
                        f"lets through (raise it in the brokers' server.properties to {suggested} or more)")
    return problems


def _as_int(value: object) -> int | None:
    try:
        return int(value) if value is not None else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
