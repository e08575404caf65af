"""Shared integration fixtures: the test corpus, built once per session in the real broker."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka.admin import NewTopic

from tests.helpers import (
    RECORDS_PER_TOPIC,
    create_topics,
    produce_compacted_with_gaps,
    produce_transactional,
    produce_tricky,
)


@pytest.fixture(scope="session")
def corpus(airflow_stack):
    """3 tricky topics x 3 partitions, a transactional topic with aborts, a compacted topic with gaps."""
    bootstrap = airflow_stack["bootstrap"]
    run = uuid.uuid4().hex[:6]
    tricky = [f"corpus-{run}-{n}" for n in "abc"]
    tx, compact = f"corpus-{run}-tx", f"corpus-{run}-compact"
    create_topics(
        bootstrap,
        *(NewTopic(t, 3, 1, config={"retention.ms": "-1"}) for t in tricky),  # 2020 timestamps
        NewTopic(tx, 2, 1),
        NewTopic(compact, 1, 1, config={
            "cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01",
            "delete.retention.ms": "100", "min.compaction.lag.ms": "0",
        }),
    )
    for seed, topic in enumerate(tricky):
        produce_tricky(bootstrap, topic, 3, RECORDS_PER_TOPIC, seed)
    produce_transactional(bootstrap, tx)
    produce_compacted_with_gaps(bootstrap, compact)
    return {"bootstrap": bootstrap, "tricky": tricky, "tx": tx, "compact": compact,
            "all": [*tricky, tx, compact]}


