"""The offset chain of a partition's committed backup: ranges that join up, segments that never overlap.

Checked by the restore plan before anything is produced and by verify; both engines share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from airflow_kafka_backup.engine.errors import IntegrityError
from airflow_kafka_backup.engine.storage.manifest import PartitionRange, SegmentInfo


def check_segments_disjoint(bucket: str, topic: str, partition: int, segments: Sequence[SegmentInfo]) -> None:
    """No two committed segments of a partition may hold the same offset (``segments`` sorted by first offset).

    A re-back-up of a range writes the same keys, which the planner counts once. Two different
    keys over the same offsets (the range rebuilt with other settings) would restore those
    records twice; which copy is right is the operator's call, so the plan refuses, naming both.
    """
    for before, after in pairwise(segments):
        if after.first_offset <= before.last_offset:
            raise IntegrityError(
                f"Two committed segments of {topic}[{partition}] overlap: s3://{bucket}/{before.key} (offsets "
                f"{before.first_offset}..{before.last_offset}) and s3://{bucket}/{after.key} (offsets "
                f"{after.first_offset}..{after.last_offset}); restoring both would duplicate records. Remove the "
                "manifest of the run that should not count (the segments it alone names are then ignored)."
            )


def check_chain(topic: str, partition: int, ranges: list[PartitionRange]) -> None:
    """The committed ranges of a partition must join up, apart from recorded data loss."""
    position: int | None = None
    for r in sorted({(r.start, r.end, r.lost_start, r.lost_end): r for r in ranges}.values(),
                    key=lambda r: (r.start, r.end)):
        if r.is_empty and r.lost_start is None:
            continue  # an idle partition's run: nothing to join
        # An empty range that records a loss still counts: retention deleted every record of an
        # idle partition before the run, and the run moved past them with allow_data_loss.
        if position is not None and r.start > position:
            recorded = r.lost_start is not None and r.lost_start <= position and r.lost_end == r.start
            if not recorded:
                raise IntegrityError(
                    f"The backup of {topic}[{partition}] has a hole: offsets {position}..{r.start - 1} are in no "
                    "committed manifest (a manifest was deleted, or a backup run never committed)."
                )
        position = r.end if position is None else max(position, r.end)
