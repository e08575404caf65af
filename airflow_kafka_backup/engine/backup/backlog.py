"""The backlog: records in Kafka that no committed backup holds yet, and how old the oldest is."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from confluent_kafka import TopicPartition

from airflow_kafka_backup.engine.backup.planning import resolve_topics
from airflow_kafka_backup.engine.storage.manifest import TopicPartition as TP
from airflow_kafka_backup.engine.topics.metadata import topic_ids
from airflow_kafka_backup.engine.topics.offsets import snapshot_offsets
from airflow_kafka_backup.engine.topics.selection import TopicSelection


def _age_s(timestamp_ms: int | None, now_ms: int | None) -> float | None:
    if timestamp_ms is None:
        return None
    return ((now_ms if now_ms is not None else int(time.time() * 1000)) - timestamp_ms) / 1000


@dataclass(frozen=True)
class TopicLag:
    """One topic's records not yet in a committed backup, and the timestamp of the oldest of them: its RPO."""

    records: int
    oldest_timestamp_ms: int | None  # None when not measured, or nothing is waiting

    def age_s(self, now_ms: int | None = None) -> float | None:
        return _age_s(self.oldest_timestamp_ms, now_ms)


@dataclass(frozen=True)
class Backlog:
    records: int
    oldest_timestamp_ms: int | None  # None when not measured, or nothing is waiting
    partitions: dict[str, int]  # "topic[p]" -> records waiting, for the log
    topics: dict[str, TopicLag] = field(default_factory=dict)  # every topic measured, waiting or not

    def age_s(self, now_ms: int | None = None) -> float | None:
        return _age_s(self.oldest_timestamp_ms, now_ms)


def measure_backlog(admin, topics: Sequence[str] | TopicSelection, checkpoints: Mapping[TP, int],
                    isolation_level: str, consumer=None, timeout_s: float = 10.0,
                    current_ids: Mapping[str, str] | None = None) -> Backlog:
    """Records between each partition's checkpoint (or log start) and its end offset.

    ``topics`` may hold patterns, resolved here as the plan resolves them. ``current_ids``: the
    topic ID of the incarnation each topic's checkpoints belong to; a topic Kafka now holds under
    another ID was recreated, and all of it waits.

    With a ``consumer`` (unsubscribed), also reads the first waiting record of every
    partition with a backlog, for the age of the oldest one.
    """
    selection = topics if isinstance(topics, TopicSelection) else TopicSelection.parse(topics)
    partitions = resolve_topics(admin, selection).partitions
    if current_ids:
        ids = topic_ids(admin, [t for t in partitions if t in current_ids])
        recreated = {t for t, i in ids.items() if i != current_ids[t]}
        checkpoints = {tp: offset for tp, offset in checkpoints.items() if tp[0] not in recreated}
    bounds = snapshot_offsets(admin, [(t, p) for t, n in partitions.items() for p in range(n)], isolation_level)
    starts = {tp: max(checkpoints.get(tp, b.log_start), b.log_start) for tp, b in bounds.items()}
    waiting = {tp: b.end - starts[tp] for tp, b in bounds.items() if b.end > starts[tp]}
    oldest = _first_timestamps(consumer, {tp: starts[tp] for tp in waiting}, timeout_s) if consumer else {}
    topics = {}
    for topic in partitions:
        stamps = [ts for (t, _), ts in oldest.items() if t == topic]
        topics[topic] = TopicLag(sum(n for (t, _), n in waiting.items() if t == topic), min(stamps, default=None))
    return Backlog(sum(waiting.values()), min(oldest.values(), default=None),
                   {f"{t}[{p}]": n for (t, p), n in sorted(waiting.items())}, topics)


def _first_timestamps(consumer, starts: Mapping[TP, int], timeout_s: float) -> dict[TP, int]:
    """The timestamp of the first waiting record of each partition (those read within ``timeout_s``)."""
    if not starts:
        return {}
    consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in starts.items()])
    seen: dict[TP, int] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(seen) < len(starts) and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=len(starts), timeout=0.5):
                tp = (message.topic(), message.partition())
                if message.error() is None and tp not in seen:
                    seen[tp] = message.timestamp()[1]
    finally:
        consumer.unassign()
    return seen


def rpo_breaches(lags: Mapping[str, TopicLag], rpo_s: float, now_ms: int | None = None) -> list[str]:
    """The topics whose oldest record not yet in a committed backup is older than ``rpo_s``, described."""
    breaches = []
    for topic, lag in sorted(lags.items()):
        age = lag.age_s(now_ms)
        if age is not None and age > rpo_s:
            breaches.append(f"{topic}: {lag.records} records not backed up, the oldest {age:.0f}s old")
    return breaches
