"""Comparing restored records with the source still in Kafka, per partition, in order.

Both sides are walked once, side by side, by source offset (a restored record's source offset
comes from the restore's offset map), and each side is folded into a sha256 over every record's
source offset, key, value, ordered headers, timestamp and timestamp type: with no difference the
two digests are equal. The first difference is named by its source offset.

What the restore promises, and so what counts as equal (docs/restore.md):

- a source record stamped ``LogAppendTime`` is restored into a ``CreateTime`` scratch topic with
  the same timestamp, so its timestamp type counts as ``CreateTime``;
- a source record with a timestamp of 0 or below is stamped by the broker as it is restored, so
  its timestamp (on both sides) is left out;
- on a compacted topic the log cleaner may have removed records from the source since they were
  backed up: a restored record whose source offset the source no longer holds is counted, not a
  difference. A source record missing from the restore is always a difference.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

CREATE_TIME, LOG_APPEND_TIME = 1, 2
_TYPE_NAMES = {0: "NoTimestampType", CREATE_TIME: "CreateTime", LOG_APPEND_TIME: "LogAppendTime"}


@dataclass(frozen=True, slots=True)
class ObservedRecord:
    """One record as a consumer saw it; ``source_offset`` is the offset in the source partition."""

    source_offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp: int
    timestamp_type: int
    target_offset: int | None = None  # restored side only

    @classmethod
    def from_message(cls, message, source_offset: int | None = None) -> ObservedRecord:
        """``source_offset``: for a restored record, where it came from (its own offset is the target's)."""
        ts_type, ts = message.timestamp()
        own = message.offset()
        return cls(own if source_offset is None else source_offset, message.key(), message.value(),
                   tuple(tuple(h) for h in (message.headers() or ())), ts, ts_type,
                   None if source_offset is None else own)

    def as_restored(self) -> ObservedRecord:
        """A source record as the restore promises to write it (see the module's notes)."""
        ts_type = CREATE_TIME if self.timestamp_type == LOG_APPEND_TIME else self.timestamp_type
        return ObservedRecord(self.source_offset, self.key, self.value, self.headers, self.timestamp, ts_type)


def canonical(record: ObservedRecord, with_timestamp: bool = True) -> bytes:
    """An unambiguous byte encoding: lengths before bytes, -1 for null (so null and empty differ)."""
    parts = [struct.pack(">q", record.source_offset), _field(record.key), _field(record.value),
             struct.pack(">i", len(record.headers))]
    for name, value in record.headers:
        parts += [_field(name.encode("utf-8") if isinstance(name, str) else name), _field(value)]
    parts.append(struct.pack(">qb", record.timestamp if with_timestamp else -1,
                             record.timestamp_type if with_timestamp else -1))
    return b"".join(parts)


def _field(data: bytes | None) -> bytes:
    return struct.pack(">i", -1) if data is None else struct.pack(">i", len(data)) + data


def differing_fields(source: ObservedRecord, restored: ObservedRecord) -> list[str]:
    """What differs between a source record (as restored) and the restored record of the same source offset."""
    expected = source.as_restored()
    names = [name for name in ("key", "value", "headers") if getattr(expected, name) != getattr(restored, name)]
    if expected.timestamp > 0:
        if expected.timestamp != restored.timestamp:
            names.append("timestamp")
        if expected.timestamp_type != restored.timestamp_type:
            names.append(f"timestamp type ({_TYPE_NAMES.get(expected.timestamp_type)} vs "
                         f"{_TYPE_NAMES.get(restored.timestamp_type)})")
    return names


@dataclass
class SideDigest:
    records: int = 0
    sha256: str = ""
    first_offset: int | None = None
    last_offset: int | None = None


@dataclass
class PartitionComparison:
    source_topic: str
    scratch_topic: str
    partition: int
    source_offsets: list[int]  # [start, end) drilled
    source: SideDigest = field(default_factory=SideDigest)
    restored: SideDigest = field(default_factory=SideDigest)
    compacted_in_source: int = 0  # restored records the source's log cleaner has removed since
    first_difference: dict | None = None  # {"source_offset", "target_offset", "reason"}

    @property
    def ok(self) -> bool:
        return self.first_difference is None

    @property
    def name(self) -> str:
        return f"{self.source_topic}[{self.partition}]"

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def compare_partition(source_topic: str, scratch_topic: str, partition: int, window: tuple[int, int],
                      source: Iterable[ObservedRecord], restored: Iterable[ObservedRecord], *,
                      compacted: bool) -> PartitionComparison:
    """Walk both sides by source offset; the first difference is kept, the digests cover everything."""
    result = PartitionComparison(source_topic, scratch_topic, partition, list(window))
    source_hash, restored_hash = hashlib.sha256(), hashlib.sha256()

    def fold(side: SideDigest, digest, record: ObservedRecord, with_timestamp: bool) -> None:
        side.records += 1
        side.first_offset = record.source_offset if side.first_offset is None else side.first_offset
        side.last_offset = record.source_offset
        digest.update(canonical(record, with_timestamp))

    def differ(record: ObservedRecord, reason: str, target_offset: int | None = None) -> None:
        if result.first_difference is None:
            result.first_difference = {"source_offset": record.source_offset, "target_offset": target_offset,
                                       "reason": reason}

    sources, targets = _peekable(source), _peekable(restored)
    while sources.head is not None or targets.head is not None:
        s, r = sources.head, targets.head
        if r is None or (s is not None and s.source_offset < r.source_offset):
            fold(result.source, source_hash, s.as_restored(), s.timestamp > 0)
            differ(s, "the source record is missing from the restore")
            sources.advance()
        elif s is None or r.source_offset < s.source_offset:
            fold(result.restored, restored_hash, r, True)
            if compacted and r.source_offset >= window[0]:
                result.compacted_in_source += 1
            else:
                differ(r, "the restored record is not in the source" + (
                    "" if s is not None else " (the restore holds more records than the source)"), r.target_offset)
            targets.advance()
        else:
            fold(result.source, source_hash, s.as_restored(), s.timestamp > 0)
            fold(result.restored, restored_hash, r, s.timestamp > 0)
            differs = differing_fields(s, r)
            if differs:
                differ(s, f"{', '.join(differs)} differ{'s' if len(differs) == 1 else ''}", r.target_offset)
            sources.advance()
            targets.advance()
    result.source.sha256, result.restored.sha256 = source_hash.hexdigest(), restored_hash.hexdigest()
    return result


class _peekable:
    def __init__(self, items: Iterable[ObservedRecord]) -> None:
        self._items: Iterator[ObservedRecord] = iter(items)
        self.head: ObservedRecord | None = None
        self.advance()

    def advance(self) -> None:
        self.head = next(self._items, None)


def with_source_offsets(restored: Iterable, runs: Iterable[tuple[int, int, int]]) -> Iterator[ObservedRecord]:
    """Restored messages (target offsets) paired with their source offsets from the offset map's runs.

    A restored record the map does not name gets source offset -1, which sorts before every source
    record and so is reported as not in the source.
    """
    by_target = sorted((t, s, n) for s, t, n in runs)
    i = 0
    for message in restored:
        target = message.offset()
        while i < len(by_target) and by_target[i][0] + by_target[i][2] <= target:
            i += 1
        if i < len(by_target) and by_target[i][0] <= target:
            t, s, _ = by_target[i]
            yield ObservedRecord.from_message(message, s + (target - t))
        else:
            yield ObservedRecord.from_message(message, -1)
