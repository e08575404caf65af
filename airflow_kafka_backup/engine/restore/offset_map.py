"""The source -> target offset map a restore records, as compact ranges.

A run ``(source_start, target_start, count)`` says source offsets
``source_start + i`` went to target offsets ``target_start + i`` for ``i < count``. A
compacted source (offset gaps) or a point-in-time cut starts a new run; a plain topic
restores as one run per segment.

The map is written to S3 one chunk per restored segment, keyed by the segment's first
source offset and the restore attempt that wrote it, *before* the transaction holding the
segment commits. A retry after a crash is a new attempt: it writes its own chunks for the
segments it restores again, and :mod:`restore_attempts` tells which attempt's chunk
belongs to the committed records.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field

from airflow_kafka_backup.engine.storage.checksums import Checksum, pop_checksum

OffsetRun = tuple[int, int, int]  # source_start, target_start, count


@dataclass
class OffsetMapBuilder:
    runs: list[list[int]] = field(default_factory=list)

    def add(self, source_offset: int, target_offset: int) -> None:
        if self.runs:
            s, t, n = self.runs[-1]
            if source_offset == s + n and target_offset == t + n:
                self.runs[-1][2] = n + 1
                return
        self.runs.append([source_offset, target_offset, 1])

    def to_runs(self) -> list[OffsetRun]:
        return [tuple(r) for r in self.runs]  # type: ignore[misc]


@dataclass(frozen=True)
class OffsetMapChunk:
    """One restored segment's record: which segment, how many records, where they went."""

    source_topic: str
    target_topic: str
    partition: int
    segment: str
    checksum: Checksum  # the segment's, as the plan had it; in the JSON as a field named after its algorithm
    records_restored: int
    records_filtered: int
    runs: tuple[OffsetRun, ...]

    def to_json(self) -> bytes:
        body = {**self.__dict__, "runs": [list(r) for r in self.runs]}
        del body["checksum"]
        body.update(self.checksum.as_field())
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> OffsetMapChunk:
        body, checksum = pop_checksum(json.loads(data), "an offset-map chunk")
        return cls(**{**body, "checksum": checksum, "runs": tuple(tuple(r) for r in body["runs"])})


@dataclass(frozen=True)
class OffsetMap:
    """A partition's whole map, for lookups: where did source offset X go?"""

    runs: tuple[OffsetRun, ...]

    @classmethod
    def from_chunks(cls, chunks: Iterable[OffsetMapChunk]) -> OffsetMap:
        return cls(tuple(sorted(r for c in chunks for r in c.runs)))

    @property
    def records(self) -> int:
        return sum(n for _, _, n in self.runs)

    def end_target(self) -> int:
        """The target offset right after the last restored record (0 when nothing was restored)."""
        return max((t + n for _, t, n in self.runs), default=0)

    def first_target_at_or_after(self, source_offset: int) -> int | None:
        """Target offset of the first restored record whose source offset is >= ``source_offset``."""
        i = bisect_right(self.runs, (source_offset, float("inf"), 0)) - 1
        if i >= 0:
            s, t, n = self.runs[i]
            if source_offset < s + n:
                return t + (source_offset - s)
        i += 1
        return self.runs[i][1] if i < len(self.runs) else None
