"""One writer per topic-partition: records in, closed segment files out.

Rotation is an explicit state machine, in the manner of Confluent's S3 sink
``TopicPartitionWriter``, but every rotation decision is made on the records
themselves (count, offsets, record timestamps), never on the wall clock, so the same
offset range always cuts into the same segments.

    IDLE    --write-->                                     WRITING (segment opened at the record)
    WRITING --write, record outside the segment's time--> WRITING (segment handed off, next opened)
    WRITING --flush_size records written | finish-->       IDLE    (segment handed off)

"Outside the segment's time" is :class:`~airflow_kafka_backup.engine.backup.rotation.TimeRotation`:
``rotate_interval_ms`` of record time, or a new clock-aligned window.

A segment is encoded and compressed into its spool while records arrive: memory within the
run's :class:`~airflow_kafka_backup.engine.backup.spool.SpoolBudget`, else a file on local disk
(see :mod:`~airflow_kafka_backup.engine.backup.spool`). Its checksum and size are computed on the
way there, in the run's checksum algorithm (see :mod:`~airflow_kafka_backup.engine.storage.checksums`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from airflow_kafka_backup.engine.backup.rotation import TimeRotation
from airflow_kafka_backup.engine.backup.spool import SegmentSpool, SpoolBudget
from airflow_kafka_backup.engine.errors import KafkaBackupError
from airflow_kafka_backup.engine.formats.base import SegmentEncoder
from airflow_kafka_backup.engine.formats.compression import get_compression
from airflow_kafka_backup.engine.formats.segment_codec import get_format
from airflow_kafka_backup.engine.records import TIMESTAMP_TYPE_NUMBERS, TIMESTAMP_TYPES, Record, record_bytes
from airflow_kafka_backup.engine.storage.checksums import ChecksumWriter
from airflow_kafka_backup.engine.storage.key_layout import segment_key
from airflow_kafka_backup.engine.storage.manifest import SegmentInfo, SegmentSettings

_TIMESTAMP_NAMES = TIMESTAMP_TYPES


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


class WriterState(enum.Enum):
    IDLE = "idle"
    WRITING = "writing"


@dataclass(frozen=True)
class ClosedSegment:
    """A finished segment in its spool (memory or local disk), ready to upload to ``info.key``."""

    spool: SegmentSpool
    info: SegmentInfo

    @property
    def path(self) -> str:
        """The spool file, or ``""`` while the segment is held in memory."""
        return self.spool.path


class TopicPartitionWriter:
    def __init__(
        self,
        topic: str,
        partition: int,
        prefix: str,
        settings: SegmentSettings,
        on_segment: Callable[[ClosedSegment], None],
        spool_dir: str | None = None,
        topic_id: str | None = None,
        id_in_keys: bool = False,
        spool_budget: SpoolBudget | None = None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        # The topic incarnation's ID (recorded with each segment) and whether its keys carry it.
        self.topic_id = topic_id
        self._key_topic_id = topic_id if id_in_keys else None
        self.prefix = prefix
        self.settings = settings
        self._format = get_format(settings.segment_format)
        # Whether its encoders take whole batches (``write_rows``), see write_messages.
        self._format_writes_rows = getattr(self._format, "writes_rows", False)
        self._compression = get_compression(settings.compression, settings.compression_level,
                                            settings.compression_library)
        self._extension = self._format.file_extension(self._compression)
        self._rotation = TimeRotation(settings.rotate_interval_ms, settings.rotate_schedule_interval_ms,
                                      settings.timezone)
        # Looked up once: _append runs for every record.
        self._rotates_on_time = self._rotation.enabled
        self._flush_size = settings.flush_size
        self._on_segment = on_segment
        self._spool_dir = spool_dir
        self._spool_budget = spool_budget  # None: every segment spools to a file
        self.state = WriterState.IDLE
        self.records_written = 0
        self.payload_bytes = 0
        self._reset_segment()

    def _reset_segment(self) -> None:
        self._spool: SegmentSpool | None = None
        self._hashing: ChecksumWriter | None = None
        self._encoder: SegmentEncoder | None = None
        self._write_fields: Callable[..., None] | None = None  # the open encoder's write_fields
        self._write_rows: Callable[[list, list], None] | None = None  # and its write_rows, if it has one
        self._first_offset = -1
        self._last_offset = -1
        self._count = 0
        self._min_ts = 0
        self._max_ts = 0
        self._max_record_bytes = 0
        self._window: int | None = None

    def write(self, record: Record) -> None:
        self._append(record.offset, record.timestamp, TIMESTAMP_TYPE_NUMBERS[record.timestamp_type], record.key,
                     record.value, record.headers)

    def write_message(self, message) -> None:
        """Write a ``confluent_kafka.Message`` without building a :class:`Record` (the backup hot path)."""
        ts_type, ts = message.timestamp()
        self._append(message.offset(), ts, ts_type, message.key(), message.value(), message.headers())

    def write_messages(self, messages: list) -> None:
        r"""Write ``confluent_kafka.Message``\ s of this partition, in offset order, all within the planned range.

        The backup hot path: with an encoder that takes whole batches (msgpack's ``write_rows``),
        no time rotation and no headers in the batch, the records go to the encoder as one list
        built in a comprehension, and the segment's bookkeeping (count, timestamps, sizes) is
        done with C calls per batch rather than Python steps per record. The segments and their
        bytes are those of :meth:`write_message` record by record, which the other cases use.
        """
        headers = [message.headers() for message in messages]
        if self._rotates_on_time or not self._format_writes_rows or any(headers):
            for message in messages:
                self.write_message(message)
            return
        partition, names = self.partition, _TIMESTAMP_NAMES
        rows = [(partition, message.offset(), ts, names[ts_type], message.key(), message.value(), ())
                for message in messages for ts_type, ts in (message.timestamp(),)]
        sizes = [(len(row[4]) if row[4] else 0) + (len(row[5]) if row[5] else 0) for row in rows]
        start, count = 0, len(rows)
        while start < count:
            if self.state is WriterState.IDLE:
                self._open(rows[start][1], rows[start][2])
            stop = min(count, start + self._flush_size - self._count)
            batch, batch_sizes = rows[start:stop], sizes[start:stop]
            self._write_rows(batch, batch_sizes)
            timestamps = [row[2] for row in batch]
            low, high = min(timestamps), max(timestamps)
            if self._count == 0:
                self._min_ts, self._max_ts = low, high
            else:
                self._min_ts, self._max_ts = min(self._min_ts, low), max(self._max_ts, high)
            self._last_offset = batch[-1][1]
            self._count += stop - start
            self.records_written += stop - start
            payload = sum(batch_sizes)
            self.payload_bytes += payload
            self._max_record_bytes = max(self._max_record_bytes, max(batch_sizes))
            if self._count >= self._flush_size:
                self._close()
            start = stop

    def _append(self, offset: int, ts: int, ts_type: int, key: bytes | None, value: bytes | None,
                headers: list | None) -> None:
        if self.state is WriterState.IDLE:
            self._open(offset, ts)
        elif self._rotates_on_time and self._rotation.cuts_before(self._min_ts, self._max_ts, self._window, ts):
            self._close()
            self._open(offset, ts)
        # record_bytes() inlined for the common case of no headers: this runs for every record.
        payload = size = (len(key) if key else 0) + (len(value) if value else 0)
        if headers:
            try:
                size = record_bytes(key, value, headers)
            except UnicodeEncodeError:
                raise KafkaBackupError(
                    f"{self.topic}[{self.partition}] offset {offset} has a header name that is not valid UTF-8 "
                    f"({[name for name, _ in headers if not _utf8(name)][0]!r}). Kafka header names are strings; "
                    "confluent-kafka cannot produce such a name (it would crash the restore), so the backup "
                    "refuses the record rather than write a segment that cannot be restored.") from None
        self._write_fields(self.partition, offset, ts, ts_type, key, value, headers)
        self._last_offset = offset
        if self._count == 0:
            self._min_ts = self._max_ts = ts
        elif ts < self._min_ts:
            self._min_ts = ts
        elif ts > self._max_ts:
            self._max_ts = ts
        self._count += 1
        self.records_written += 1
        self.payload_bytes += payload  # key and value bytes, as the throughput logs and benchmarks count them
        if size > self._max_record_bytes:
            self._max_record_bytes = size
        if self._count >= self._flush_size:
            self._close()

    def finish(self) -> None:
        """The planned range is done: close the open segment, if any."""
        if self.state is WriterState.WRITING:
            self._close()

    def abort(self) -> None:
        """Drop the open segment's spool (on failure); nothing is uploaded."""
        if self._spool is not None:
            self._spool.discard()
        self._reset_segment()
        self.state = WriterState.IDLE

    def _open(self, first_offset: int, first_timestamp: int) -> None:
        # The topic name cut short: a topic name may be 249 characters, a file name at most 255 bytes.
        self._spool = SegmentSpool(f"{self.topic[:64]}+{self.partition}+", self._spool_dir, self._spool_budget)
        self._hashing = ChecksumWriter(self._spool, self.settings.segment_checksum)
        self._encoder = self._format.encoder(self._hashing, self._compression)
        self._write_fields = self._encoder.write_fields
        self._write_rows = getattr(self._encoder, "write_rows", None)
        self._first_offset = first_offset
        self._window = self._rotation.window(first_timestamp)
        self.state = WriterState.WRITING

    def _close(self) -> None:
        self._encoder.close()
        self._spool.close()
        info = SegmentInfo(
            key=segment_key(
                self.prefix, self.topic, self.partition, self._first_offset,
                self.settings.offset_pad_width, self._extension, self._key_topic_id,
            ),
            topic=self.topic,
            partition=self.partition,
            first_offset=self._first_offset,
            last_offset=self._last_offset,
            records=self._count,
            min_timestamp=self._min_ts,
            max_timestamp=self._max_ts,
            bytes=self._hashing.size,
            checksum=self._hashing.checksum(),
            max_record_bytes=self._max_record_bytes,
            topic_id=self.topic_id,
        )
        segment = ClosedSegment(self._spool, info)
        self._reset_segment()
        self.state = WriterState.IDLE
        self._on_segment(segment)
