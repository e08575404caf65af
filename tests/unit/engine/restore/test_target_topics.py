"""Unit tests: what a target topic's configs would do to the records a restore writes into it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from airflow_kafka_backup.engine.restore.planning import PartitionRestore, PlannedSegment
from airflow_kafka_backup.engine.restore.target_topics import (
    broker_topic_defaults,
    record_keeping_problems,
    timestamp_spans,
)
from airflow_kafka_backup.engine.storage.checksums import SHA256, Checksum

NOW = 1_790_000_000_000  # 2026-09-21
DAY = 86_400_000
KAFKA_DEFAULTS = {"cleanup.policy": "delete", "retention.ms": str(7 * DAY), "message.timestamp.type": "CreateTime",
                  "message.timestamp.before.max.ms": str(2**63 - 1), "message.timestamp.after.max.ms": "3600000"}


def _segment(min_ts: int | None, max_ts: int | None) -> PlannedSegment:
    return PlannedSegment("k", 0, 9, 10, 1, Checksum(SHA256, "x"), "jsonl", "none", min_ts, max_ts)


def test_a_segment_restored_whole_gives_its_exact_span():
    p = PartitionRestore("s", "t", 0, [_segment(NOW - 9 * DAY, NOW - 8 * DAY), _segment(NOW - 2 * DAY, NOW - DAY)])
    assert p.timestamp_span() == (NOW - 9 * DAY, NOW - DAY)
    p.from_timestamp, p.until_timestamp = NOW - 10 * DAY, NOW  # a window around both cuts nothing
    assert p.timestamp_span() == (NOW - 9 * DAY, NOW - DAY)


def test_a_segment_cut_by_the_window_or_the_offset_bounds_counts_as_young_as_it_can_be():
    # Which of its records pass is not known before they are read: never refuse on a guess.
    straddling = _segment(NOW - 30 * DAY, NOW - DAY)
    cut_by_window = PartitionRestore("s", "t", 0, [straddling], from_timestamp=NOW - 5 * DAY)
    assert cut_by_window.timestamp_span() == (NOW - DAY, NOW - 5 * DAY)
    cut_by_until = PartitionRestore("s", "t", 0, [straddling], until_timestamp=NOW - 20 * DAY)
    assert cut_by_until.timestamp_span() == (NOW - 20 * DAY - 1, NOW - 30 * DAY)
    cut_by_offsets = PartitionRestore("s", "t", 0, [straddling], start_offset=5)
    assert cut_by_offsets.timestamp_span() == (NOW - DAY, NOW - 30 * DAY)
    assert record_keeping_problems("t", KAFKA_DEFAULTS, cut_by_offsets.timestamp_span(), NOW, True) == []


def test_broker_stamped_and_unknown_timestamps_never_make_the_span_older():
    # A segment with a record of timestamp 0 (stamped by the broker on restore) counts as cut.
    assert PartitionRestore("s", "t", 0, [_segment(0, NOW - DAY)]).timestamp_span() == (NOW - DAY, 1)
    assert PartitionRestore("s", "t", 0, [_segment(-1, 0)]).timestamp_span() == (None, None)
    assert PartitionRestore("s", "t", 0, [_segment(None, None)]).timestamp_span() == (None, None)  # older work units


def test_spans_merge_per_target_topic():
    p0 = PartitionRestore("s", "t", 0, [_segment(NOW - 3 * DAY, NOW - 2 * DAY)])
    p1 = PartitionRestore("s", "t", 1, [_segment(NOW - 4 * DAY, NOW - 3 * DAY)])
    other = PartitionRestore("u", "v", 0, [_segment(-1, 0)])
    assert timestamp_spans([p0, p1, other]) == {"t": (NOW - 4 * DAY, NOW - 2 * DAY), "v": (None, None)}


@pytest.mark.parametrize("configs,span,created,expected", [
    ({}, (NOW - 100 * DAY, NOW), False, []),  # nothing known about the topic
    (KAFKA_DEFAULTS, (NOW - 6 * DAY, NOW), True, []),
    (KAFKA_DEFAULTS, (None, None), True, []),
    (KAFKA_DEFAULTS, (NOW - 8 * DAY, NOW), True, ['go back to 2026-09-13T', 'retention.ms=604800000 (7 days)',
                                                  'add "retention.ms": "-1" to topic_configs']),
    (KAFKA_DEFAULTS, (NOW - 8 * DAY, NOW), False, ["--entity-name t --add-config retention.ms=-1"]),
    ({**KAFKA_DEFAULTS, "retention.ms": "-1"}, (NOW - 800 * DAY, NOW), False, []),
    ({**KAFKA_DEFAULTS, "cleanup.policy": "compact"}, (NOW - 800 * DAY, NOW), False, []),
    ({**KAFKA_DEFAULTS, "cleanup.policy": "compact, delete"}, (NOW - 800 * DAY, NOW), False, ["retention.ms="]),
    # An empty policy (newer Kafka, apache/kafka#20334) deletes nothing, whatever retention.ms says.
    ({**KAFKA_DEFAULTS, "cleanup.policy": ""}, (NOW - 800 * DAY, NOW), False, []),
    ({**KAFKA_DEFAULTS, "retention.ms": "-1", "message.timestamp.before.max.ms": str(DAY)}, (NOW - 2 * DAY, NOW),
     True, ["message.timestamp.before.max.ms=86400000 (1 days) makes the broker refuse records that old",
            f'"message.timestamp.before.max.ms": "{2**63 - 1}"']),
    (KAFKA_DEFAULTS, (NOW, NOW + 2 * 3_600_000), True,
     ["reach 2026-09-21T", "after.max.ms=3600000 (1 hours)", "earlier until_timestamp"]),
    ({**KAFKA_DEFAULTS, "message.timestamp.type": "LogAppendTime"}, (NOW - 100 * DAY, NOW), False,
     ["t has message.timestamp.type=LogAppendTime", "--add-config message.timestamp.type=CreateTime"]),
    # Asked for in topic_configs: the user's choice, and the broker stamps the records, so nothing else applies.
    ({**KAFKA_DEFAULTS, "message.timestamp.type": "LogAppendTime"}, (NOW - 100 * DAY, NOW), True, []),
])
def test_record_keeping_problems(configs, span, created, expected):
    problems = record_keeping_problems("t", configs, span, NOW, created)
    assert len(problems) == (1 if expected else 0), problems
    for fragment in expected:
        assert fragment in problems[0]


@pytest.mark.parametrize("broker,retention", [
    ({"log.retention.hours": "168", "log.retention.minutes": None, "log.retention.ms": None}, str(7 * DAY)),
    ({"log.retention.hours": "168", "log.retention.minutes": "30", "log.retention.ms": None}, "1800000"),
    ({"log.retention.hours": "168", "log.retention.minutes": "30", "log.retention.ms": "-1"}, "-1"),
    ({"log.retention.hours": "-1"}, "-1"),
])
def test_a_new_topics_retention_is_the_brokers_in_kafkas_order_ms_minutes_hours(broker, retention):
    admin = SimpleNamespace(
        list_topics=lambda timeout: SimpleNamespace(brokers={3: None, 2: None}),
        describe_configs=lambda resources, request_timeout: {
            r: SimpleNamespace(result=lambda: {n: SimpleNamespace(value=v) for n, v in broker.items()})
            for r in resources})
    assert broker_topic_defaults(admin)["retention.ms"] == retention
