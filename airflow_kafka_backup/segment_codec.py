"""Segment codec: how records become bytes in a segment file, and back.

A segment file is ``format`` encoding inside ``compression``. The format here is JSON
Lines, one record an object, bytes as base64 so ``zcat seg.jsonl.gz | jq`` reads it:

    {"partition":0,"offset":42,"timestamp":1700000000000,"timestamp_type":"CreateTime",
     "key":"a2V5","value":null,"headers":[["trace","AQI="],["trace",null]]}

``null`` is a null key/value/header value; ``""`` is the empty byte string. The
encoding is deterministic (fixed field order, no whitespace), so the same records
always give the same bytes. New formats implement :class:`SegmentFormat`.
"""

from __future__ import annotations

import hashlib
import io
import json
import queue
import threading
from base64 import b64decode
from binascii import b2a_base64
from collections.abc import Iterator
from typing import BinaryIO, Protocol

from airflow_kafka_backup.compression import Compression
from airflow_kafka_backup.errors import ConfigurationError
from airflow_kafka_backup.records import TIMESTAMP_TYPE_NUMBERS, TIMESTAMP_TYPES, Record

_READ_CHUNK = 1 << 20


class SegmentEncoder(Protocol):
    def write(self, record: Record) -> None: ...

    def write_fields(self, partition: int, offset: int, timestamp: int, timestamp_type: int,
                     key: bytes | None, value: bytes | None, headers: list | None) -> None:
        """Encode one record from its raw fields (``timestamp_type`` as Kafka's number)."""

    def close(self) -> None:
        """Flush everything to the underlying file; does not close that file."""


class SegmentFormat(Protocol):
    name: str

    def file_extension(self, compression: Compression) -> str:
        """The segment file name's ending, e.g. ``.jsonl.gz``."""

    def encoder(self, raw: BinaryIO, compression: Compression) -> SegmentEncoder: ...

    def decode(self, raw: BinaryIO, compression: Compression) -> Iterator[Record]: ...


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else b64decode(text, validate=True)


def _b64_header(value: bytes | None) -> str | None:
    return None if value is None else b2a_base64(value, newline=False).decode("ascii")


_TIMESTAMP_TYPES = tuple(name.encode() for name in TIMESTAMP_TYPES)
_HEAD = b'{"partition":%d,"offset":%d,"timestamp":%d,"timestamp_type":"%s",'
# One template per (key is null, value is null): the hot path formats a line in one step.
_TAIL = {
    (False, False): b'"key":"%s","value":"%s","headers":%s}\n',
    (True, False): b'"key":%snull,"value":"%s","headers":%s}\n',
    (False, True): b'"key":"%s","value":null%s,"headers":%s}\n',
    (True, True): b'"key":%snull,"value":null%s,"headers":%s}\n',
}


class OffloadWriter(io.RawIOBase):
    """Hands buffered chunks to a thread that compresses, hashes and writes them.

    zlib, zstd and hashlib release the GIL on large buffers, so this runs beside the
    consumer loop on another core. The queue holds at most ``max_chunks`` chunks:
    memory stays bounded, and a slow disk or codec slows the producer side down.
    """

    def __init__(self, downstream: BinaryIO, max_chunks: int = 8) -> None:
        self._downstream = downstream
        self._queue: queue.Queue[bytes | None] = queue.Queue(max_chunks)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="segment-encoder", daemon=True)
        self._thread.start()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if self._error is not None:
            raise self._error
        self._queue.put(bytes(data))
        return len(data)

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._downstream.write(chunk)
                except BaseException as error:  # surfaced to the writer on its next call
                    self._error = error

    def close(self) -> None:
        if not self.closed:
            self._queue.put(None)
            self._thread.join()
            super().close()
            if self._error is not None:
                raise self._error


class JsonLinesEncoder:
    """Writes one JSON object a line; compression and hashing run on a helper thread."""

    def __init__(self, raw: BinaryIO, compression: Compression) -> None:
        self._compressed = compression.writer(raw)
        self._offload = OffloadWriter(self._compressed)
        # A fixed-size buffer in front of the codec: bounded memory, few codec calls.
        self._out = io.BufferedWriter(self._offload, buffer_size=256 * 1024)
        self._write = self._out.write

    def write(self, record: Record) -> None:
        self.write_fields(record.partition, record.offset, record.timestamp,
                          TIMESTAMP_TYPE_NUMBERS[record.timestamp_type], record.key, record.value, record.headers)

    def write_fields(self, partition: int, offset: int, timestamp: int, timestamp_type: int,
                     key: bytes | None, value: bytes | None, headers: list | None) -> None:
        """The hot path: fields straight from a Kafka message, no intermediate objects."""
        if headers:
            encoded = json.dumps([[name, _b64_header(v)] for name, v in headers],
                                 separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        else:
            encoded = b"[]"
        self._write(_HEAD % (partition, offset, timestamp, _TIMESTAMP_TYPES[timestamp_type]))
        self._write(_TAIL[key is None, value is None] % (
            b"" if key is None else b2a_base64(key, newline=False),
            b"" if value is None else b2a_base64(value, newline=False),
            encoded,
        ))

    def close(self) -> None:
        self._out.flush()
        self._offload.close()
        self._compressed.close()


class JsonLinesFormat:
    name = "jsonl"

    def file_extension(self, compression: Compression) -> str:
        return ".jsonl" + compression.extension

    def encoder(self, raw: BinaryIO, compression: Compression) -> SegmentEncoder:
        return JsonLinesEncoder(raw, compression)

    def decode(self, raw: BinaryIO, compression: Compression) -> Iterator[Record]:
        stream = io.BufferedReader(compression.reader(raw), buffer_size=_READ_CHUNK)
        for line in stream:
            obj = json.loads(line)
            yield Record(
                partition=obj["partition"],
                offset=obj["offset"],
                timestamp=obj["timestamp"],
                timestamp_type=obj["timestamp_type"],
                key=_unb64(obj["key"]),
                value=_unb64(obj["value"]),
                headers=[(name, _unb64(value)) for name, value in obj["headers"]],
            )


def _formats() -> dict[str, SegmentFormat]:
    from airflow_kafka_backup.avro_format import AvroFormat

    return {f.name: f for f in (JsonLinesFormat(), AvroFormat())}


FORMATS: dict[str, SegmentFormat] = _formats()


def get_format(name: str) -> SegmentFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ConfigurationError(
            f"Unknown segment format {name!r}; choose one of: {', '.join(sorted(FORMATS))}."
        ) from None


class HashingWriter(io.RawIOBase):
    """A write-only file that hashes and counts what passes through to ``raw``.

    Segments get their sha256 and size while they are written, with no second read.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(data)
        self._raw.write(data)
        return len(data)


class HashingReader(io.RawIOBase):
    """A read-only stream that hashes and counts what is read through it (restore side)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.sha256.update(data)
        self.size += n
        return n
