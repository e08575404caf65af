"""Manual and backfill runs: re-back-up an explicit offset range or time window still in Kafka.

Such a run must write the very keys and bytes the scheduled runs wrote for the same
offsets, and must never move the scheduled checkpoint. So its range is:

1. resolved from per-partition offsets, or from a time window with ``offsets_for_times``
   (the first offset whose timestamp is at or after the bound);
2. clamped to the checkpoint: offsets at or after it are the scheduled runs' job (a
   manual run covering them would leave a hole behind a moved checkpoint, or cut the
   same offsets differently);
3. snapped outward to the committed segments it touches, whose boundaries become forced
   cuts, so each committed segment is rebuilt whole: same first offset, same key, same
   bytes (the uploader skips identical objects and refuses different ones).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise

from confluent_kafka import TopicPartition
from confluent_kafka.admin import OffsetSpec

from airflow_kafka_backup.engine.errors import ConfigurationError, DataLossError
from airflow_kafka_backup.engine.storage.manifest import PartitionRange, RunManifest, SegmentInfo, SegmentSettings
from airflow_kafka_backup.engine.storage.manifest import TopicPartition as TP
from airflow_kafka_backup.engine.topics.incarnations import Histories, incarnation_of
from airflow_kafka_backup.engine.topics.offsets import ADMIN_TIMEOUT_S, OffsetBounds


@dataclass(frozen=True)
class ManualRange:
    range: PartitionRange
    cuts: tuple[int, ...]  # offsets at which a new segment must start
    settings: SegmentSettings | None  # the committed segments' settings, when it rebuilds any


def parse_manual_ranges(value: object) -> dict[TP, tuple[int, int]]:
    """``{"topic": {"0": [start, end]}}`` (end exclusive) -> {(topic, 0): (start, end)}."""
    if not value:
        return {}
    problem = f'ranges must look like {{"topic": {{"0": [start, end]}}}} with start < end, got {value!r}.'
    if not isinstance(value, Mapping):
        raise ConfigurationError(problem)
    out = {}
    for topic, partitions in value.items():
        if not isinstance(partitions, Mapping):
            raise ConfigurationError(problem)
        for partition, bounds in partitions.items():
            try:
                start, end = (int(b) for b in bounds)
                p = int(partition)
            except (TypeError, ValueError):
                raise ConfigurationError(problem) from None
            if not 0 <= start < end:
                raise ConfigurationError(problem)
            out[(str(topic), p)] = (start, end)
    return out


def offsets_for_times(admin, tps: Sequence[TP], timestamp_ms: int, isolation) -> dict[TP, int | None]:
    """First offset with a timestamp at or after ``timestamp_ms``; ``None`` when there is none yet."""
    futures = admin.list_offsets({TopicPartition(t, p): OffsetSpec.for_timestamp(timestamp_ms) for t, p in tps},
                                 isolation_level=isolation, request_timeout=ADMIN_TIMEOUT_S)
    out = {}
    for tp, future in futures.items():
        offset = future.result().offset
        out[(tp.topic, tp.partition)] = offset if offset >= 0 else None
    return out


def resolve_manual_ranges(
    requested: Mapping[TP, tuple[int, int]],
    bounds: Mapping[TP, OffsetBounds],
    checkpoints: Mapping[TP, int],
    manifests: Sequence[RunManifest],
    allow_data_loss: bool,
    histories: Mapping[str, list[str]] | None = None,
) -> list[ManualRange]:
    """Clamp, check and snap the requested ranges (see the module docstring).

    ``checkpoints`` and the ranges are those of each topic's current incarnation, the last of its
    ``histories`` (none: a backup from before topic IDs were recorded); only its segments are rebuilt.
    """
    histories = histories or {}
    committed = _committed_segments(manifests, histories)
    out: list[ManualRange] = []
    losses = []
    for tp, (start, end) in sorted(requested.items()):
        if tp not in bounds:
            raise ConfigurationError(f"{tp[0]}[{tp[1]}] does not exist in Kafka.")
        checkpoint = checkpoints.get(tp, 0)
        end = min(end, checkpoint)
        if start >= end:
            continue  # nothing below the checkpoint: the scheduled runs cover it
        if start < bounds[tp].log_start:
            losses.append(f"{tp[0]}[{tp[1]}] offsets {start}..{bounds[tp].log_start - 1}")
            start = bounds[tp].log_start
            if start >= end:
                continue
        touched = [(s, m.settings) for s, m in committed.get(tp, [])
                   if s.last_offset >= start and s.first_offset < end]
        if touched:
            start = min(start, touched[0][0].first_offset)
            end = max(end, touched[-1][0].last_offset + 1)
        _check_one_settings(tp, touched)
        cuts = sorted({o for s, _ in touched for o in (s.first_offset, s.last_offset + 1) if start < o < end})
        settings = touched[0][1] if touched else None
        history = histories.get(tp[0], [])
        ids = {"topic_id": history[-1], "id_in_keys": len(history) > 1} if history else {}
        out.append(ManualRange(PartitionRange(tp[0], tp[1], start, end, **ids), tuple(cuts), settings))
    if losses and not allow_data_loss:
        raise DataLossError("The requested range reaches offsets Kafka no longer holds: " + "; ".join(losses)
                            + ". Set allow_data_loss to back up what remains.")
    return out


def _check_one_settings(tp: TP, touched: Sequence[tuple[SegmentInfo, SegmentSettings]]) -> None:
    """A manual range is rebuilt with one run's settings, so its committed segments must share them.

    Rebuilding, say, msgpack segments with an earlier run's JSON Lines settings would write
    other keys over the same offsets: the backup would then hold those records twice.
    """
    for (before, settings), (after, other) in pairwise(touched):
        # The checksum algorithm is metadata, not bytes: segments of runs that differ only in it rebuild alike.
        if replace(other, segment_checksum=settings.segment_checksum) != settings:
            raise ConfigurationError(
                f"The requested range of {tp[0]}[{tp[1]}] spans committed segments written with different "
                f"settings: {before.key} ({_describe(settings)}) and, from offset {after.first_offset}, "
                f"{after.key} ({_describe(other)}). Back up the offsets below {after.first_offset} and those "
                "from it in separate runs."
            )


def _describe(settings: SegmentSettings) -> str:
    level = "" if settings.compression_level is None else f" level {settings.compression_level}"
    library = "" if settings.compression_library is None else f" ({settings.compression_library})"
    return f"{settings.segment_format}, {settings.compression}{level}{library}, flush_size {settings.flush_size}"


def _committed_segments(manifests: Sequence[RunManifest],
                        histories: Histories) -> dict[TP, list[tuple[SegmentInfo, RunManifest]]]:
    """The committed segments of each topic's current incarnation, per partition, by first offset."""
    by_tp: dict[TP, dict[str, tuple[SegmentInfo, RunManifest]]] = {}
    for manifest in manifests:
        for seg in manifest.segments:
            history = histories.get(seg.topic)
            if history and incarnation_of(seg.topic, seg.topic_id, histories) != history[-1]:
                continue
            by_tp.setdefault((seg.topic, seg.partition), {})[seg.key] = (seg, manifest)
    return {tp: sorted(segs.values(), key=lambda v: v[0].first_offset) for tp, segs in by_tp.items()}
