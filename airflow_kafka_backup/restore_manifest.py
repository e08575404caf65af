"""Verifying a finished restore and writing its manifest.

Every planned segment must have an offset-map chunk (written inside the transaction
that restored it) with the segment's sha256, and restored + filtered records must add up
to the segment's record count. The restore manifest then records, per partition, what
was restored and where the offset map lives.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise

from airflow_kafka_backup.errors import IntegrityError
from airflow_kafka_backup.key_layout import offset_map_prefix, restore_manifest_key
from airflow_kafka_backup.object_store import S3ObjectStore
from airflow_kafka_backup.offset_map import OffsetMap, OffsetMapChunk
from airflow_kafka_backup.restore_planning import PartitionRestore


@dataclass(frozen=True)
class PartitionSummary:
    source_topic: str
    target_topic: str
    partition: int
    segments: int
    records_restored: int
    records_filtered: int
    next_source_offset: int | None
    offset_map_prefix: str


def load_offset_map_chunks(store: S3ObjectStore, restore_prefix: str, target_topic: str,
                           partition: int) -> dict[str, OffsetMapChunk]:
    """Chunks of one target partition, by segment key."""
    chunks = (OffsetMapChunk.from_json(store.get_bytes(k))
              for k in store.list_keys(offset_map_prefix(restore_prefix, target_topic, partition)))
    return {c.segment: c for c in chunks}


def load_offset_map(store: S3ObjectStore, restore_prefix: str, target_topic: str, partition: int) -> OffsetMap:
    return OffsetMap.from_chunks(load_offset_map_chunks(store, restore_prefix, target_topic, partition).values())


def verify_restore(store: S3ObjectStore, restore_prefix: str, units: Sequence[PartitionRestore]) -> list[
        PartitionSummary]:
    """Check every planned segment against its chunk; raises :class:`IntegrityError` naming the first problem."""
    summaries = []
    for unit in units:
        chunks = load_offset_map_chunks(store, restore_prefix, unit.target_topic, unit.partition)
        restored = filtered = 0
        for seg in unit.segments:
            chunk = chunks.get(seg.key)
            if chunk is None:
                raise IntegrityError(f"Segment {seg.key} was planned but never restored to "
                                     f"{unit.target_topic}[{unit.partition}].")
            if chunk.sha256 != seg.sha256 or chunk.records_restored + chunk.records_filtered != seg.records:
                raise IntegrityError(
                    f"Segment {seg.key}: restored {chunk.records_restored} + filtered {chunk.records_filtered} "
                    f"records (sha256 {chunk.sha256}), but the backup holds {seg.records} (sha256 {seg.sha256})."
                )
            _check_runs(seg.key, seg.first_offset, seg.last_offset, chunk)
            restored += chunk.records_restored
            filtered += chunk.records_filtered
        _check_targets_disjoint(unit, [chunks[seg.key] for seg in unit.segments])
        summaries.append(PartitionSummary(
            unit.source_topic, unit.target_topic, unit.partition, len(unit.segments), restored, filtered,
            unit.segments[-1].last_offset + 1 if unit.segments else None,
            offset_map_prefix(restore_prefix, unit.target_topic, unit.partition),
        ))
    return summaries


def _check_runs(key: str, first_offset: int, last_offset: int, chunk: OffsetMapChunk) -> None:
    """A chunk's runs must map its restored records, each source offset once, all within its own segment."""
    mapped = sum(n for _, _, n in chunk.runs)
    outside = [r for r in chunk.runs if r[0] < first_offset or r[0] + r[2] - 1 > last_offset]
    if mapped != chunk.records_restored or outside:
        raise IntegrityError(
            f"Segment {key}: its offset map maps {mapped} records (runs outside source offsets "
            f"{first_offset}..{last_offset}: {outside[:3] or 'none'}), but {chunk.records_restored} were restored."
        )
    for (source, _, count), (next_source, _, _) in pairwise(sorted(chunk.runs)):
        if next_source < source + count:
            raise IntegrityError(f"Segment {key}: its offset map maps source offset {next_source} twice.")


def _check_targets_disjoint(unit: PartitionRestore, chunks: Sequence[OffsetMapChunk]) -> None:
    """No two restored records may claim one target offset: the map would send a group to the wrong one."""
    runs = sorted((t, n, c.segment) for c in chunks for _, t, n in c.runs)
    for (target, count, segment), (next_target, _, next_segment) in pairwise(runs):
        if next_target < target + count:
            raise IntegrityError(
                f"{unit.target_topic}[{unit.partition}]: the offset maps of {segment} and {next_segment} both "
                f"claim target offset {next_target}."
            )


def write_restore_manifest(store: S3ObjectStore, restore_prefix: str, restore_id: str, source_prefix: str,
                           settings: dict, summaries: Sequence[PartitionSummary]) -> str:
    key = restore_manifest_key(restore_prefix)
    body = {"restore_id": restore_id, "source_prefix": source_prefix, "settings": settings,
            "partitions": [asdict(s) for s in summaries]}
    store.put_bytes(key, json.dumps(body, sort_keys=True, indent=1).encode() + b"\n")
    return key
