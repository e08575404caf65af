"""Segment codec: how records become bytes in a segment file, and back.

A segment file is ``format`` encoding inside ``compression``. The format here is JSON
Lines, one record an object, bytes as base64 so ``zcat seg.jsonl.gz | jq`` reads it:

    {"partition":0,"offset":42,"timestamp":1700000000000,"timestamp_type":"CreateTime",
     "key":"a2V5","value":null,"headers":[["trace","AQI="],["trace",null]]}

``null`` is a null key/value/header value; ``""`` is the empty byte string. The
encoding is deterministic (fixed field order, no whitespace), so the same records
always give the same bytes. New formats implement :class:`~.base.SegmentFormat` and are registered
in :data:`FORMATS` here.

Speed: base64 is most of the CPU time on both sides. Encoding goes through ``pybase64``
(SIMD) when that is installed, else ``binascii``; both give the same bytes. Decoding
parses each line with msgspec (an Airflow dependency), which decodes the JSON and the
base64 of key, value and header values in C, and falls back to :func:`json.loads` for
any line msgspec refuses (see :func:`_parse_line`).
"""

from __future__ import annotations

import io
import json
import sys
from base64 import b64decode
from binascii import a2b_base64, b2a_base64
from collections.abc import Callable, Iterator
from functools import partial
from json.encoder import encode_basestring
from typing import BinaryIO

import msgspec

from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.formats.avro_format import AvroFormat
from airflow_kafka_backup.engine.formats.base import OffloadWriter, RecordFields, SegmentEncoder, SegmentFormat
from airflow_kafka_backup.engine.formats.compression import Compression
from airflow_kafka_backup.engine.formats.msgpack_format import MsgpackFormat
from airflow_kafka_backup.engine.records import TIMESTAMP_TYPE_NUMBERS, TIMESTAMP_TYPES, Record

_READ_CHUNK = 1 << 20

def _binascii_b64encode(data: bytes) -> bytes:
    return b2a_base64(data, newline=False)


# Strict decoding: any byte outside the base64 alphabet (a JSON escape, whitespace) is an
# error, never silently dropped. The fast decode path relies on this to detect lines it
# must hand to the JSON parser instead.
if sys.version_info >= (3, 11):
    _binascii_b64decode: Callable[[bytes | str], bytes] = partial(a2b_base64, strict_mode=True)
else:  # no strict_mode before 3.11; b64decode checks the alphabet with a regex first
    _binascii_b64decode = partial(b64decode, validate=True)

try:
    import pybase64
except ImportError:  # optional: same bytes through binascii, only slower
    pybase64 = None

if pybase64 is not None:
    _b64encode: Callable[[bytes], bytes] = pybase64.b64encode
    # As strict as binascii's strict mode on every encoding our encoder can write (it
    # rejects a few odd paddings, such as data after "==", that binascii lets through).
    _b64decode: Callable[[bytes | str], bytes] = partial(pybase64.b64decode, validate=True)
else:
    _b64encode = _binascii_b64encode
    _b64decode = _binascii_b64decode


def _unb64(text: str | bytes | None) -> bytes | None:
    return None if text is None else _b64decode(text)


def _b64_header(value: bytes | None) -> str | None:
    return None if value is None else _b64encode(value).decode("ascii")


def _headers_json(headers: list) -> bytes:
    """A non-empty header list as JSON, byte for byte what the encoder has always written.

    That is ``json.dumps([[name, base64 or None], ...], separators=(",", ":"),
    ensure_ascii=False)``, built here from ``encode_basestring`` (the very function
    json.dumps quotes strings with when ``ensure_ascii=False``) at under half the cost.
    A name that is not a ``str`` (never the case for a Kafka header) goes through
    json.dumps itself, so even that is written as before.
    """
    items = []
    for name, value in headers:
        if type(name) is not str:
            return json.dumps([[name, _b64_header(v)] for name, v in headers],
                              separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        encoded = "null" if value is None else '"' + _b64encode(value).decode("ascii") + '"'
        items.append("[" + encode_basestring(name) + "," + encoded + "]")
    return ("[" + ",".join(items) + "]").encode("utf-8")


_TIMESTAMP_TYPES = tuple(name.encode() for name in TIMESTAMP_TYPES)
_HEAD = b'{"partition":%d,"offset":%d,"timestamp":%d,"timestamp_type":"%s",'
# One template per (key is null, value is null), so the hot path formats a whole line in
# one step. A null field still takes its (empty) argument, so every template takes the
# same seven.
_LINE = {
    (False, False): _HEAD + b'"key":"%s","value":"%s","headers":%s}\n',
    (True, False): _HEAD + b'"key":%snull,"value":"%s","headers":%s}\n',
    (False, True): _HEAD + b'"key":"%s","value":null%s,"headers":%s}\n',
    (True, True): _HEAD + b'"key":%snull,"value":null%s,"headers":%s}\n',
}


class JsonLinesEncoder:
    """Writes one JSON object a line; compression and hashing run on a helper thread."""

    def __init__(self, raw: BinaryIO, compression: Compression) -> None:
        self._compressed = compression.writer(raw)
        self._offload = OffloadWriter(self._compressed)
        # A fixed-size buffer in front of the codec: bounded memory, few codec calls.
        self._out = io.BufferedWriter(self._offload, buffer_size=256 * 1024)
        self._write = self._out.write
        self._b64encode = _b64encode

    def write(self, record: Record) -> None:
        self.write_fields(record.partition, record.offset, record.timestamp,
                          TIMESTAMP_TYPE_NUMBERS[record.timestamp_type], record.key, record.value, record.headers)

    def write_fields(self, partition: int, offset: int, timestamp: int, timestamp_type: int,
                     key: bytes | None, value: bytes | None, headers: list | None) -> None:
        """The hot path: fields straight from a Kafka message, no intermediate objects."""
        encoded = _headers_json(headers) if headers else b"[]"
        b64encode = self._b64encode
        self._write(_LINE[key is None, value is None] % (
            partition, offset, timestamp, _TIMESTAMP_TYPES[timestamp_type],
            b"" if key is None else b64encode(key),
            b"" if value is None else b64encode(value),
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
        for fields in self.decode_fields(raw, compression):
            yield Record(*fields)

    def decode_fields(self, raw: BinaryIO, compression: Compression) -> Iterator[RecordFields]:
        """Like :meth:`decode`, as plain tuples (the restore hot path)."""
        stream = io.BufferedReader(compression.reader(raw), buffer_size=_READ_CHUNK)
        for line in stream:
            fields = _parse_line(line)
            yield fields if fields is not None else _parse_line_as_json(line)


class _Line(msgspec.Struct, gc=False):
    """One JSON Lines record as msgspec decodes it: bytes fields straight from their base64."""

    partition: int
    offset: int
    timestamp: int
    timestamp_type: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


_decode_line = msgspec.json.Decoder(_Line).decode


def _parse_line(line: bytes) -> RecordFields | None:
    """Decode a line with msgspec (JSON and base64 in C, about twice the speed), or return ``None``.

    Equal to :func:`_parse_line_as_json` wherever it returns a result: msgspec is at least
    as strict (integers only where the encoder writes integers, padded standard base64,
    no escapes inside it, valid UTF-8) and takes the last of duplicate keys, as
    ``json.loads`` does. ``None`` means msgspec refused the line (another writer,
    hand-edited, damaged); the caller then parses it as JSON, which decodes it or raises
    exactly as the reference decoder does.
    """
    try:
        r = _decode_line(line)
    except msgspec.MsgspecError:
        return None
    return r.partition, r.offset, r.timestamp, r.timestamp_type, r.key, r.value, r.headers


def _parse_line_as_json(line: bytes) -> RecordFields:
    """The reference decoding of one line: any JSON object with the seven fields."""
    obj = json.loads(line)
    return (
        obj["partition"],
        obj["offset"],
        obj["timestamp"],
        obj["timestamp_type"],
        _unb64(obj["key"]),
        _unb64(obj["value"]),
        [(name, _unb64(value)) for name, value in obj["headers"]],
    )


def _formats() -> dict[str, SegmentFormat]:
    return {f.name: f for f in (JsonLinesFormat(), AvroFormat(), MsgpackFormat())}


FORMATS: dict[str, SegmentFormat] = _formats()


def get_format(name: str) -> SegmentFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ConfigurationError(
            f"Unknown segment format {name!r}; choose one of: {', '.join(sorted(FORMATS))}."
        ) from None
