"""Planning a restore: from committed manifests only, with the segment chain checked.

For each source partition the planner collects the ranges and segments of every
committed manifest, checks that the ranges join up (a hole is allowed only where a
manifest records lost offsets), that every named segment exists in S3, and cuts the
segments down to the requested offset bounds and time window. Nothing here writes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from airflow_kafka_backup.errors import ConfigurationError, IntegrityError
from airflow_kafka_backup.key_layout import topic_prefix
from airflow_kafka_backup.manifest import PartitionRange, RunManifest, SegmentInfo, load_manifests
from airflow_kafka_backup.object_store import S3ObjectStore
from airflow_kafka_backup.settings import validate_topics


def parse_timestamp(name: str, value: object) -> int | None:
    """ISO-8601 (naive means UTC) or epoch milliseconds -> epoch milliseconds."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ConfigurationError(f"{name} must be ISO-8601 or epoch milliseconds, got {value!r}.")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigurationError(f"{name} must be ISO-8601 or epoch milliseconds, got {value!r}.") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp() * 1000)


@dataclass(frozen=True)
class PlannedSegment:
    key: str
    first_offset: int
    last_offset: int
    records: int
    bytes: int
    sha256: str
    segment_format: str
    compression: str


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
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PartitionRestore:
        return cls(**{**data, "segments": [PlannedSegment(**s) for s in data["segments"]]})

    @property
    def upper_bound_records(self) -> int:
        return sum(s.records for s in self.segments)


@dataclass
class RestorePlan:
    partitions: list[PartitionRestore]
    partition_counts: dict[str, int]  # source topic -> partitions in the backup
    topic_mapping: dict[str, str]
    # From the newest manifest covering each topic / partition:
    topic_metadata: dict[str, dict] = field(default_factory=dict)  # source topic -> TopicMetadata dict
    group_offsets: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)


@dataclass(frozen=True)
class RestoreSettings:
    topics: tuple[str, ...]
    topic_mapping: dict[str, str]
    from_timestamp: int | None
    until_timestamp: int | None
    offset_bounds: dict[str, dict[int, tuple[int | None, int | None]]]

    @classmethod
    def create(cls, *, topics: object, topic_mapping: object = None, from_timestamp: object = None,
               until_timestamp: object = None, offset_bounds: object = None) -> RestoreSettings:
        names = validate_topics(topics)
        mapping = topic_mapping or {}
        if not isinstance(mapping, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) and v for k, v in mapping.items()):
            raise ConfigurationError(f"topic_mapping must map source topic names to target names, got {mapping!r}.")
        unknown = sorted(set(mapping) - set(names))
        if unknown:
            raise ConfigurationError(f"topic_mapping names topics that are not being restored: {', '.join(unknown)}.")
        targets = [mapping.get(t, t) for t in names]
        if len(set(targets)) != len(targets):
            raise ConfigurationError(f"topic_mapping sends two source topics to one target: {targets}.")
        start, until = parse_timestamp("from_timestamp", from_timestamp), parse_timestamp(
            "until_timestamp", until_timestamp)
        if start is not None and until is not None and start >= until:
            raise ConfigurationError(f"from_timestamp ({start}) must be before until_timestamp ({until}).")
        return cls(tuple(names), {t: mapping.get(t, t) for t in names}, start, until,
                   _parse_offset_bounds(offset_bounds, names))


def _parse_offset_bounds(value: object, topics: Sequence[str]) -> dict[str, dict[int, tuple[int | None, int | None]]]:
    """``{"topic": {"0": [start, end]}}`` with ``end`` exclusive; either may be null."""
    if not value:
        return {}
    problem = f"offset_bounds must look like {{\"topic\": {{\"0\": [start, end]}}}}, got {value!r}."
    if not isinstance(value, Mapping):
        raise ConfigurationError(problem)
    out: dict[str, dict[int, tuple[int | None, int | None]]] = {}
    for topic, partitions in value.items():
        if topic not in topics:
            raise ConfigurationError(f"offset_bounds names topic {topic!r}, which is not being restored.")
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
                 check_manifest: Callable[[RunManifest], None] | None = None) -> RestorePlan:
    """Build the restore plan; raises before anything is written if the backup is unusable.

    ``check_manifest`` vets each manifest first (e.g. that we hold its SSE-C key).
    """
    manifests = list(load_manifests(store, prefix))
    for manifest in manifests if check_manifest else ():
        check_manifest(manifest)
    ranges: dict[tuple[str, int], list[PartitionRange]] = defaultdict(list)
    segments: dict[tuple[str, int], dict[str, tuple[SegmentInfo, RunManifest]]] = defaultdict(dict)
    for manifest in manifests:
        for r in manifest.ranges:
            if r.topic in settings.topics:
                ranges[r.tp].append(r)
        for s in manifest.segments:
            if s.topic in settings.topics:
                seen = segments[(s.topic, s.partition)].get(s.key)
                if seen is not None and seen[0].sha256 != s.sha256:
                    raise IntegrityError(
                        f"Two manifests disagree about {s.key}: sha256 {seen[0].sha256} vs {s.sha256}."
                    )
                segments[(s.topic, s.partition)][s.key] = (s, manifest)

    backed_up = {t for t, _ in ranges}
    missing = [t for t in settings.topics if t not in backed_up]
    if missing:
        available = sorted({r.topic for m in manifests for r in m.ranges})
        raise ConfigurationError(
            f"No committed backup of topic(s) {', '.join(missing)} under s3://{store.bucket}/{prefix}; "
            f"the backup holds: {', '.join(available) or 'nothing'}."
        )
    for topic, bounds in settings.offset_bounds.items():
        for p in bounds:
            if (topic, p) not in ranges:
                raise ConfigurationError(f"offset_bounds names {topic}[{p}], which is not in the backup.")

    existing = _existing_keys(store, prefix, settings.topics)
    plan: list[PartitionRestore] = []
    for tp in sorted(ranges):
        topic, partition = tp
        check_chain(topic, partition, ranges[tp])
        start, end = settings.offset_bounds.get(topic, {}).get(partition, (None, None))
        restore = PartitionRestore(
            topic, settings.topic_mapping[topic], partition, start_offset=start or 0, end_offset=end,
            from_timestamp=settings.from_timestamp, until_timestamp=settings.until_timestamp,
        )
        for info, manifest in sorted(segments[tp].values(), key=lambda v: v[0].first_offset):
            if info.key not in existing:
                raise IntegrityError(
                    f"Segment s3://{store.bucket}/{info.key} ({topic}[{partition}] offsets "
                    f"{info.first_offset}..{info.last_offset}) is named by manifest of run {manifest.run_id} "
                    "but is missing from S3."
                )
            if _outside(info, restore):
                continue
            restore.segments.append(PlannedSegment(
                info.key, info.first_offset, info.last_offset, info.records, info.bytes, info.sha256,
                manifest.settings.segment_format, manifest.settings.compression,
            ))
        plan.append(restore)
    counts = {t: 1 + max(p for tt, p in ranges if tt == t) for t in settings.topics}
    metadata, groups = _newest_captures(manifests, settings.topics)
    return RestorePlan(plan, counts, dict(settings.topic_mapping), metadata, groups)


def _newest_captures(manifests: Sequence[RunManifest], topics: Sequence[str]) -> tuple[dict, dict]:
    """Topic metadata and group offsets as the newest backup run (furthest end offset) saw them."""
    def reach(manifest: RunManifest, topic: str, partition: int | None = None) -> int:
        ends = [r.end for r in manifest.ranges if r.topic == topic and partition in (None, r.partition)]
        return max(ends, default=-1)

    metadata: dict[str, dict] = {}
    groups: dict[str, dict[str, dict[str, int]]] = {}
    best: dict[tuple, int] = {}
    for manifest in manifests:
        for md in manifest.topics:
            topic = md["topic"]
            if topic in topics and reach(manifest, topic) > best.get((topic,), -2):
                best[(topic,)] = reach(manifest, topic)
                metadata[topic] = md
        for group, by_topic in manifest.consumer_groups.items():
            for topic, offsets in by_topic.items():
                if topic not in topics:
                    continue
                for partition, offset in offsets.items():
                    key = (group, topic, partition)
                    if reach(manifest, topic, int(partition)) > best.get(key, -2):
                        best[key] = reach(manifest, topic, int(partition))
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


def check_chain(topic: str, partition: int, ranges: list[PartitionRange]) -> None:
    """The committed ranges of a partition must join up, apart from recorded data loss."""
    position: int | None = None
    for r in sorted({(r.start, r.end, r.lost_start, r.lost_end): r for r in ranges}.values(),
                    key=lambda r: (r.start, r.end)):
        if r.is_empty:
            continue
        if position is not None and r.start > position:
            recorded = r.lost_start is not None and r.lost_start <= position and r.lost_end == r.start
            if not recorded:
                raise IntegrityError(
                    f"The backup of {topic}[{partition}] has a hole: offsets {position}..{r.start - 1} are in no "
                    "committed manifest (a manifest was deleted, or a backup run never committed)."
                )
        position = r.end if position is None else max(position, r.end)
