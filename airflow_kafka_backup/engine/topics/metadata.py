"""Topic metadata and consumer-group offsets, captured at plan time into the run manifest.

- Topic metadata: partition count, replication factor, and the topic's own configs
  (``DYNAMIC_TOPIC_CONFIG``: what someone set on the topic, not broker defaults), so a
  restore recreates the topic as it was.
- Consumer-group offsets on the backed-up topics (all groups, or those matching a list or
  a regular expression). They are read *before* the run's end offsets are snapshotted,
  so every captured offset is at or below the run's cut.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from confluent_kafka import ConsumerGroupTopicPartitions, TopicCollection
from confluent_kafka.admin import ConfigResource, ConfigSource, ResourceType

from airflow_kafka_backup.engine.errors import ConfigurationError

ADMIN_TIMEOUT_S = 30.0
log = logging.getLogger(__name__)
# Our own restore-progress groups (see restore.progress_group) are bookkeeping, not consumers.
RESTORE_GROUP_PREFIX = "airflow-kafka-backup-restore-"


@dataclass(frozen=True)
class TopicMetadata:
    topic: str
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)
    topic_id: str | None = None  # Kafka's topic ID (KIP-516): a recreated topic gets a new one

    def to_dict(self) -> dict:
        return asdict(self)


def topic_ids(admin, topics: Sequence[str]) -> dict[str, str]:
    """Each topic's Kafka topic ID, as Kafka prints it (base64), from one DescribeTopics request."""
    if not topics:
        return {}
    futures = admin.describe_topics(TopicCollection(list(topics)), request_timeout=ADMIN_TIMEOUT_S)
    return {topic: str(future.result().topic_id) for topic, future in futures.items()}


def describe_topics(admin, topics: Sequence[str], ids: dict[str, str] | None = None) -> list[TopicMetadata]:
    """``ids``: the topics' IDs, when the caller has asked for them already."""
    if not topics:
        return []
    ids = topic_ids(admin, topics) if ids is None else ids
    metadata = admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics
    resources = [ConfigResource(ResourceType.TOPIC, t) for t in topics]
    configs = {r.name: f.result() for r, f in admin.describe_configs(resources,
                                                                     request_timeout=ADMIN_TIMEOUT_S).items()}
    out = []
    for topic in topics:
        partitions = metadata[topic].partitions
        own = {name: entry.value for name, entry in configs[topic].items()
               if entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value and not entry.is_sensitive
               and entry.value is not None}
        out.append(TopicMetadata(topic, len(partitions), len(partitions[0].replicas) if partitions else 0,
                                 dict(sorted(own.items())), ids.get(topic)))
    return out


def select_groups(admin, selector: object) -> list[str]:
    """Group ids chosen by ``selector``: ``None``/``"*"`` all, ``re:<pattern>``, a list of ids, or a list mixing
    ids, ``"*"`` and ``re:<pattern>`` entries (the trigger form's one-per-line list); a comma-separated string
    is a list of ids."""
    if selector in (None, "", False, []):
        return []
    if selector is True:
        selector = ["*"]
    elif isinstance(selector, str):
        selector = ([selector] if selector == "*" or selector.startswith("re:")
                    else [s.strip() for s in selector.split(",") if s.strip()])
    if not isinstance(selector, Sequence) or not all(isinstance(s, str) for s in selector):
        raise ConfigurationError(
            f"consumer_groups must be '*', a list of group ids or 're:<pattern>', got {selector!r}."
        )
    listed = sorted(g.group_id for g in admin.list_consumer_groups(request_timeout=ADMIN_TIMEOUT_S).result().valid
                    if not g.group_id.startswith(RESTORE_GROUP_PREFIX))
    chosen: dict[str, None] = {}  # insertion-ordered set
    unknown = []
    for entry in selector:
        if entry == "*":
            chosen.update(dict.fromkeys(listed))
        elif entry.startswith("re:"):
            try:
                pattern = re.compile(entry[3:])
            except re.error as error:
                raise ConfigurationError(
                    f"consumer_groups pattern {entry[3:]!r} is not a regular expression: {error}"
                ) from None
            chosen.update(dict.fromkeys(g for g in listed if pattern.fullmatch(g)))
        elif entry in listed:
            chosen[entry] = None
        else:
            unknown.append(entry)
    if unknown:  # a typo, or a group that has not committed yet: say so rather than record nothing
        log.warning("consumer_groups names group(s) the cluster does not have: %s; their offsets are not recorded.",
                    ", ".join(unknown))
    return list(chosen)


GroupOffsets = dict[str, dict[str, dict[str, int]]]  # group -> topic -> partition (str) -> offset


def committed_group_offsets(admin, groups: Sequence[str], topics: Sequence[str]) -> GroupOffsets:
    """``{group: {topic: {partition: committed offset}}}``, only for ``topics`` and real offsets."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for group in groups:
        future = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                                   request_timeout=ADMIN_TIMEOUT_S)[group]
        for tp in future.result().topic_partitions:
            if tp.topic in topics and tp.offset >= 0 and tp.error is None:
                out.setdefault(group, {}).setdefault(tp.topic, {})[str(tp.partition)] = tp.offset
    return out
