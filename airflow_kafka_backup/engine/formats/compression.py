"""Stream compression codecs for segment files (the seed's ``s3.compression.type``).

Every codec is deterministic: the same input bytes give the same output bytes, so a
re-run uploads byte-identical objects. Writers and readers stream with bounded buffers.

A codec writes with one library at one level, and both decide the bytes. So a run
records them in its :class:`~airflow_kafka_backup.engine.storage.manifest.SegmentSettings`
(``compression_level``, ``compression_library``), and a re-run of a committed run
writes with what that run recorded. Manifests from before they were recorded read as
the codec's :data:`LEGACY` encoder: gzip through the standard library's zlib at level 6,
zstd at level 3.

gzip is written by ISA-L's igzip (python-isal), about ten times faster than zlib at a
ratio as good as zlib's level 6 on backup data; its output is standard gzip (RFC 1952),
which ``zcat``, Python's :mod:`gzip` and every other gzip reader read. Every gzip segment,
whichever library wrote it, is read through igzip, which decompresses faster as well.
"""

from __future__ import annotations

import gzip
import io
import zlib
from typing import BinaryIO, Protocol

import zstandard
from isal import igzip, isal_zlib

# What a reader raises for a damaged or cut compressed stream.
DECOMPRESSION_ERRORS: tuple[type[BaseException], ...] = (
    EOFError, OSError, zlib.error, isal_zlib.error, zstandard.ZstdError,
)


class Compression(Protocol):
    name: str
    extension: str
    level: int | None
    library: str | None

    def writer(self, raw: BinaryIO) -> BinaryIO: ...

    def reader(self, raw: BinaryIO) -> BinaryIO: ...


class NoCompression:
    name = "none"
    extension = ""
    level = None
    library = None

    def writer(self, raw: BinaryIO) -> BinaryIO:
        return _Uncloseable(raw)

    def reader(self, raw: BinaryIO) -> BinaryIO:
        return raw


class GzipCompression:
    """gzip with mtime 0 and no file name in the header, so output depends only on input.

    ``library`` ``"isal"`` (ISA-L igzip, levels 0 to 3) writes new backups; ``"zlib"`` (the
    standard library, levels 0 to 9) is what backups recorded without a library were written
    with, and what a re-run of them writes again.
    """

    name = "gzip"
    extension = ".gz"

    def __init__(self, level: int = 6, library: str = "zlib") -> None:
        self.level = level
        self.library = library

    def writer(self, raw: BinaryIO) -> BinaryIO:
        if self.library == "isal":
            return igzip.IGzipFile(filename="", mode="wb", fileobj=raw, compresslevel=self.level, mtime=0)
        return gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=self.level, mtime=0)

    def reader(self, raw: BinaryIO) -> BinaryIO:
        return igzip.IGzipFile(fileobj=raw, mode="rb")


class ZstdCompression:
    """Zstandard: faster and smaller than gzip; readable with ``zstdcat``."""

    name = "zstd"
    extension = ".zst"
    library = None

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


# The encoder of a manifest that records no level and no library (written before they were recorded).
LEGACY: dict[str, Compression] = {
    c.name: c for c in (NoCompression(), GzipCompression(6, "zlib"), ZstdCompression(3))
}
# Every codec by name; its instance reads any segment of that codec.
COMPRESSIONS: dict[str, Compression] = LEGACY

# New backups: per codec, the library and the default level (chosen by benchmarks/backup_throughput.py).
LIBRARY: dict[str, str | None] = {"none": None, "gzip": "isal", "zstd": None}
# zstd 1 against 3 on 1 KiB records: the same ratio (0.245 against 0.243 on JSON events, 1.00 on random
# bytes) for under half the CPU (2.5 against 6 µs a record on JSON, 1.4 against 4.6 on random bytes).
DEFAULT_LEVEL: dict[str, int | None] = {"none": None, "gzip": 1, "zstd": 1}
# The levels each (codec, library) accepts.
_LEVELS: dict[tuple[str, str | None], range] = {
    ("gzip", "isal"): range(isal_zlib.ISAL_BEST_SPEED, isal_zlib.ISAL_BEST_COMPRESSION + 1),
    ("gzip", "zlib"): range(0, 10),
    ("zstd", None): range(1, zstandard.MAX_COMPRESSION_LEVEL + 1),
}


def get_compression(name: str, level: int | None = None, library: str | None = None) -> Compression:
    """The codec ``name``; with ``level`` (and ``library``), the encoder that writes exactly those bytes.

    Without either, the codec's :data:`LEGACY` encoder: what a manifest that records neither was
    written with. Readers need only the name.
    """
    codec = _codec(name)
    if level is None and library is None:
        return codec
    if name == "gzip":
        library = library or "zlib"
        return GzipCompression(check_level(name, 6 if level is None else level, library), library)
    if name == "zstd":
        return ZstdCompression(check_level(name, 3 if level is None else level, library))
    check_level(name, level, library)
    return codec


def new_run_compression(name: object, level: object = None, param: str = "compression_level") -> tuple[
        int | None, str | None]:
    """The (level, library) a new backup run records for codec ``name``; ``level`` None means the default.

    Raises :class:`ConfigurationError` naming ``param`` for a level the codec does not take.
    """
    name = str(name)
    _codec(name)
    library = LIBRARY[name]
    if level is None or level in ("", "None"):
        return DEFAULT_LEVEL[name], library
    return check_level(name, level, library, param), library


def check_level(name: str, level: object, library: str | None, param: str = "compression_level") -> int | None:
    """``level`` as an int, if codec ``name`` written by ``library`` takes it."""
    from airflow_kafka_backup.engine.errors import ConfigurationError

    if name == "none":
        if level is None or level in ("", "None"):
            return None
        raise ConfigurationError(f"{param} must be empty with compression 'none', got {level!r}.")
    levels = _LEVELS.get((name, library))
    if levels is None:
        raise ConfigurationError(f"Unknown library {library!r} for compression {name!r}.")
    number = level
    if isinstance(number, str) and number.strip().lstrip("-").isdigit():
        number = int(number)
    if isinstance(number, bool) or not isinstance(number, int) or number not in levels:
        default = f" (default {DEFAULT_LEVEL[name]})" if library == LIBRARY[name] else f" with library {library!r}"
        raise ConfigurationError(
            f"{param} for compression {name!r} must be a whole number from {levels.start} to {levels.stop - 1}"
            f"{default}, got {level!r}."
        )
    return number


def _codec(name: str) -> Compression:
    try:
        return COMPRESSIONS[name]
    except KeyError:
        from airflow_kafka_backup.engine.errors import ConfigurationError

        raise ConfigurationError(
            f"Unknown compression {name!r}; choose one of: {', '.join(sorted(COMPRESSIONS))}."
        ) from None
