"""Segment checksums: the one place that knows which algorithms there are and how each is written down.

Every segment has one checksum, computed while it is written (no second read), recorded in
the run manifest, sent with the upload for S3 to check, stored in the object's metadata and
checked again on every download. Two algorithms exist:

- ``crc64nvme`` (new backups, the default): CRC-64/NVME, the checksum S3 itself now uses by
  default, through AWS's C library (``awscrt``). About 0.02 µs per KiB against 0.6 for sha256:
  on a 1 KiB-record backup it was the largest single cost left in the client. It detects
  corruption (bit rot, truncation, a wrong object) as surely as any checksum, but it is not
  a cryptographic digest: whoever can rewrite an object can forge a matching CRC. Tampering is
  what TLS, bucket policies and Object Lock are for (docs/security.md).
- ``sha256``: every segment of manifests written before format version 2, and new backups with
  ``segment_checksum="sha256"`` for those who want a cryptographic digest in the manifest.

How documents record a checksum: one field named after its algorithm, holding the value in
that algorithm's usual text form: ``"crc64nvme": "<base64 of the 8 big-endian bytes>"`` (S3's
``ChecksumCRC64NVME`` form) or ``"sha256": "<64 hex digits>"``. Manifests, restore plans, work
units and offset-map chunks all do it this way, so a document written before CRC64 existed
(``"sha256": ...``) reads unchanged and, written again, keeps its bytes.

The rest of the engine handles :class:`Checksum` values and the helpers here, and never
branches on the algorithm.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from airflow_kafka_backup.engine.errors import ConfigurationError

CRC64NVME = "crc64nvme"
SHA256 = "sha256"
ALGORITHMS = (CRC64NVME, SHA256)
DEFAULT_ALGORITHM = CRC64NVME
# What a manifest's segments carry when its settings name no algorithm (format version 1).
LEGACY_ALGORITHM = SHA256

# S3's names: the PutObject argument, its algorithm value and the header it is sent in.
_S3_NAMES = {CRC64NVME: "CRC64NVME", SHA256: "SHA256"}

_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)  # slots: a restore plan holds one per segment
class Checksum:
    """One segment's checksum: its algorithm and its value in that algorithm's text form."""

    algorithm: str
    value: str

    def __str__(self) -> str:
        return f"{self.algorithm} {self.value}"

    def as_field(self) -> dict[str, str]:
        """The checksum as a document records it: ``{algorithm: value}``."""
        return {self.algorithm: self.value}

    @property
    def s3_algorithm(self) -> str:
        """S3's name of the algorithm (``ChecksumAlgorithm``): ``CRC64NVME`` or ``SHA256``."""
        return _S3_NAMES[self.algorithm]

    @property
    def s3_argument(self) -> str:
        """The PutObject argument that carries it: ``ChecksumCRC64NVME`` or ``ChecksumSHA256``."""
        return "Checksum" + _S3_NAMES[self.algorithm]

    @property
    def s3_header(self) -> str:
        """The request header botocore sends it in: ``x-amz-checksum-crc64nvme`` or ``x-amz-checksum-sha256``."""
        return f"x-amz-checksum-{self.algorithm}"

    def s3_value(self) -> str:
        """The value as S3 wants it: base64 of the raw bytes (the CRC's text form already is)."""
        if self.algorithm == SHA256:
            return base64.b64encode(bytes.fromhex(self.value)).decode("ascii")
        return self.value

    def describe(self, size: int | None = None) -> str:
        """For messages: ``10240 bytes with crc64nvme AAECAwQFBgc=``."""
        return f"{size} bytes with {self}" if size is not None else str(self)


def validate_algorithm(name: object, setting: str = "segment_checksum") -> str:
    """A user's choice of algorithm, refused with a message naming the choices."""
    if name in (None, "", "None"):
        return DEFAULT_ALGORITHM
    if name not in ALGORITHMS:
        raise ConfigurationError(f"{setting} must be one of {', '.join(ALGORITHMS)}, got {name!r}.")
    return str(name)


def from_fields(fields: Mapping[str, Any], where: str = "the document") -> Checksum:
    """The checksum a document's fields record (the one field named after an algorithm)."""
    found = [Checksum(name, str(fields[name])) for name in ALGORITHMS if name in fields]
    if len(found) != 1:
        raise ValueError(f"{where} must record exactly one segment checksum ({' or '.join(ALGORITHMS)}), "
                         f"found {len(found)}")
    return found[0]


def pop_checksum(fields: dict[str, Any], where: str = "the document") -> tuple[dict[str, Any], Checksum]:
    """``fields`` without the checksum field, and the checksum: for building a dataclass from a document."""
    checksum = from_fields(fields, where)
    rest = {name: value for name, value in fields.items() if name not in ALGORITHMS}
    return rest, checksum


def disagree(a: Checksum, b: Checksum) -> bool:
    """Two records of one object's checksum that cannot both be right.

    Checksums of different algorithms cannot be compared: they are not a disagreement (a
    segment backed up again by a newer version may be recorded with either; the download
    checks the object against the checksum of the manifest it is read through).
    """
    return a.algorithm == b.algorithm and a.value != b.value


# --- S3 object metadata: the checksum stored with the object at upload, for quick checks ----------------

def metadata(checksum: Checksum) -> dict[str, str]:
    """The object's user metadata recording ``checksum`` (``x-amz-meta-crc64nvme`` or ``x-amz-meta-sha256``)."""
    return checksum.as_field()


def stored_checksum(head: Mapping[str, Any] | None) -> Checksum | None:
    """The checksum a HeadObject answer's user metadata records, if any."""
    meta = (head or {}).get("Metadata") or {}
    for name in ALGORITHMS:
        if name in meta:
            return Checksum(name, str(meta[name]))
    return None


# --- computing ---------------------------------------------------------------------------------------

class Checksummer:
    """A running checksum of one algorithm: ``update`` with the bytes in order, then :meth:`checksum`."""

    algorithm: str

    def update(self, data: Any) -> None:
        raise NotImplementedError

    def checksum(self) -> Checksum:
        raise NotImplementedError


class _Crc64Nvme(Checksummer):
    algorithm = CRC64NVME

    def __init__(self) -> None:
        from awscrt import checksums  # AWS's C library: CRC-64/NVME with the CPU's carry-less multiply

        self._crc64nvme = checksums.crc64nvme
        self._crc = 0

    def update(self, data: Any) -> None:
        self._crc = self._crc64nvme(data, self._crc)

    def checksum(self) -> Checksum:
        return Checksum(CRC64NVME, base64.b64encode(self._crc.to_bytes(8, "big")).decode("ascii"))


class _Sha256(Checksummer):
    algorithm = SHA256

    def __init__(self) -> None:
        self._sha256 = hashlib.sha256()

    def update(self, data: Any) -> None:
        self._sha256.update(data)

    def checksum(self) -> Checksum:
        return Checksum(SHA256, self._sha256.hexdigest())


_CHECKSUMMERS: dict[str, type[Checksummer]] = {CRC64NVME: _Crc64Nvme, SHA256: _Sha256}


def checksummer(algorithm: str) -> Checksummer:
    try:
        return _CHECKSUMMERS[algorithm]()
    except KeyError:
        raise ValueError(f"Unknown segment checksum algorithm {algorithm!r}") from None


def checksum_of(algorithm: str, body: bytes | BinaryIO) -> Checksum:
    """The checksum of bytes, or of a readable file read to its end (from where it stands)."""
    running = checksummer(algorithm)
    if isinstance(body, (bytes, bytearray, memoryview)):
        running.update(body)
    else:
        while chunk := body.read(_CHUNK):
            running.update(chunk)
    return running.checksum()


class ChecksumWriter(io.RawIOBase):
    """A write-only file that checksums and counts what passes through to ``raw``.

    Segments get their checksum and size while they are written, with no second read.
    """

    def __init__(self, raw: BinaryIO, algorithm: str) -> None:
        self._raw = raw
        self._update = (running := checksummer(algorithm)).update
        self._running = running
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._update(data)
        self.size += len(data)
        self._raw.write(data)
        return len(data)

    def checksum(self) -> Checksum:
        return self._running.checksum()


class ChecksumReader(io.RawIOBase):
    """A read-only stream that checksums and counts what is read through it, in one or more algorithms.

    More than one: an object that two manifests record with different algorithms is checked
    against both in one read (see :func:`disagree`).
    """

    def __init__(self, raw: BinaryIO, algorithms: Iterable[str]) -> None:
        self._raw = raw
        self._running = [checksummer(a) for a in dict.fromkeys(algorithms)]
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        for running in self._running:
            running.update(data)
        self.size += n
        return n

    def checksum(self, algorithm: str | None = None) -> Checksum:
        """The checksum read so far in ``algorithm`` (default: the first asked for)."""
        for running in self._running:
            if algorithm is None or running.algorithm == algorithm:
                return running.checksum()
        raise ValueError(f"This reader does not compute {algorithm}")

    def mismatch(self, expected: Checksum, size: int | None = None) -> str | None:
        """None when what was read matches ``expected`` (and ``size``, when given); else what was read instead."""
        actual = self.checksum(expected.algorithm)
        if actual == expected and (size is None or self.size == size):
            return None
        return actual.describe(self.size)
