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
from base64 import b64decode, b64encode
from collections.abc import Iterator
from typing import BinaryIO, Protocol

from airflow_kafka_backup.compression import Compression
from airflow_kafka_backup.errors import ConfigurationError
from airflow_kafka_backup.records import Record

_READ_CHUNK = 1 << 20


class SegmentEncoder(Protocol):
    def write(self, record: Record) -> None: ...

    def close(self) -> None:
        """Flush everything to the underlying file; does not close that file."""


class SegmentFormat(Protocol):
    name: str
    extension: str

    def encoder(self, raw: BinaryIO, compression: Compression) -> SegmentEncoder: ...

    def decode(self, raw: BinaryIO, compression: Compression) -> Iterator[Record]: ...


def _b64(data: bytes | None) -> str:
    return "null" if data is None else '"' + b64encode(data).decode("ascii") + '"'


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else b64decode(text, validate=True)


class JsonLinesEncoder:
    """Writes one JSON object a line through a buffered, compressing stream."""

    def __init__(self, raw: BinaryIO, compression: Compression) -> None:
        self._compressed = compression.writer(raw)
        # A fixed-size buffer in front of the codec: bounded memory, few codec calls.
        self._out = io.BufferedWriter(self._compressed, buffer_size=256 * 1024)

    def write(self, record: Record) -> None:
        if record.headers:
            headers = json.dumps(
                [[name, None if value is None else b64encode(value).decode("ascii")]
                 for name, value in record.headers],
                separators=(",", ":"), ensure_ascii=False,
            )
        else:
            headers = "[]"
        line = (
            f'{{"partition":{record.partition},"offset":{record.offset},'
            f'"timestamp":{record.timestamp},"timestamp_type":"{record.timestamp_type}",'
            f'"key":{_b64(record.key)},"value":{_b64(record.value)},"headers":{headers}}}\n'
        )
        self._out.write(line.encode("utf-8"))

    def close(self) -> None:
        self._out.flush()
        self._compressed.close()


class JsonLinesFormat:
    name = "jsonl"
    extension = ".jsonl"

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


FORMATS: dict[str, SegmentFormat] = {f.name: f for f in (JsonLinesFormat(),)}


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
