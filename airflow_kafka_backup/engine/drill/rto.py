"""Projecting the recovery time objective from the drill's measured restore throughput.

The drill restores its window on one task, one partition after the other, so its
throughput is the restore's per-stream speed. The projection is the time that speed
needs for the whole backup (every topic's latest incarnation), by records and by stored
bytes, whichever is longer. A restore DAG runs up to ``max_work_units`` tasks in parallel,
so a real restore of many partitions is faster than the projection, which errs long on purpose.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class RtoProjection:
    restored_records: int
    restored_bytes: int  # stored (compressed) segment bytes downloaded and restored
    restore_seconds: float
    backup_records: int
    backup_bytes: int
    projected_seconds: float | None  # None: nothing was restored to measure

    @property
    def records_per_second(self) -> float | None:
        return self.restored_records / self.restore_seconds if self.restore_seconds > 0 else None

    def to_dict(self) -> dict:
        return {**asdict(self), "records_per_second": self.records_per_second}


def project_rto(restored_records: int, restored_bytes: int, restore_seconds: float, backup_records: int,
                backup_bytes: int) -> RtoProjection:
    """Seconds to restore ``backup_records`` / ``backup_bytes`` at the measured speed (the longer of the two)."""
    if restored_records <= 0 or restore_seconds <= 0:
        return RtoProjection(restored_records, restored_bytes, restore_seconds, backup_records, backup_bytes, None)
    by_records = backup_records * restore_seconds / restored_records
    by_bytes = backup_bytes * restore_seconds / restored_bytes if restored_bytes > 0 else 0.0
    return RtoProjection(restored_records, restored_bytes, restore_seconds, backup_records, backup_bytes,
                         max(by_records, by_bytes))


def backup_totals(latest_incarnations: Iterable) -> tuple[int, int]:
    """Records and stored bytes of the backup: each topic's latest incarnation (``IncarnationSummary``)."""
    records = total_bytes = 0
    for incarnation in latest_incarnations:
        records += incarnation.records
        total_bytes += incarnation.bytes
    return records, total_bytes
