"""The trigger behind ``KafkaBacklogSensor(deferrable=True)``: polls Kafka in the triggerer, not a worker slot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.apache.kafka.hooks.client import KafkaAdminClientHook
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_kafka_backup.engine.backup.backlog import Backlog, measure_backlog
from airflow_kafka_backup.engine.storage.manifest import TopicPartition, checkpoints_from_json
from airflow_kafka_backup.engine.topics.selection import TopicSelection
from airflow_kafka_backup.hooks.kafka import KafkaRangeConsumerHook


def check_backlog(kafka_conn_id: str, topics: TopicSelection, checkpoints: dict[TopicPartition, int],
                  isolation_level: str, with_age: bool, topic_ids: dict[str, str] | None = None) -> Backlog:
    """Measure the backlog with clients from the ``kafka`` connection (worker or triggerer)."""
    admin = KafkaAdminClientHook(kafka_config_id=kafka_conn_id).get_conn
    consumer = KafkaRangeConsumerHook(kafka_conn_id, isolation_level).get_conn if with_age else None
    try:
        return measure_backlog(admin, topics, checkpoints, isolation_level, consumer, current_ids=topic_ids)
    finally:
        if consumer is not None:
            consumer.close()


def backlog_is_due(backlog: Backlog, min_records: int, max_age_s: float | None) -> str | None:
    """Why the backup should run now, or ``None`` to keep waiting."""
    if backlog.records and backlog.records >= min_records:
        return f"{backlog.records} records waiting (threshold {min_records})"
    age = backlog.age_s()
    if max_age_s is not None and age is not None and age >= max_age_s:
        return f"the oldest waiting record is {age:.0f}s old (limit {max_age_s:.0f}s)"
    return None


class KafkaBacklogTrigger(BaseTrigger):
    """Fires when the backlog reaches ``min_records`` or its oldest record is ``max_age_s`` old.

    The checkpoints are handed over by the sensor (read from the Variable and S3 in the
    worker), so the trigger only talks to Kafka.
    """

    def __init__(self, *, kafka_conn_id: str, topics: list[str], checkpoints: dict[str, dict[str, int]],
                 isolation_level: str, min_records: int, max_age_s: float | None, poll_interval_s: float,
                 exclude_topics: list[str] | None = None, topic_ids: dict[str, str] | None = None) -> None:
        super().__init__()
        self.kafka_conn_id = kafka_conn_id
        self.topics = topics
        self.exclude_topics = exclude_topics or []
        self.topic_ids = topic_ids or {}  # the incarnation each topic's checkpoints belong to
        self.checkpoints = checkpoints
        self.isolation_level = isolation_level
        self.min_records = min_records
        self.max_age_s = max_age_s
        self.poll_interval_s = poll_interval_s

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"kafka_conn_id": self.kafka_conn_id, "topics": self.topics, "checkpoints": self.checkpoints,
             "isolation_level": self.isolation_level, "min_records": self.min_records,
             "max_age_s": self.max_age_s, "poll_interval_s": self.poll_interval_s,
             "exclude_topics": self.exclude_topics, "topic_ids": self.topic_ids},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        checkpoints = checkpoints_from_json(self.checkpoints)
        selection = TopicSelection.parse(self.topics, self.exclude_topics)
        while True:
            try:
                backlog = await asyncio.to_thread(
                    check_backlog, self.kafka_conn_id, selection, checkpoints, self.isolation_level,
                    self.max_age_s is not None, self.topic_ids,
                )
            except Exception as error:  # reported to the task, which fails with it
                yield TriggerEvent({"status": "error", "message": str(error)})
                return
            reason = backlog_is_due(backlog, self.min_records, self.max_age_s)
            if reason:
                yield TriggerEvent({"status": "success", "records": backlog.records, "reason": reason})
                return
            self.log.info("Backlog %d records (waiting for %s); next check in %ss", backlog.records,
                          self.min_records, self.poll_interval_s)
            await asyncio.sleep(self.poll_interval_s)
