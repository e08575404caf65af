"""Backups with a recorded gap and a restore, made by real DAG runs, for the page's API and browser tests."""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.helpers import create_topics, read_kafka

PARTITIONS = 2


@dataclass
class MadeBackup:
    topic: str
    first: dict[int, list]  # per partition, the records the first run backed up
    lost: dict[int, tuple[int, int]]  # per partition, offsets [start, end) deleted before the second run
    after: dict[int, list]  # per partition, the records the second run backed up


def produce_stamped(bootstrap: str, topic: str, count: int, start_ms: int, step_ms: int, tag: str) -> None:
    """``count`` records over the partitions, timestamps from ``start_ms`` in steps (each partition ordered)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    for i in range(count):
        producer.produce(topic, partition=i % PARTITIONS, key=f"{tag}-{i}".encode(), value=b"v" * 32,
                         timestamp=start_ms + i * step_ms)
    assert producer.flush(30) == 0


def delete_before(bootstrap: str, topic: str, offsets: dict[int, int]) -> None:
    """Move each partition's log start to ``offsets``: the records before are gone, as retention would do."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.delete_records([TopicPartition(topic, p, o) for p, o in offsets.items()], request_timeout=30)
    for future in futures.values():
        future.result()


def back_up_with_a_gap(bootstrap: str, topic: str, run, conf: dict) -> MadeBackup:
    """Run 1 backs up 200 records (stamped 10 to 6 minutes ago); 100 more (6 to 4 minutes ago) are deleted before
    run 2, which backs up 100 newer ones (4 to 2 minutes ago) with allow_data_loss and records the gap.

    ``run(conf)`` runs the backup DAG and returns its state.
    """
    create_topics(bootstrap, NewTopic(topic, PARTITIONS, 1))
    now = int(time.time() * 1000)
    produce_stamped(bootstrap, topic, 200, now - 600_000, 1_200, "first")
    assert run(conf) == "success"
    first = read_kafka(bootstrap, [topic])
    produce_stamped(bootstrap, topic, 100, now - 360_000, 1_200, "lost")
    ends = {p: len(first[(topic, p)]) + 50 for p in range(PARTITIONS)}
    delete_before(bootstrap, topic, ends)
    produce_stamped(bootstrap, topic, 100, now - 240_000, 1_200, "after")
    after = read_kafka(bootstrap, [topic])
    assert run({**conf, "allow_data_loss": True}) == "success"
    return MadeBackup(topic, {p: first[(topic, p)] for p in range(PARTITIONS)},
                      {p: (len(first[(topic, p)]), ends[p]) for p in range(PARTITIONS)},
                      {p: after[(topic, p)] for p in range(PARTITIONS)})
