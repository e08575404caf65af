"""msgpack segments: the compact binary format, for backups that must restore fast.

JSON Lines writes bytes as base64: a third more bytes to store, download and hash, and
a base64 decode per key and value. Here keys, values and header values stay raw bytes
(msgpack ``bin``), and msgspec (an Airflow dependency) encodes and decodes a whole block
of records per call in C, so restore spends a fraction of a microsecond per record on
decoding instead of a couple.

A segment is a msgpack stream, inside ``compression`` like JSON Lines:

* :data:`HEADER` first: the map ``{"format": "airflow-kafka-backup/msgpack", "version": 1}``;
* then blocks, each a ``uint32`` (always in its 5-byte form, ``0xce`` + big-endian length)
  giving the byte length of the block that follows, and the block: an array of records,
  each the array ``[partition, offset, timestamp, timestamp_type, key, value, headers]``
  with ``timestamp_type`` by name, ``key``/``value`` ``bin`` or ``nil`` (null stays null,
  empty stays empty) and ``headers`` an array of ``[name, bin or nil]`` in their order;
* last, the length ``0`` and nothing after it, so that a file cut at a block boundary is
  still told from a whole one.

Any msgpack reader reads it as a plain sequence of objects (skip the integers), e.g.
``msgpack.Unpacker(zstandard.open(path, "rb"))`` (raise its ``max_buffer_size`` for
values over 100 MiB). The length prefixes let the decoder hand msgspec one whole block
at a time, since msgspec decodes a buffer, not a stream.

A block closes after :data:`BLOCK_RECORDS` records or once its keys, values and headers
hold :data:`BLOCK_BYTES` bytes, whichever comes first: both depend only on the records,
so the same records always give the same bytes. Memory is bounded by a few blocks: the
one being filled, and on the writing side at most two encoded ones queued for the
compression thread; on the reading side, one.
"""

from __future__ import annotations

import io
from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate
from typing import TYPE_CHECKING, BinaryIO, Literal

import msgspec

from airflow_kafka_backup.engine.errors import IntegrityError
from airflow_kafka_backup.engine.formats.base import OffloadWriter
from airflow_kafka_backup.engine.formats.compression import DECOMPRESSION_ERRORS, Compression
from airflow_kafka_backup.engine.records import TIMESTAMP_TYPE_NUMBERS, TIMESTAMP_TYPES, Record

if TYPE_CHECKING:
    from airflow_kafka_backup.engine.formats.base import RecordFields

HEADER = msgspec.msgpack.encode({"format": "airflow-kafka-backup/msgpack", "version": 1})
BLOCK_RECORDS = 1000
BLOCK_BYTES = 1 << 20
_LENGTH_TAG = 0xCE  # msgpack uint32
_PREFIX_BYTES = 5
_END = bytes((_LENGTH_TAG, 0, 0, 0, 0))
_MAX_BLOCK = (1 << 32) - 1
_READ_CHUNK = 1 << 20

_TimestampType = Literal["NoTimestampType", "CreateTime", "LogAppendTime"]
# Decoding straight into RecordFields tuples: no Python code runs per record. Headers
# decode as a tuple: a record without headers then shares the empty tuple, where a list
# per record would be one more object for the cyclic garbage collector to count and scan.
_decode_block = msgspec.msgpack.Decoder(
    list[tuple[int, int, int, _TimestampType, bytes | None, bytes | None, tuple[tuple[str, bytes | None], ...]]]
).decode


class MsgpackEncoder:
    """Collects records into a block and writes each full block as one msgpack array."""

    def __init__(self, raw: BinaryIO, compression: Compression) -> None:
        self._compressed = compression.writer(raw)
        # Compression and hashing run on a helper thread, as for JSON Lines; one queue item a block.
        self._out = OffloadWriter(self._compressed, max_chunks=2)
        self._out.write(HEADER)
        self._encode_into = msgspec.msgpack.Encoder().encode_into
        self._buffer = bytearray()
        self._block: list[tuple] = []
        self._block_bytes = 0

    def write(self, record: Record) -> None:
        self.write_fields(record.partition, record.offset, record.timestamp,
                          TIMESTAMP_TYPE_NUMBERS[record.timestamp_type], record.key, record.value, record.headers)

    def write_fields(self, partition: int, offset: int, timestamp: int, timestamp_type: int,
                     key: bytes | None, value: bytes | None, headers: list | None) -> None:
        # msgspec would encode a str key as a msgpack str, which the decoder then refuses:
        # fail here, at backup time, naming the record, as JSON Lines' base64 does.
        if (key is not None and type(key) is not bytes) or (value is not None and type(value) is not bytes):
            raise TypeError(f"Record at offset {offset}: key and value must be bytes or None, not "
                            f"{type(key).__name__} and {type(value).__name__}.")
        size = (len(key) if key else 0) + (len(value) if value else 0)
        if headers:
            for name, header_value in headers:
                if type(name) is not str or (header_value is not None and type(header_value) is not bytes):
                    raise TypeError(f"Record at offset {offset}: a header must be (str, bytes or None), not "
                                    f"({type(name).__name__}, {type(header_value).__name__}).")
                size += len(name) + (len(header_value) if header_value else 0)
        self._block.append((partition, offset, timestamp, TIMESTAMP_TYPES[timestamp_type], key, value,
                            headers or ()))
        self._block_bytes += size
        if len(self._block) >= BLOCK_RECORDS or self._block_bytes >= BLOCK_BYTES:
            self._write_block()

    def write_rows(self, rows: list[tuple], sizes: list[int]) -> None:
        """Many records at once (the backup hot path): the same blocks, so the same bytes, as :meth:`write_fields`.

        ``rows`` are the tuples :meth:`write_fields` builds, from confluent-kafka (bytes or None), without
        headers (``()``); ``sizes`` their key + value bytes. A block still closes at the first record that
        makes it :data:`BLOCK_RECORDS` records or :data:`BLOCK_BYTES` bytes, found here with C calls
        (``accumulate``, ``bisect``) rather than a Python step per record.
        """
        start, count = 0, len(rows)
        while start < count:
            stop = min(count, start + BLOCK_RECORDS - len(self._block))
            # totals[k]: the block's bytes after k more records; the first k reaching BLOCK_BYTES closes it.
            totals = list(accumulate(sizes[start:stop], initial=self._block_bytes))
            reached = bisect_left(totals, BLOCK_BYTES, 1)
            if reached < len(totals):
                stop = start + reached
            self._block.extend(rows[start:stop])
            self._block_bytes = totals[stop - start]
            if len(self._block) >= BLOCK_RECORDS or self._block_bytes >= BLOCK_BYTES:
                self._write_block()
            start = stop

    def _write_block(self) -> None:
        buffer = self._buffer
        self._encode_into(self._block, buffer, _PREFIX_BYTES)
        length = len(buffer) - _PREFIX_BYTES
        if length > _MAX_BLOCK:
            raise ValueError(f"A msgpack block of {len(self._block)} records encodes to {length} bytes, more "
                             f"than the format's {_MAX_BLOCK}; records this large cannot be written.")
        buffer[:_PREFIX_BYTES] = bytes((_LENGTH_TAG,)) + length.to_bytes(4, "big")
        self._out.write(buffer)  # copied into the queue: the buffer is reused
        self._block, self._block_bytes = [], 0

    def close(self) -> None:
        if self._block:
            self._write_block()
        self._out.write(_END)
        self._out.close()
        self._compressed.close()


class MsgpackFormat:
    name = "msgpack"
    writes_rows = True  # its encoder has write_rows, for batches (see TopicPartitionWriter.write_messages)

    def file_extension(self, compression: Compression) -> str:
        return ".msgpack" + compression.extension

    def encoder(self, raw: BinaryIO, compression: Compression) -> MsgpackEncoder:
        return MsgpackEncoder(raw, compression)

    def decode(self, raw: BinaryIO, compression: Compression) -> Iterator[Record]:
        for partition, offset, timestamp, timestamp_type, key, value, headers in self.decode_fields(raw, compression):
            yield Record(partition, offset, timestamp, timestamp_type, key, value, list(headers))

    def decode_fields(self, raw: BinaryIO, compression: Compression) -> Iterator[RecordFields]:
        """The records as :data:`RecordFields` tuples (headers as a tuple), one block in memory at a time."""
        decompressed = _NamesDamage(compression.reader(raw), compression.name)
        return _decode_stream(io.BufferedReader(decompressed, buffer_size=_READ_CHUNK))


class _NamesDamage(io.RawIOBase):
    """Reads through a decompressing stream, turning its errors for a cut or damaged file into IntegrityError.

    A wrapper rather than a try around the decoding generator: it is called once a
    megabyte, where a second generator layer would cost a resume per record.
    """

    def __init__(self, raw: BinaryIO, codec: str) -> None:
        self._raw = raw
        self._codec = codec

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        # Straight into the caller's buffer: a read() here would copy every byte once more.
        try:
            return self._raw.readinto(buffer)
        except DECOMPRESSION_ERRORS as error:
            raise IntegrityError(f"msgpack segment damaged or truncated ({self._codec}): {error}") from None


def _decode_stream(stream: io.BufferedReader) -> Iterator[RecordFields]:
    header = stream.read(len(HEADER))
    if not header:
        raise IntegrityError("msgpack segment truncated: it is empty, or cut before its header.")
    if header != HEADER:
        raise IntegrityError(f"Not an airflow-kafka-backup msgpack segment of version 1: it starts with "
                             f"{header[:40]!r}, not {HEADER!r}.")
    block_number = 0
    while True:
        prefix = stream.read(_PREFIX_BYTES)
        if not prefix:
            raise IntegrityError(f"msgpack segment truncated: it ends after block {block_number - 1} without "
                                 "its end marker.")
        if len(prefix) != _PREFIX_BYTES or prefix[0] != _LENGTH_TAG:
            raise IntegrityError(f"msgpack segment damaged: block {block_number} has no length prefix.")
        length = int.from_bytes(prefix[1:], "big")
        if length == 0:
            if stream.read(1):
                raise IntegrityError("msgpack segment damaged: data after its end marker.")
            return
        block = _read_up_to(stream, length)
        if len(block) != length:
            raise IntegrityError(f"msgpack segment truncated: block {block_number} has {len(block)} of its "
                                 f"{length} bytes.")
        try:
            records = _decode_block(block)
        except msgspec.MsgspecError as error:
            raise IntegrityError(f"msgpack segment damaged: block {block_number}: {error}") from None
        del block
        yield from records
        block_number += 1


def _read_up_to(stream: io.BufferedReader, length: int) -> bytes | bytearray:
    """``length`` bytes or what is left, in chunks: a damaged prefix never reserves gigabytes up front."""
    if length <= _READ_CHUNK:
        return stream.read(length)
    block = bytearray()
    while len(block) < length and (chunk := stream.read(min(_READ_CHUNK, length - len(block)))):
        block += chunk
    return block
