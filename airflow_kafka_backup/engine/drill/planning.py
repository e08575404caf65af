"""Planning a drill: which partitions, which source offsets, which scratch topics.

A drill restores, per chosen partition, the last ``records_per_partition`` offsets that are
both in the backup and still in Kafka, into a scratch topic named ``<scratch_prefix><topic>``,
so that every restored record can be compared with the source record it came from. The
restore plan itself is the restore engine's (:func:`plan_restore`); the drill only narrows
it to the window and renames the targets.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.restore.planning import PartitionRestore, RestorePlan
from airflow_kafka_backup.engine.settings import positive_int
from airflow_kafka_backup.engine.topics.offsets import OffsetBounds

DEFAULT_SCRATCH_PREFIX = "drill."
DEFAULT_RECORDS_PER_PARTITION = 1_000
_MAX_TOPIC_NAME = 249


@dataclass(frozen=True)
class DrillSettings:
    """What to drill. ``topics`` are names and ``re:`` patterns over the topics in the backup."""

    topics: tuple[str, ...]
    scratch_prefix: str = DEFAULT_SCRATCH_PREFIX
    records_per_partition: int = DEFAULT_RECORDS_PER_PARTITION
    partitions_per_topic: int | None = None  # None: every partition; else a sample of this many

    @classmethod
    def create(cls, *, topics: object, scratch_prefix: object = DEFAULT_SCRATCH_PREFIX,
               records_per_partition: object = DEFAULT_RECORDS_PER_PARTITION,
               partitions_per_topic: object = None) -> DrillSettings:
        if isinstance(topics, str):
            topics = [topics]
        if not isinstance(topics, Sequence) or not topics or not all(isinstance(t, str) and t for t in topics):
            raise ConfigurationError(
                f"topics must list the backed-up topics to drill (names or 're:<regex>', 're:.*' for all), "
                f"got {topics!r}.")
        if not isinstance(scratch_prefix, str) or not scratch_prefix:
            raise ConfigurationError(
                f"scratch_prefix must be a non-empty topic name prefix (the drill's scratch topics and consumer "
                f"groups are named <scratch_prefix><source name>, and deleted afterwards), got {scratch_prefix!r}.")
        sample = None if partitions_per_topic in (None, "", "None") else positive_int(
            "partitions_per_topic", partitions_per_topic)
        return cls(tuple(topics), scratch_prefix, positive_int("records_per_partition", records_per_partition),
                   sample)

    def scratch_topic(self, source_topic: str) -> str:
        return f"{self.scratch_prefix}{source_topic}"

    def scratch_group(self, source_group: str) -> str:
        return f"{self.scratch_prefix}{source_group}"


@dataclass
class DrilledPartition:
    """One partition of the drill: the restore unit and the source offsets ``[start, end)`` it covers."""

    unit: PartitionRestore
    start: int
    end: int

    @property
    def name(self) -> str:
        return f"{self.unit.source_topic}[{self.unit.partition}]"

    def to_dict(self) -> dict:
        return {"source_topic": self.unit.source_topic, "scratch_topic": self.unit.target_topic,
                "partition": self.unit.partition, "source_offsets": [self.start, self.end],
                "segments": len(self.unit.segments), "segment_bytes": sum(s.bytes for s in self.unit.segments)}


@dataclass
class DrillPlan:
    partitions: list[DrilledPartition]
    partition_counts: dict[str, int]  # scratch topic -> partitions (the backed-up count, so numbers match)
    scratch_topics: dict[str, str]  # source topic -> scratch topic
    topic_configs: dict[str, dict[str, str]]  # source topic -> its recorded configs
    group_offsets: dict[str, dict[str, dict[str, int]]]  # backed-up group offsets on the drilled partitions
    skipped: list[str] = field(default_factory=list)  # partitions or topics not drilled, and why

    def to_dict(self) -> dict:
        return {"partitions": [p.to_dict() for p in self.partitions], "skipped": list(self.skipped),
                "scratch_topics": dict(self.scratch_topics)}


def check_scratch_names(settings: DrillSettings, sources: Sequence[str], existing_topics: Sequence[str]) -> None:
    """Refuse scratch names Kafka would refuse, or that would be a backed-up topic itself."""
    for topic in sources:
        name = settings.scratch_topic(topic)
        if len(name) > _MAX_TOPIC_NAME:
            raise ConfigurationError(f"The scratch topic for {topic}, {name!r}, is longer than Kafka's "
                                     f"{_MAX_TOPIC_NAME} characters; choose a shorter scratch_prefix.")
        if name in sources:
            raise ConfigurationError(f"The scratch topic for {topic}, {name!r}, is a drilled topic itself; "
                                     "choose another scratch_prefix.")


def sample_partitions(partitions: Sequence[int], count: int | None, seed: str) -> list[int]:
    """``count`` of ``partitions``, chosen at random but the same for one ``seed`` (the run), so that
    successive drills cover different partitions and a retry covers the same ones."""
    ordered = sorted(partitions)
    if count is None or count >= len(ordered):
        return ordered
    return sorted(random.Random(seed).sample(ordered, count))


def plan_drill(restore_plan: RestorePlan, settings: DrillSettings, source_offsets: Mapping[tuple[str, int],
               OffsetBounds], source_topic_ids: Mapping[str, str | None], seed: str) -> DrillPlan:
    """Narrow ``restore_plan`` (planned with the targets already mapped to scratch topics) to the drill's window.

    ``source_offsets``: the source partitions' log start and end offsets in Kafka now;
    ``source_topic_ids``: the source topics' IDs in Kafka (None: the topic is gone). A topic
    recreated since its backup holds other records under the same offsets, so it is skipped
    (named in ``skipped``), as is a partition whose backed-up records Kafka no longer holds.
    """
    skipped: list[str] = []
    by_topic: dict[str, list[PartitionRestore]] = {}
    for unit in restore_plan.partitions:
        by_topic.setdefault(unit.source_topic, []).append(unit)
    chosen: list[DrilledPartition] = []
    for topic, units in sorted(by_topic.items()):
        backed_up_id = restore_plan.incarnations.get(topic, {}).get("topic_id")
        live_id = source_topic_ids.get(topic)
        if live_id is None:
            skipped.append(f"{topic}: not in the source cluster any more, nothing to compare with")
            continue
        if backed_up_id and live_id != backed_up_id:
            skipped.append(f"{topic}: the topic in Kafka (ID {live_id}) is not the backed-up incarnation "
                           f"({backed_up_id}), so its offsets hold other records")
            continue
        wanted = set(sample_partitions([u.partition for u in units], settings.partitions_per_topic,
                                       f"{seed}/{topic}"))
        for unit in units:
            if unit.partition not in wanted:
                continue
            window = _window(unit, source_offsets.get((topic, unit.partition)), settings.records_per_partition)
            if isinstance(window, str):
                skipped.append(f"{topic}[{unit.partition}]: {window}")
                continue
            start, end = window
            segments = [s for s in unit.segments if s.last_offset >= start and s.first_offset < end]
            chosen.append(DrilledPartition(replace(unit, segments=segments, start_offset=start, end_offset=end),
                                           start, end))
    if not chosen:
        raise ConfigurationError("Nothing to drill: " + ("; ".join(skipped) or "the backup holds no records of "
                                                         "the chosen topics") + ".")
    drilled = {(p.unit.source_topic, p.unit.partition) for p in chosen}
    groups: dict[str, dict[str, dict[str, int]]] = {}
    for group, by_t in restore_plan.group_offsets.items():
        for topic, offsets in by_t.items():
            kept = {p: o for p, o in offsets.items() if (topic, int(p)) in drilled}
            if kept:
                groups.setdefault(group, {})[topic] = kept
    topics = sorted({p.unit.source_topic for p in chosen})
    return DrillPlan(chosen, {restore_plan.topic_mapping[t]: restore_plan.partition_counts[t] for t in topics},
                     {t: restore_plan.topic_mapping[t] for t in topics},
                     {t: dict(restore_plan.topic_metadata.get(t, {}).get("configs", {})) for t in topics}, groups,
                     skipped)


def _window(unit: PartitionRestore, live: OffsetBounds | None, records: int) -> tuple[int, int] | str:
    """The last ``records`` source offsets both backed up and still in Kafka, or why there are none."""
    if not unit.segments:
        return "the backup holds no records of it"
    backed_up = (unit.segments[0].first_offset, unit.segments[-1].last_offset + 1)
    if live is None:
        return "not in the source cluster any more"
    end = min(backed_up[1], live.end)
    start = max(backed_up[0], live.log_start, end - records)
    if start >= end:
        return (f"Kafka holds offsets {live.log_start}..{live.end - 1} and the backup "
                f"{backed_up[0]}..{backed_up[1] - 1}: none in both")
    return start, end

