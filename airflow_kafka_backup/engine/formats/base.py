"""What every segment format shares: the encoder and format interfaces, the record-fields tuple,
and the writer that offloads compression to a thread. (A segment's checksum is computed on its way to
the spool: see ``storage.checksums``.)

The formats (``segment_codec``'s JSON Lines, ``msgpack_format``, ``avro_format``) import this module;
``segment_codec`` registers them all. Nothing here imports a format, so no import circle forms.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Iterator, Sequence
from typing import BinaryIO, Protocol

from airflow_kafka_backup.engine.formats.compression import Compression
from airflow_kafka_backup.engine.records import Record

# A decoded record as plain fields, in :class:`Record`'s order (``timestamp_type`` by name):
# (partition, offset, timestamp, timestamp_type, key, value, headers). Restore reads these
# instead of Records because building a frozen dataclass per record costs more than decoding it.
# Headers are a list or, from the msgpack fast path, a tuple (see ``msgpack_format._decode_block``).
RecordFields = tuple[int, int, int, str, "bytes | None", "bytes | None", "Sequence[tuple[str, bytes | None]]"]


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


def decode_fields(fmt: SegmentFormat, raw: BinaryIO, compression: Compression) -> Iterator[RecordFields]:
    """A segment's records as :data:`RecordFields`, through the format's fast path where it has one."""
    fast = getattr(fmt, "decode_fields", None)
    if fast is not None:
        return fast(raw, compression)
    return ((r.partition, r.offset, r.timestamp, r.timestamp_type, r.key, r.value, r.headers)
            for r in fmt.decode(raw, compression))
