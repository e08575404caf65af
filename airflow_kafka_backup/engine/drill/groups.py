"""Checking consumer-group translation: a drilled group resumes on the record its source group stood at.

The drill moves each consumer group the backup recorded on a drilled partition (as
``<scratch_prefix><group>``) with the restore's own translation. Then it checks the result
against Kafka, not against the offset map the translation used: the scratch record at the
committed offset must be the first source record at or after the group's offset, by content
and source offset; a group that had read the whole window must stand at the scratch
partition's end. A group offset below the window counts from the window's first record,
since the drill restores only the window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from airflow_kafka_backup.engine.drill.compare import ObservedRecord, differing_fields


@dataclass
class GroupCheck:
    source_group: str
    scratch_group: str
    source_topic: str
    scratch_topic: str
    partition: int
    source_offset: int  # as the backup recorded it
    committed_offset: int | None  # the scratch group's committed offset after the translation
    expected: str  # what should be there
    ok: bool
    problem: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def check_group(row, window: tuple[int, int], committed: int | None, scratch_end: int,
                source_record_at: Callable[[int, int], ObservedRecord | None],
                scratch_record_at: Callable[[int], ObservedRecord | None]) -> GroupCheck:
    """``row``: a ``GroupTranslation``; ``source_record_at(offset, end)``: the first source record at or after
    ``offset`` below ``end``; ``scratch_record_at(offset)``: the restored record there (with its source offset)."""
    start, end = window
    source_offset = max(row.source_offset, start)
    expected = source_record_at(source_offset, end) if source_offset < end else None

    def result(ok: bool, what: str, problem: str | None = None) -> GroupCheck:
        return GroupCheck(row.source_group, row.target_group, row.source_topic, row.target_topic, row.partition,
                          row.source_offset, committed, what, ok, problem)

    if expected is None:
        what = f"the end of the scratch partition ({scratch_end}): the group had read the drilled window"
        if committed != scratch_end:
            return result(False, what, f"committed offset {committed}, expected {scratch_end}")
        return result(True, what)
    what = f"the restored record of source offset {expected.source_offset}"
    if committed is None:
        return result(False, what, "no offset was committed")
    restored = scratch_record_at(committed)
    if restored is None:
        return result(False, what, f"no record at committed offset {committed}")
    if restored.source_offset != expected.source_offset:
        return result(False, what, f"the record at committed offset {committed} is source offset "
                                   f"{restored.source_offset}")
    differs = differing_fields(expected, restored)
    if differs:
        return result(False, what, f"the record at committed offset {committed}: {', '.join(differs)} differ"
                                   f"{'s' if len(differs) == 1 else ''}")
    return result(True, what)
