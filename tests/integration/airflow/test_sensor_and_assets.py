"""KafkaBacklogSensor (deferred through a trigger, and poking) and the asset events of backup and restore."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid

import pytest
from confluent_kafka.admin import NewTopic

from tests.helpers import create_topics, produce_tricky, run_dag

pytestmark = pytest.mark.integration


def _asset_events(env: dict) -> list[tuple[str, dict]]:
    db = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id").fetchall()
    return [(uri, json.loads(extra) if isinstance(extra, str) else extra) for uri, extra in rows]


@pytest.mark.parametrize("dag_id", ["kafka_backup_on_backlog", "kafka_backup_on_backlog_poke",
                                    "kafka_backup_on_backlog_reschedule"])
def test_sensor_waits_for_the_backlog_then_the_backup_emits_an_asset_event(airflow_stack, bucket, dag_id):
    bootstrap = airflow_stack["bootstrap"]
    topic = f"backlog-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, NewTopic(topic, 2, 1, config={"retention.ms": "-1"}))
    produce_tricky(bootstrap, topic, 2, 10, seed=1)  # below the threshold of 50

    def more_records_later() -> None:
        time.sleep(6)
        produce_tricky(bootstrap, topic, 2, 60, seed=2, start=10)

    producer = threading.Thread(target=more_records_later)
    producer.start()
    started = time.monotonic()
    dag_run = run_dag(dag_id, {"topics": [topic], "bucket": bucket, "prefix": "bl"})
    waited = time.monotonic() - started
    producer.join()
    assert dag_run.state == "success"
    assert waited >= 6, "the sensor waited for the backlog to reach its threshold"
    uri = f"s3://{bucket}/bl/{topic}"
    events = [extra for u, extra in _asset_events(airflow_stack["env"]) if u == uri]
    assert events and events[-1]["records"] == 70 and events[-1]["run_id"] == dag_run.run_id


def test_restore_emits_a_kafka_asset_event_per_target_topic(airflow_stack, bucket):
    bootstrap = airflow_stack["bootstrap"]
    topic = f"asset-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, NewTopic(topic, 1, 1, config={"retention.ms": "-1"}))
    produce_tricky(bootstrap, topic, 1, 25, seed=3)
    assert run_dag("kafka_backup", {"topics": [topic], "bucket": bucket}).state == "success"
    target = f"{topic}-restored"
    conf = {"topics": [topic], "bucket": bucket, "topic_mapping": {topic: target},
            "topic_configs": {"retention.ms": "-1"}}
    assert run_dag("kafka_restore", conf).state == "success"
    events = [extra for u, extra in _asset_events(airflow_stack["env"]) if u == f"kafka://{bootstrap}/{target}"]
    assert events and events[-1]["records"] == 25
