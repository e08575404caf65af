"""Stream compression codecs for segment files (the seed's ``s3.compression.type``).

Every codec is deterministic: the same input bytes give the same output bytes, so a
re-run uploads byte-identical objects. Writers and readers stream with bounded buffers.
"""

from __future__ import annotations

import gzip
import io
from typing import BinaryIO, Protocol

import zstandard


class Compression(Protocol):
    name: str
    extension: str

    def writer(self, raw: BinaryIO) -> BinaryIO: ...

    def reader(self, raw: BinaryIO) -> BinaryIO: ...



class NoCompression:
    name = "none"
    extension = ""

    def writer(self, raw: BinaryIO) -> BinaryIO:
        return _Uncloseable(raw)

    def reader(self, raw: BinaryIO) -> BinaryIO:
        return raw


class GzipCompression:
    """gzip with mtime 0 and no file name in the header, so output depends only on input."""

    name = "gzip"
    extension = ".gz"

    def __init__(self, level: int = 6) -> None:
        self.level = level

    def writer(self, raw: BinaryIO) -> BinaryIO:
        return gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=self.level, mtime=0)

    def reader(self, raw: BinaryIO) -> BinaryIO:
        return gzip.GzipFile(fileobj=raw, mode="rb")


class ZstdCompression:
    """Zstandard: faster and smaller than gzip; readable with ``zstdcat``."""

    name = "zstd"
    extension = ".zst"

    def __init__(self, level: int = 3) -> None:
        self.level = level

    def writer(self, raw: BinaryIO) -> BinaryIO:
        return zstandard.ZstdCompressor(level=self.level).stream_writer(raw, closefd=False)

    def reader(self, raw: BinaryIO) -> BinaryIO:
        return zstandard.ZstdDecompressor().stream_reader(raw, closefd=False, read_across_frames=True)


class _Uncloseable(io.RawIOBase):
    """Passes writes through; ``close()`` does not close the underlying file."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        return self._raw.write(data)


COMPRESSIONS: dict[str, Compression] = {
    c.name: c for c in (NoCompression(), GzipCompression(), ZstdCompression())
}


def get_compression(name: str) -> Compression:
    try:
        return COMPRESSIONS[name]
    except KeyError:
        from airflow_kafka_backup.engine.errors import ConfigurationError

        raise ConfigurationError(
            f"Unknown compression {name!r}; choose one of: {', '.join(sorted(COMPRESSIONS))}."
        ) from None
