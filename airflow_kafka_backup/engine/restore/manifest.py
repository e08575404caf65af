"""Verifying a finished restore and writing its manifest.

Every planned segment must have an offset-map chunk written by the attempt that
committed it (see :mod:`restore_attempts`), with the segment's checksum, and restored +
filtered records must add up to the segment's record count. The restore manifest then
records, per partition, what was restored, where the offset map lives and which
attempts' chunks it is made of.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise

from airflow_kafka_backup.engine.errors import IntegrityError
from airflow_kafka_backup.engine.restore.attempts import RestoreAttempt, RestoreProgress, attempt_chain, committer_of
from airflow_kafka_backup.engine.restore.offset_map import OffsetMap, OffsetMapChunk
from airflow_kafka_backup.engine.restore.planning import PartitionRestore
from airflow_kafka_backup.engine.storage.key_layout import (
    chunk_key,
    offset_map_prefix,
    parse_chunk_key,
    restore_manifest_key,
)
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore


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
    # (resumed from, attempt id) of the attempts whose chunks make up the offset map, oldest first.
    attempts: tuple[tuple[int | None, str], ...] = ()


def load_offset_map_chunks(store: S3ObjectStore, restore_prefix: str, target_topic: str, partition: int,
                           attempts: Sequence[tuple[int | None, str]]) -> dict[int, OffsetMapChunk]:
    """The committed chunks of one target partition, by the first source offset of their segment.

    ``attempts``: the partition's attempt chain as the restore manifest records it. Every
    chunk an attempt outside the chain wrote (for records whose transaction aborted) is
    left out.
    """
    chunks = {}
    for key in store.list_keys(offset_map_prefix(restore_prefix, target_topic, partition)):
        parsed = parse_chunk_key(key)
        if parsed is not None and committer_of(attempts, parsed[0]) == parsed[1]:
            chunks[parsed[0]] = OffsetMapChunk.from_json(store.get_bytes(key))
    return chunks


def load_restore_manifest(store: S3ObjectStore, restore_prefix: str) -> dict:
    key = restore_manifest_key(restore_prefix)
    if store.head(key) is None:
        raise IntegrityError(f"s3://{store.bucket}/{key} is missing: the restore was not verified, so its offset "
                             "map cannot be trusted yet.")
    return json.loads(store.get_bytes(key))


def load_offset_maps(store: S3ObjectStore, restore_prefix: str,
                     partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], OffsetMap]:
    """A verified restore's offset maps of the given target partitions, read through its restore manifest.

    A partition the restore did not write to maps nothing.
    """
    manifest = load_restore_manifest(store, restore_prefix)
    if any("attempts" not in p for p in manifest["partitions"]):
        raise IntegrityError(
            f"s3://{store.bucket}/{restore_manifest_key(restore_prefix)} was written by a version of "
            "airflow-kafka-backup without restore attempts: its offset map cannot be told from the chunks of "
            "aborted transactions. Restore again in a new DAG run."
        )
    chains = {(p["target_topic"], p["partition"]): [(resumed_from, attempt) for resumed_from, attempt in p["attempts"]]
              for p in manifest["partitions"]}
    return {(topic, partition): OffsetMap.from_chunks(load_offset_map_chunks(
                store, restore_prefix, topic, partition, chains.get((topic, partition), ())).values())
            for topic, partition in partitions}


def load_offset_map(store: S3ObjectStore, restore_prefix: str, target_topic: str, partition: int) -> OffsetMap:
    """A verified restore's offset map of one target partition (see :func:`load_offset_maps`)."""
    return load_offset_maps(store, restore_prefix, [(target_topic, partition)])[(target_topic, partition)]


def verify_restore(store: S3ObjectStore, restore_prefix: str, units: Sequence[PartitionRestore],
                   progress: Mapping[tuple[str, int], RestoreProgress]) -> list[PartitionSummary]:
    """Check every planned segment against its committed chunk; raises :class:`IntegrityError` naming the first problem.

    ``progress``: the restore's committed progress per target partition (every unit with
    segments needs one): it must stand right after the last planned segment, and the
    attempt that committed it starts the chain that picks each segment's chunk.
    """
    summaries = []
    for unit in units:
        chain = _check_progress(store, restore_prefix, unit, progress) if unit.segments else ()
        resume_points = tuple((a.resumed_from, a.attempt) for a in chain)
        chunks = _committed_chunks(store, restore_prefix, unit, resume_points) if unit.segments else []
        for seg, chunk in zip(unit.segments, chunks, strict=True):
            if chunk.segment != seg.key:
                raise IntegrityError(f"The offset-map chunk for source offset {seg.first_offset} of "
                                     f"{unit.target_topic}[{unit.partition}] describes {chunk.segment}, not {seg.key}.")
            if chunk.checksum != seg.checksum or chunk.records_restored + chunk.records_filtered != seg.records:
                raise IntegrityError(
                    f"Segment {seg.key}: restored {chunk.records_restored} + filtered {chunk.records_filtered} "
                    f"records ({chunk.checksum}), but the backup holds {seg.records} ({seg.checksum})."
                )
            _check_runs(seg.key, seg.first_offset, seg.last_offset, chunk)
        _check_targets_disjoint(unit, chunks)
        summaries.append(PartitionSummary(
            unit.source_topic, unit.target_topic, unit.partition, len(unit.segments),
            sum(c.records_restored for c in chunks), sum(c.records_filtered for c in chunks),
            unit.segments[-1].last_offset + 1 if unit.segments else None,
            offset_map_prefix(restore_prefix, unit.target_topic, unit.partition), resume_points,
        ))
    return summaries


def _check_progress(store: S3ObjectStore, restore_prefix: str, unit: PartitionRestore,
                    progress: Mapping[tuple[str, int], RestoreProgress]) -> tuple[RestoreAttempt, ...]:
    """The unit's attempt chain, once its committed progress stands right after its last segment."""
    committed = progress[(unit.target_topic, unit.partition)]
    expected = unit.segments[-1].last_offset + 1
    if committed.next_offset != expected:
        raise IntegrityError(f"{unit.target_topic}[{unit.partition}]: restore progress is at source offset "
                             f"{committed.next_offset}, expected {expected}.")
    return attempt_chain(store, restore_prefix, unit.target_topic, unit.partition, committed)


def _committed_chunks(store: S3ObjectStore, restore_prefix: str, unit: PartitionRestore,
                      resume_points: Sequence[tuple[int | None, str]]) -> list[OffsetMapChunk]:
    """Each planned segment's chunk, as written by the attempt that committed it."""
    written = set(store.list_keys(offset_map_prefix(restore_prefix, unit.target_topic, unit.partition)))
    chunks = []
    for seg in unit.segments:
        attempt = committer_of(resume_points, seg.first_offset)
        if attempt is None:
            raise IntegrityError(f"Segment {seg.key} was planned but never restored to "
                                 f"{unit.target_topic}[{unit.partition}].")
        key = chunk_key(restore_prefix, unit.target_topic, unit.partition, seg.first_offset, attempt)
        if key not in written:
            raise IntegrityError(
                f"Segment {seg.key} was planned but never restored to {unit.target_topic}[{unit.partition}]: the "
                f"restore attempt that committed it ({attempt}) wrote no offset-map chunk s3://{store.bucket}/{key}."
            )
        chunks.append(OffsetMapChunk.from_json(store.get_bytes(key)))
    return chunks


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
