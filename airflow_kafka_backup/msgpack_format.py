"""msgpack segments: the compact binary format, for backups that must restore fast.

JSON Lines writes bytes as base64: a third more bytes to store, download and hash, and
a base64 decode per key and value. Here keys, values and header values stay raw bytes
(msgpack ``bin``), and msgspec (an Airflow dependency) encodes and decodes a whole block
of records per call in C, so restore spends a fraction of a microsecond per record on
decoding instead of several.

A segment is a msgpack stream, inside ``compression`` like JSON Lines:

* :data:`HEADER` first: the map ``{"format": "airflow-kafka-backup/msgpack", "version": 1}``;
* then blocks, each a ``uint32`` (always in its 5-byte form, ``0xce`` + big-endian length)
  giving the byte length of the block that follows, and the block: an array of records,
  each the array ``[partition, offset, timestamp, timestamp_type, key, value, headers]``
  with ``timestamp_type`` by name, ``key``/``value`` ``bin`` or ``nil`` (null stays null,
  empty stays empty) and ``headers`` an array of ``[name, bin or nil]`` in their order.

Any msgpack reader reads it as a plain sequence of objects (skip the integers):
``msgpack.Unpacker(zstd.open(f))``. The length prefixes let the decoder hand msgspec one
whole block at a time, since msgspec decodes a buffer, not a stream.

A block closes after :data:`BLOCK_RECORDS` records or once its records hold
:data:`BLOCK_BYTES` bytes, whichever comes first: both depend only on the records, so
the same records always give the same bytes, and memory is bounded by one block on
either side.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO, Literal

import msgspec

from airflow_kafka_backup.compression import Compression
from airflow_kafka_backup.errors import IntegrityError
from airflow_kafka_backup.records import TIMESTAMP_TYPE_NUMBERS, TIMESTAMP_TYPES, Record

if TYPE_CHECKING:  # segment_codec imports this module to register the format
    from airflow_kafka_backup.segment_codec import RecordFields

HEADER = msgspec.msgpack.encode({"format": "airflow-kafka-backup/msgpack", "version": 1})
BLOCK_RECORDS = 1000
BLOCK_BYTES = 1 << 20
_LENGTH_TAG = 0xCE  # msgpack uint32
_PREFIX_BYTES = 5
_READ_CHUNK = 1 << 20

_TimestampType = Literal["NoTimestampType", "CreateTime", "LogAppendTime"]
# Decoding straight into RecordFields tuples: no Python code runs per record.
_decode_block = msgspec.msgpack.Decoder(
    list[tuple[int, int, int, _TimestampType, bytes | None, bytes | None, list[tuple[str, bytes | None]]]]
).decode


class MsgpackEncoder:
    """Collects records into a block and writes each full block as one msgpack array."""

    def __init__(self, raw: BinaryIO, compression: Compression) -> None:
        from airflow_kafka_backup.segment_codec import OffloadWriter

        self._compressed = compression.writer(raw)
        # Compression and hashing run on a helper thread, as for JSON Lines.
        self._out = OffloadWriter(self._compressed)
        self._out.write(HEADER)
        self._encode = msgspec.msgpack.Encoder().encode
        self._block: list[tuple] = []
        self._block_bytes = 0

    def write(self, record: Record) -> None:
        self.write_fields(record.partition, record.offset, record.timestamp,
                          TIMESTAMP_TYPE_NUMBERS[record.timestamp_type], record.key, record.value, record.headers)

    def write_fields(self, partition: int, offset: int, timestamp: int, timestamp_type: int,
                     key: bytes | None, value: bytes | None, headers: list | None) -> None:
        size = (len(key) if key else 0) + (len(value) if value else 0)
        if headers:
            size += sum(len(name) + (len(v) if v else 0) for name, v in headers)
        self._block.append((partition, offset, timestamp, TIMESTAMP_TYPES[timestamp_type], key, value,
                            headers or ()))
        self._block_bytes += size
        if len(self._block) >= BLOCK_RECORDS or self._block_bytes >= BLOCK_BYTES:
            self._write_block()

    def _write_block(self) -> None:
        data = self._encode(self._block)
        self._block, self._block_bytes = [], 0
        self._out.write(bytes((_LENGTH_TAG,)) + len(data).to_bytes(4, "big"))
        self._out.write(data)

    def close(self) -> None:
        if self._block:
            self._write_block()
        self._out.close()
        self._compressed.close()


class MsgpackFormat:
    name = "msgpack"

    def file_extension(self, compression: Compression) -> str:
        return ".msgpack" + compression.extension

    def encoder(self, raw: BinaryIO, compression: Compression) -> MsgpackEncoder:
        return MsgpackEncoder(raw, compression)

    def decode(self, raw: BinaryIO, compression: Compression) -> Iterator[Record]:
        for fields in self.decode_fields(raw, compression):
            yield Record(*fields)

    def decode_fields(self, raw: BinaryIO, compression: Compression) -> Iterator[RecordFields]:
        """The records as :data:`RecordFields` tuples, one block in memory at a time."""
        stream = io.BufferedReader(compression.reader(raw), buffer_size=_READ_CHUNK)
        if stream.read(len(HEADER)) != HEADER:
            raise IntegrityError("Not a msgpack segment of airflow-kafka-backup (version 1): its header is "
                                 "missing or different.")
        block_number = 0
        while prefix := stream.read(_PREFIX_BYTES):
            if len(prefix) != _PREFIX_BYTES or prefix[0] != _LENGTH_TAG:
                raise IntegrityError(f"msgpack segment damaged: block {block_number} has no length prefix.")
            length = int.from_bytes(prefix[1:], "big")
            block = stream.read(length)
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
