"""Planning a backup run: which offsets of which partitions, split into work units.

The end of each range is snapshotted here, once: the last stable offset under
``read_committed``, the high watermark otherwise. Backup tasks consume exactly the
planned ranges, so a run is bounded no matter how fast producers write.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from airflow_kafka_backup.engine.errors import ConfigurationError, DataLossError
from airflow_kafka_backup.engine.storage.manifest import PartitionRange
from airflow_kafka_backup.engine.storage.manifest import TopicPartition as TP
from airflow_kafka_backup.engine.topics.incarnations import Incarnation
from airflow_kafka_backup.engine.topics.offsets import ADMIN_TIMEOUT_S, OffsetBounds
from airflow_kafka_backup.engine.topics.selection import TopicSelection

WorkUnit = list[dict]
T = TypeVar("T")


def partitions_of(admin, topics: Sequence[str]) -> dict[str, int]:
    """Partition count per topic; unknown topics fail naming every one of them."""
    metadata = admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics
    missing = [t for t in topics if t not in metadata or metadata[t].error is not None]
    if missing:
        raise ConfigurationError(f"Kafka topic(s) not found: {', '.join(missing)}.")
    return {t: len(metadata[t].partitions) for t in topics}


@dataclass(frozen=True)
class ResolvedTopics:
    """What a selection came to on the cluster: the topics to back up, and the ones gone from it."""

    partitions: dict[str, int]  # topic -> partition count
    gone: list[str]  # matched by a pattern in an earlier run (``known``), not in the cluster now

    @property
    def topics(self) -> list[str]:
        return list(self.partitions)


def resolve_topics(admin, selection: TopicSelection, known: Sequence[str] = ()) -> ResolvedTopics:
    """Resolve names and patterns against the cluster (one metadata request).

    A named topic the cluster lacks fails the plan, naming it. A topic of the backup (``known``)
    that only a pattern selects and the cluster no longer has is *gone*: the run goes on without it.
    """
    metadata = admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics
    available = [t for t, md in metadata.items() if md.error is None]
    missing = [t for t in selection.names if t not in available]
    if missing:
        raise ConfigurationError(f"Kafka topic(s) not found: {', '.join(missing)}.")
    topics = selection.resolve(available)
    gone = sorted(t for t in known if t not in available and t not in selection.names and selection.matches(t))
    return ResolvedTopics({t: len(metadata[t].partitions) for t in topics}, gone)


def plan_ranges(
    bounds: Mapping[TP, OffsetBounds],
    checkpoints: Mapping[TP, int],
    allow_data_loss: bool,
    incarnations: Mapping[str, Incarnation] | None = None,
) -> list[PartitionRange]:
    """One range per partition, from its checkpoint (or log start) to the snapshotted end.

    ``checkpoints`` are those of each topic's incarnation in ``incarnations`` (none for a new
    one), whose ID each range records.

    A checkpoint below the log start means retention deleted records we never backed up.
    That fails the run, naming every such partition, unless ``allow_data_loss`` is set;
    then the range starts at the log start and the lost offsets go into the manifest.
    """
    ranges: list[PartitionRange] = []
    losses: list[str] = []
    for tp in sorted(bounds):
        topic, partition = tp
        b = bounds[tp]
        checkpoint = checkpoints.get(tp)
        incarnation = (incarnations or {}).get(topic)
        ids = {"topic_id": incarnation.topic_id, "id_in_keys": incarnation.id_in_keys} if incarnation else {}
        if checkpoint is None:
            ranges.append(PartitionRange(topic, partition, b.log_start, b.end, **ids))
        elif checkpoint > b.end:
            raise DataLossError(
                f"{topic}[{partition}]: the backup has offsets up to {checkpoint} but the partition, with the same "
                f"topic ID, ends at {b.end}: Kafka lost records it had acknowledged (an unclean leader election?)."
            )
        elif checkpoint < b.log_start:
            losses.append(f"{topic}[{partition}] offsets {checkpoint}..{b.log_start - 1}")
            ranges.append(PartitionRange(topic, partition, b.log_start, b.end, checkpoint, b.log_start, **ids))
        else:
            ranges.append(PartitionRange(topic, partition, checkpoint, b.end, **ids))
    if losses and not allow_data_loss:
        raise DataLossError(
            "Records were deleted from Kafka before they were backed up: " + "; ".join(losses)
            + ". Set allow_data_loss to back up what remains and record the gap in the manifest."
        )
    return ranges


def balance(items: Sequence[T], weight: Callable[[T], int], key: Callable[[T], Any], max_units: int) -> list[list[T]]:
    """Spread items over at most ``max_units`` lists, heaviest first onto the lightest list (LPT).

    Deterministic: ties break on ``key``, and each list comes out sorted by ``key``.
    """
    todo = sorted(items, key=lambda i: (-weight(i), key(i)))
    if not todo:
        return []
    count = min(max_units, len(todo))
    heap = [(0, i) for i in range(count)]
    units: list[list[T]] = [[] for _ in range(count)]
    for item in todo:
        load, i = heapq.heappop(heap)
        units[i].append(item)
        heapq.heappush(heap, (load + weight(item), i))
    return [sorted(unit, key=key) for unit in units]


def group_work_units(ranges: Sequence[PartitionRange], max_units: int) -> list[WorkUnit]:
    """Non-empty ranges spread over at most ``max_units`` work units, as XCom-ready dicts."""
    todo = [r for r in ranges if not r.is_empty]
    return [[asdict(r) for r in unit] for unit in balance(todo, lambda r: r.end - r.start, lambda r: r.tp, max_units)]
