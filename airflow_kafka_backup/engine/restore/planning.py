"""Planning a restore: from committed manifests only, with the segment chain checked.

For each source partition the planner collects the ranges and segments of every
committed manifest, checks that the ranges join up (a hole is allowed only where a
manifest records lost offsets), that every named segment exists in S3, and cuts the
segments down to the requested offset bounds and time window. Nothing here writes.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace

from airflow_kafka_backup.engine.chain import check_chain, check_segments_disjoint
from airflow_kafka_backup.engine.errors import ConfigurationError, IntegrityError
from airflow_kafka_backup.engine.record_size import largest
from airflow_kafka_backup.engine.restore.held_manifests import read_manifests
from airflow_kafka_backup.engine.restore.manifest_pin import ManifestPin, pin_manifests, pinned_manifest_keys
from airflow_kafka_backup.engine.storage.checksums import Checksum, disagree, pop_checksum
from airflow_kafka_backup.engine.storage.key_layout import topic_prefix
from airflow_kafka_backup.engine.storage.manifest import PartitionRange, RunManifest, SegmentInfo
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from airflow_kafka_backup.engine.time_window import parse_time_window
from airflow_kafka_backup.engine.topics.incarnations import choose, incarnation_of, longest_histories, summarize
from airflow_kafka_backup.engine.topics.selection import TopicSelection

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class PlannedSegment:
    key: str
    first_offset: int
    last_offset: int
    records: int
    bytes: int
    checksum: Checksum  # in a plan's JSON as one field named after its algorithm (see ``storage.checksums``)
    segment_format: str
    compression: str
    # The manifest's timestamps of the segment's records (None in work units planned before they were carried).
    min_timestamp: int | None = None
    max_timestamp: int | None = None
    # The manifest's largest record of the segment (None from manifests written before it was recorded).
    max_record_bytes: int | None = None


@dataclass
class PartitionRestore:
    """One partition's restore: which segments, and which records of them."""

    source_topic: str
    target_topic: str
    partition: int
    segments: list[PlannedSegment] = field(default_factory=list)
    start_offset: int = 0
    end_offset: int | None = None
    from_timestamp: int | None = None
    until_timestamp: int | None = None

    def to_dict(self) -> dict:
        """As ``dataclasses.asdict`` gives it (same keys, same order), without its deep copy of every
        segment's scalars: the plan encodes every partition of a restore."""
        body = {name: getattr(self, name) for name in _PARTITION_FIELDS}
        body["segments"] = [{**{name: getattr(s, name) for name in _SEGMENT_FIELDS if name != "checksum"},
                             **s.checksum.as_field()} for s in self.segments]
        return body

    @classmethod
    def from_dict(cls, data: dict) -> PartitionRestore:
        return cls(**{**data, "segments": [PlannedSegment(**fields, checksum=checksum) for fields, checksum in
                                           map(pop_checksum, data["segments"])]})

    @property
    def upper_bound_records(self) -> int:
        return sum(s.records for s in self.segments)

    def largest_record_bytes(self) -> int | None:
        """The largest record of the planned segments (of whole segments: a cut one may hold it); None when unknown.

        Segments from manifests written before record sizes were recorded are left out (a lower
        bound then); see :mod:`airflow_kafka_backup.engine.record_size` for what the restore does with it.
        """
        return largest(s.max_record_bytes for s in self.segments)

    def timestamp_span(self) -> tuple[int | None, int | None]:
        """(oldest, newest) timestamp of the restored records, as young (oldest) and as old (newest) as they can be.

        From the manifests' per-segment timestamps; what the target topic's retention and
        timestamp limits are checked against before anything is produced, so each bound errs
        on the side that never refuses wrongly. A segment restored whole gives its exact
        oldest and newest. Of one that the offset bounds or the time window cut, the restored
        records are known only to lie between the window's edges and the segment's: its
        oldest is taken as late, and its newest as early, as they can be. Timestamps of 0 or
        below are left out (those records are stamped by the broker as they are restored),
        so a segment holding one counts as cut. None: nothing to go on.
        """
        oldest = newest = None
        since, until = self.from_timestamp, self.until_timestamp
        for seg in self.segments:
            if seg.min_timestamp is None or seg.max_timestamp is None or seg.max_timestamp <= 0:
                continue
            whole = (seg.min_timestamp > 0 and seg.first_offset >= self.start_offset
                     and (self.end_offset is None or seg.last_offset < self.end_offset)
                     and (since is None or seg.min_timestamp >= since)
                     and (until is None or seg.max_timestamp < until))
            latest = seg.max_timestamp if until is None else min(seg.max_timestamp, until - 1)
            earliest = max(seg.min_timestamp, since or 0, 1)
            low, high = (seg.min_timestamp, seg.max_timestamp) if whole else (latest, earliest)
            oldest = low if oldest is None else min(oldest, low)
            newest = high if newest is None else max(newest, high)
        return oldest, newest


_PARTITION_FIELDS = tuple(f.name for f in fields(PartitionRestore))
_SEGMENT_FIELDS = tuple(f.name for f in fields(PlannedSegment))


@dataclass
class RestorePlan:
    partitions: list[PartitionRestore]
    partition_counts: dict[str, int]  # source topic -> partitions in the backup
    topic_mapping: dict[str, str]
    # From the newest manifest covering each topic / partition:
    topic_metadata: dict[str, dict] = field(default_factory=dict)  # source topic -> TopicMetadata dict
    group_offsets: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    # source topic -> the incarnation restored (IncarnationSummary.to_dict()), and how many the backup holds
    incarnations: dict[str, dict] = field(default_factory=dict)
    # The manifests it was planned from, to plan again from the same ones (see manifest_pin).
    manifests: ManifestPin | None = field(default=None, compare=False)


@dataclass(frozen=True)
class RestoreSettings:
    """``topics`` and ``topic_mapping`` are resolved names; with patterns they are empty until the plan
    resolves ``selection`` against the topics in the backup (:meth:`resolved`)."""

    topics: tuple[str, ...]
    topic_mapping: dict[str, str]
    from_timestamp: int | None
    until_timestamp: int | None
    offset_bounds: dict[str, dict[int, tuple[int | None, int | None]]]
    selection: TopicSelection | None = None
    requested_mapping: dict[str, str] = field(default_factory=dict)
    incarnations: dict[str, str] = field(default_factory=dict)  # source topic -> topic ID to restore

    @classmethod
    def create(cls, *, topics: object, topic_mapping: object = None, from_timestamp: object = None,
               until_timestamp: object = None, offset_bounds: object = None,
               incarnations: object = None) -> RestoreSettings:
        selection = TopicSelection.parse(topics)
        mapping = topic_mapping or {}
        if not isinstance(mapping, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) and v for k, v in mapping.items()):
            raise ConfigurationError(f"topic_mapping must map source topic names to target names, got {mapping!r}.")
        chosen = incarnations or {}
        if not isinstance(chosen, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) and v for k, v in chosen.items()):
            raise ConfigurationError(f"incarnations must map source topic names to topic IDs, got {chosen!r}.")
        start, until = parse_time_window(from_timestamp, until_timestamp)
        settings = cls((), {}, start, until, _parse_offset_bounds(offset_bounds), selection, dict(mapping),
                       dict(chosen))
        return settings if selection.has_patterns else settings.resolved(selection.names)

    @property
    def resolved_yet(self) -> bool:
        return bool(self.topics)

    def resolved(self, topics: Sequence[str]) -> RestoreSettings:
        """These settings for the concrete source ``topics``; the mapping and bounds are checked against them."""
        names = list(topics)
        for what, given in (("topic_mapping", self.requested_mapping), ("offset_bounds", self.offset_bounds),
                            ("incarnations", self.incarnations)):
            unknown = sorted(set(given) - set(names))
            if unknown:
                raise ConfigurationError(f"{what} names topic(s) that are not being restored: {', '.join(unknown)}.")
        targets = [self.requested_mapping.get(t, t) for t in names]
        if len(set(targets)) != len(targets):
            raise ConfigurationError(f"topic_mapping sends two source topics to one target: {targets}.")
        bad = [t for t in targets if not _is_legal_topic_name(t)]
        if bad:
            # Checked here, before the plan creates any target: the broker would refuse the name
            # only when its topic's turn came, after the topics before it had been created.
            raise ConfigurationError(
                f"Target topic name(s) {', '.join(map(repr, bad))} are not legal in Kafka: a topic name is 1 to "
                f"{_MAX_TOPIC_NAME} characters of ASCII letters, digits, '.', '_' and '-', and not '.' or '..'."
            )
        return replace(self, topics=tuple(names), topic_mapping={t: self.requested_mapping.get(t, t) for t in names})


# Kafka's own rule (org.apache.kafka.common.internals.Topic.validate).
_MAX_TOPIC_NAME = 249
_LEGAL_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]+")


def _is_legal_topic_name(name: str) -> bool:
    return len(name) <= _MAX_TOPIC_NAME and name not in (".", "..") and _LEGAL_TOPIC_NAME.fullmatch(name) is not None


def _parse_offset_bounds(value: object) -> dict[str, dict[int, tuple[int | None, int | None]]]:
    """``{"topic": {"0": [start, end]}}`` with ``end`` exclusive; either may be null (topics checked by
    :meth:`RestoreSettings.resolved`)."""
    if not value:
        return {}
    problem = f"offset_bounds must look like {{\"topic\": {{\"0\": [start, end]}}}}, got {value!r}."
    if not isinstance(value, Mapping):
        raise ConfigurationError(problem)
    out: dict[str, dict[int, tuple[int | None, int | None]]] = {}
    for topic, partitions in value.items():
        if not isinstance(partitions, Mapping):
            raise ConfigurationError(problem)
        for partition, bounds in partitions.items():
            try:
                start, end = bounds
                p = int(partition)
            except (TypeError, ValueError):
                raise ConfigurationError(problem) from None
            if not all(b is None or (isinstance(b, int) and b >= 0) for b in (start, end)):
                raise ConfigurationError(problem)
            if start is not None and end is not None and start >= end:
                raise ConfigurationError(f"offset_bounds for {topic}[{p}]: start {start} must be below end {end}.")
            out.setdefault(topic, {})[p] = (start, end)
    return out


def plan_restore(store: S3ObjectStore, prefix: str, settings: RestoreSettings,
                 check_manifest: Callable[[RunManifest], None] | None = None, *,
                 pinned: ManifestPin | None = None, check_segments_exist: bool = True) -> RestorePlan:
    """Build the restore plan; raises before anything is written if the backup is unusable.

    ``check_manifest`` vets each manifest first (e.g. that we hold its SSE-C key). The plan's
    ``manifests`` pins the manifests it read; given as ``pinned``, the plan reads exactly those
    again (those committed since are left out) or fails naming what changed. Without
    ``check_segments_exist`` it skips the LIST proving each segment exists (an approved plan
    derived again: the first plan proved it, and the restore checks each segment's checksum).
    """
    if pinned is None:
        keys, pin = pin_manifests(store, prefix)
    else:
        keys, pin = pinned_manifest_keys(store, prefix, pinned), pinned
    # One manifest at a time, each cut down to the topics this restore can take (see held_manifests).
    wanted = set(settings.topics).__contains__ if settings.resolved_yet else settings.selection.matches
    held = read_manifests(store, prefix, wanted, check_manifest, keys)
    manifests = held.manifests
    available = sorted(held.topics)
    if not settings.resolved_yet:
        settings = settings.resolved(settings.selection.resolve(available))
        if not settings.topics:
            raise ConfigurationError(
                f"topics {list(settings.selection.entries)} match no topic in the backup under "
                f"s3://{store.bucket}/{prefix}; it holds: {', '.join(available) or 'nothing'}.")
    missing = [t for t in settings.topics if t not in available]
    if missing:
        raise ConfigurationError(
            f"No committed backup of topic(s) {', '.join(missing)} under s3://{store.bucket}/{prefix}; "
            f"the backup holds: {', '.join(available) or 'nothing'}."
        )
    histories = longest_histories(manifests)
    incarnations = summarize(manifests, settings.topics, histories)
    chosen = {t: choose(t, incarnations[t], settings.incarnations.get(t), settings.until_timestamp)
              for t in settings.topics}
    for topic, incarnation in chosen.items():
        if len(incarnations[topic]) > 1:
            log.info("%s has %d incarnations in the backup; restoring %s", topic, len(incarnations[topic]),
                     incarnation.describe())

    def restored(topic: str, topic_id: str | None) -> bool:
        return topic in chosen and incarnation_of(topic, topic_id, histories) == chosen[topic].topic_id

    ranges: dict[tuple[str, int], list[PartitionRange]] = defaultdict(list)
    segments: dict[tuple[str, int], dict[str, tuple[SegmentInfo, RunManifest]]] = defaultdict(dict)
    for manifest in manifests:
        for r in manifest.ranges:
            if restored(r.topic, r.topic_id):
                ranges[r.tp].append(r)
        for s in manifest.segments:
            if restored(s.topic, s.topic_id):
                seen = segments[(s.topic, s.partition)].get(s.key)
                if seen is not None and disagree(seen[0].checksum, s.checksum):
                    raise IntegrityError(
                        f"Two manifests disagree about {s.key}: {seen[0].checksum} vs {s.checksum}."
                    )
                segments[(s.topic, s.partition)][s.key] = (s, manifest)

    for topic, bounds in settings.offset_bounds.items():
        for p in bounds:
            if (topic, p) not in ranges:
                raise ConfigurationError(f"offset_bounds names {topic}[{p}], which is not in the backup.")

    existing = _existing_keys(store, prefix, settings.topics) if check_segments_exist else None
    plan: list[PartitionRestore] = []
    for tp in sorted(ranges):
        topic, partition = tp
        check_chain(topic, partition, ranges[tp])
        start, end = settings.offset_bounds.get(topic, {}).get(partition, (None, None))
        restore = PartitionRestore(
            topic, settings.topic_mapping[topic], partition, start_offset=start or 0, end_offset=end,
            from_timestamp=settings.from_timestamp, until_timestamp=settings.until_timestamp,
        )
        chain = sorted(segments[tp].values(), key=lambda v: (v[0].first_offset, v[0].last_offset))
        check_segments_disjoint(store.bucket, topic, partition, [info for info, _ in chain])
        for info, manifest in chain:
            if existing is not None and info.key not in existing:
                raise IntegrityError(
                    f"Segment s3://{store.bucket}/{info.key} ({topic}[{partition}] offsets "
                    f"{info.first_offset}..{info.last_offset}) is named by manifest of run {manifest.run_id} "
                    "but is missing from S3."
                )
            if _outside(info, restore):
                continue
            restore.segments.append(PlannedSegment(
                info.key, info.first_offset, info.last_offset, info.records, info.bytes, info.checksum,
                manifest.settings.segment_format, manifest.settings.compression, info.min_timestamp,
                info.max_timestamp, info.max_record_bytes,
            ))
        plan.append(restore)
    counts = {t: 1 + max(p for tt, p in ranges if tt == t) for t in settings.topics}
    # Topic metadata and group offsets of the restored incarnation only: another one's offsets mean other records.
    of_incarnation = [_only_restored(m, restored) for m in manifests]
    metadata, groups = _newest_captures(of_incarnation, settings.topics)
    _drop_partitions_beyond(groups, counts)
    return RestorePlan(plan, counts, dict(settings.topic_mapping), metadata, groups,
                       {t: {**i.to_dict(), "number": 1 + incarnations[t].index(i), "of": len(incarnations[t])}
                        for t, i in chosen.items()}, pin)


def _only_restored(manifest: RunManifest, restored: Callable[[str, str | None], bool]) -> RunManifest:
    """The manifest with only the topics whose incarnation in it is the one being restored."""
    kept = {r.topic for r in manifest.ranges if restored(r.topic, r.topic_id)}
    return replace(
        manifest,
        ranges=[r for r in manifest.ranges if r.topic in kept],
        topics=[md for md in manifest.topics if md["topic"] in kept],
        consumer_groups={g: {t: o for t, o in by_topic.items() if t in kept}
                         for g, by_topic in manifest.consumer_groups.items()},
    )


def _drop_partitions_beyond(groups: dict[str, dict[str, dict[str, int]]], counts: Mapping[str, int]) -> None:
    """Drop group offsets on partitions the backup does not have (added while a run captured the groups).

    No record of theirs was backed up, so there is nothing to translate them through; a
    target created with the backed-up partition count does not even have them.
    """
    for group, by_topic in groups.items():
        for topic, offsets in by_topic.items():
            beyond = sorted((p for p in offsets if int(p) >= counts[topic]), key=int)
            for partition in beyond:
                del offsets[partition]
            if beyond:
                log.warning("Consumer group %s has offsets on %s partitions %s, which the backup does not have "
                            "(it has %d); they are not restored.", group, topic, ", ".join(beyond), counts[topic])
    for group in [g for g, by_topic in groups.items() if not any(by_topic.values())]:
        del groups[group]  # nothing left to move


def _newest_captures(manifests: Sequence[RunManifest], topics: Sequence[str]) -> tuple[dict, dict]:
    """Topic metadata and group offsets as the newest backup run saw them.

    A manifest holds no wall-clock time, so "newest" is measured in offsets: the run whose
    range reaches furthest on the partition (for metadata, on the topic). An idle partition
    ties every run since its last record, so ties go to the run that reaches further on the
    topic's partitions together, then (for a group) to the higher committed offset, since
    groups move forward; a full tie keeps the run listed last (scheduled run ids sort by date).
    """
    metadata: dict[str, dict] = {}
    groups: dict[str, dict[str, dict[str, int]]] = {}
    best: dict[tuple, tuple[int, ...]] = {}
    for manifest in manifests:
        # Each manifest's reach and progress, computed once: asked per group partition, a scan of its
        # ranges each time made this quadratic in the partitions.
        topic_reach: dict[str, int] = {}
        partition_reach: dict[tuple[str, int], int] = {}
        sums: dict[str, int] = {}
        for r in manifest.ranges:
            topic_reach[r.topic] = max(topic_reach.get(r.topic, -1), r.end)
            partition_reach[r.tp] = max(partition_reach.get(r.tp, -1), r.end)
            sums[r.topic] = sums.get(r.topic, 0) + r.end

        for md in manifest.topics:
            topic = md["topic"]
            if topic not in topics:
                continue
            rank = (topic_reach.get(topic, -1), sums.get(topic, 0))
            if rank >= best.get((topic,), (-2,)):
                best[(topic,)] = rank
                metadata[topic] = md
        for group, by_topic in manifest.consumer_groups.items():
            for topic, offsets in by_topic.items():
                if topic not in topics:
                    continue
                for partition, offset in offsets.items():
                    key = (group, topic, partition)
                    rank = (partition_reach.get((topic, int(partition)), -1), sums.get(topic, 0), offset)
                    if rank >= best.get(key, (-2,)):
                        best[key] = rank
                        groups.setdefault(group, {}).setdefault(topic, {})[partition] = offset
    return metadata, groups


def _existing_keys(store: S3ObjectStore, prefix: str, topics: Sequence[str]) -> set[str]:
    keys: set[str] = set()
    for topic in topics:
        keys.update(store.list_keys(topic_prefix(prefix, topic)))
    return keys


def _outside(seg: SegmentInfo, r: PartitionRestore) -> bool:
    """True when no record of the segment can pass the offset bounds or the time window."""
    if seg.last_offset < r.start_offset or (r.end_offset is not None and seg.first_offset >= r.end_offset):
        return True
    if r.until_timestamp is not None and seg.min_timestamp >= r.until_timestamp:
        return True
    return r.from_timestamp is not None and seg.max_timestamp < r.from_timestamp
