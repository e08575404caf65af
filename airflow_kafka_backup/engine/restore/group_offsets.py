"""Consumer-group offsets after a restore, translated exactly through the offset map.

A group that had consumed up to source offset ``X`` (its committed offset: the next
record it would read) resumes at the first restored record whose source offset is
``>= X``. No scanning of the target topic, no guessing by timestamp. When no restored
record is at or after ``X`` (the group was at the end, or beyond a point-in-time cut),
it resumes right after the last restored record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition

from airflow_kafka_backup.engine.errors import ConfigurationError, KafkaBackupError
from airflow_kafka_backup.engine.restore.offset_map import OffsetMap

ADMIN_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class GroupTranslation:
    source_group: str
    target_group: str
    source_topic: str
    target_topic: str
    partition: int
    source_offset: int
    target_offset: int | None  # None in a dry run: nothing restored yet

    def to_dict(self) -> dict:
        return asdict(self)


def validate_group_mapping(group_mapping: object) -> dict[str, str]:
    """``group_mapping`` as source group id -> target group id, or a clear error naming the groups.

    Checked with the other arguments, before anything is read or written: an empty or
    non-text target would otherwise pass the plan and fail only when the offsets are set,
    after the restore.
    """
    mapping = group_mapping or {}
    if not isinstance(mapping, Mapping):
        raise ConfigurationError(f"group_mapping must map group ids to new ids, got {mapping!r}.")
    bad = [f"{g!r} -> {t!r}" for g, t in mapping.items() if not isinstance(g, str) or not isinstance(t, str) or not t]
    if bad:
        raise ConfigurationError(f"group_mapping must map group ids to non-empty group ids, got {', '.join(bad)}.")
    return dict(mapping)


def target_groups(group_offsets: Mapping[str, object], group_mapping: object) -> dict[str, str]:
    """Source group -> target group for every group the backup recorded.

    Refuses a mapping that sends two source groups to one target group (renaming ``billing``
    to ``billing-v2`` while the backup also has a ``billing-v2``, say): their offsets would
    overwrite each other's, so which one wins would be an accident.
    """
    mapping = validate_group_mapping(group_mapping)
    unknown = sorted(set(mapping) - set(group_offsets))
    if unknown:
        raise ConfigurationError(
            f"group_mapping names groups with no recorded offsets on the topics being restored: {unknown}.")
    groups = {g: mapping.get(g, g) for g in sorted(group_offsets)}
    sources: dict[str, list[str]] = {}
    for source, target in groups.items():
        sources.setdefault(target, []).append(source)
    merged = [f"{' and '.join(s)} -> {t}" for t, s in sorted(sources.items()) if len(s) > 1]
    if merged:
        raise ConfigurationError(
            f"group_mapping sends two source groups to one target group: {'; '.join(merged)}. "
            "Give each a target group of its own."
        )
    return groups


def check_groups_inactive(admin, groups: list[str]) -> None:
    """Refuse to move the offsets of a group that has members: they would overwrite them."""
    if not groups:
        return
    active, unreadable = [], []
    for group, future in admin.describe_consumer_groups(groups, request_timeout=ADMIN_TIMEOUT_S).items():
        try:
            description = future.result()
        except KafkaException as error:
            if error.args and error.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND:
                continue  # an unknown group has no members
            unreadable.append(f"{group} ({error.args[0].str() if error.args else error})")
            continue
        if description.members:
            active.append(f"{group} ({len(description.members)} members)")
    if unreadable:  # e.g. no Describe right on the group: its offsets could not be set either
        raise ConfigurationError(
            f"Could not check consumer group(s) {', '.join(unreadable)} for active members; the restore needs "
            "Describe and Read on the groups whose offsets it moves."
        )
    if active:
        raise ConfigurationError(
            f"Consumer group(s) {', '.join(active)} have active members; stop those consumers before restoring "
            "their offsets."
        )


def translate(group_offsets: Mapping[str, Mapping[str, Mapping[str, int]]], groups: Mapping[str, str],
              topic_mapping: Mapping[str, str], offset_maps: Mapping[tuple[str, int], OffsetMap] | None,
              target_ends: Mapping[tuple[str, int], int] | None = None) -> list[GroupTranslation]:
    """One row per group and partition.

    ``offset_maps`` by (target topic, partition), ``None`` for a dry run; ``target_ends``: the
    target partitions' end offsets, for partitions into which nothing was restored.
    """
    rows = []
    for group, target_group in groups.items():
        for topic, offsets in sorted(group_offsets[group].items()):
            if topic not in topic_mapping:
                continue
            target_topic = topic_mapping[topic]
            for partition, source_offset in sorted(offsets.items(), key=lambda kv: int(kv[0])):
                p = int(partition)
                target = None
                if offset_maps is not None:
                    offset_map = offset_maps.get((target_topic, p), OffsetMap(()))
                    target = offset_map.first_target_at_or_after(source_offset)
                    if target is None:
                        target = offset_map.end_target() if offset_map.runs else (target_ends or {}).get(
                            (target_topic, p), 0)
                rows.append(GroupTranslation(group, target_group, topic, target_topic, p, source_offset, target))
    return rows


def commit_translations(admin, rows: list[GroupTranslation]) -> None:
    by_group: dict[str, list[TopicPartition]] = {}
    for row in rows:
        if row.target_offset is not None:
            by_group.setdefault(row.target_group, []).append(
                TopicPartition(row.target_topic, row.partition, row.target_offset))
    requests = [ConsumerGroupTopicPartitions(g, tps) for g, tps in sorted(by_group.items())]
    # The admin API alters one group per request. Every group is tried, so that one failure does not
    # leave the others unmoved; the error names what moved and what did not (a retry sets them all again).
    moved, failures = [], []
    for request in requests:
        for group, future in admin.alter_consumer_group_offsets([request], request_timeout=ADMIN_TIMEOUT_S).items():
            try:
                result = future.result()
            except KafkaException as error:
                failures.append(f"{group}: {error.args[0].str() if error.args else error}")
                continue
            failed = [f"{tp.topic}[{tp.partition}] {tp.error.str()}" for tp in result.topic_partitions
                      if tp.error is not None]
            if failed:
                failures.append(f"{group}: {', '.join(failed)}")
            else:
                moved.append(group)
    if failures:
        raise KafkaBackupError(
            f"Setting the offsets of consumer group(s) failed: {'; '.join(failures)}. "
            f"Moved: {', '.join(moved) or 'none'}. Clearing the task sets them all again."
        )
