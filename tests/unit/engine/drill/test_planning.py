"""Planning a drill: the window both backed up and still in Kafka, samples, scratch names, skipped topics."""

from __future__ import annotations

import pytest

from airflow_kafka_backup.engine.drill.planning import DrillSettings, check_scratch_names, plan_drill, sample_partitions
from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.restore.planning import PartitionRestore, PlannedSegment, RestorePlan
from airflow_kafka_backup.engine.storage.checksums import SHA256, Checksum
from airflow_kafka_backup.engine.topics.offsets import OffsetBounds


def segment(first: int, last: int) -> PlannedSegment:
    return PlannedSegment(f"k/{first}", first, last, last - first + 1, 100,
                          Checksum(SHA256, "0" * 64), "msgpack", "zstd", 1, 2)


def restore_plan(partitions: int = 2, topic_id: str | None = "ID1") -> RestorePlan:
    units = [PartitionRestore("orders", "drill.orders", p, [segment(0, 99), segment(100, 199), segment(200, 299)])
             for p in range(partitions)]
    return RestorePlan(units, {"orders": partitions}, {"orders": "drill.orders"},
                       {"orders": {"configs": {"cleanup.policy": "delete"}}},
                       {"billing": {"orders": {"0": 250, "1": 5}}, "other": {"orders": {"7": 1}}},
                       {"orders": {"topic_id": topic_id}})


SETTINGS = DrillSettings.create(topics=["orders"], records_per_partition=50)
LIVE = {("orders", 0): OffsetBounds(0, 300), ("orders", 1): OffsetBounds(0, 300)}


def test_the_window_is_the_last_records_and_only_its_segments():
    plan = plan_drill(restore_plan(), SETTINGS, LIVE, {"orders": "ID1"}, seed="run")
    (p0, p1) = plan.partitions
    assert (p0.start, p0.end) == (250, 300)
    assert (p0.unit.start_offset, p0.unit.end_offset) == (250, 300)
    assert [s.first_offset for s in p0.unit.segments] == [200]
    assert p0.unit.target_topic == "drill.orders" and plan.partition_counts == {"drill.orders": 2}
    # Only the groups' offsets on drilled partitions are checked.
    assert plan.group_offsets == {"billing": {"orders": {"0": 250, "1": 5}}}


def test_the_window_stays_inside_what_kafka_still_holds_and_what_the_backup_holds():
    live = {("orders", 0): OffsetBounds(280, 300),  # retention removed up to 280
            ("orders", 1): OffsetBounds(0, 250)}  # Kafka is behind the backup? only offsets in both
    plan = plan_drill(restore_plan(), SETTINGS, live, {"orders": "ID1"}, seed="run")
    assert [(p.start, p.end) for p in plan.partitions] == [(280, 300), (200, 250)]
    gone = {("orders", 0): OffsetBounds(300, 300), ("orders", 1): OffsetBounds(0, 300)}
    plan = plan_drill(restore_plan(), SETTINGS, gone, {"orders": "ID1"}, seed="run")
    assert [p.unit.partition for p in plan.partitions] == [1]
    assert plan.skipped == ["orders[0]: Kafka holds offsets 300..299 and the backup 0..299: none in both"]


def test_a_recreated_or_deleted_topic_is_not_drilled():
    with pytest.raises(ConfigurationError, match="not the backed-up incarnation"):
        plan_drill(restore_plan(), SETTINGS, LIVE, {"orders": "ID2"}, seed="run")
    with pytest.raises(ConfigurationError, match="not in the source cluster any more"):
        plan_drill(restore_plan(), SETTINGS, LIVE, {"orders": None}, seed="run")


def test_partition_samples_are_stable_per_run_and_vary_between_runs():
    assert sample_partitions(range(12), 3, "a") == sample_partitions(range(12), 3, "a")
    assert len({tuple(sample_partitions(range(12), 3, f"run{i}")) for i in range(10)}) > 1
    assert sample_partitions([2, 0, 1], None, "a") == [0, 1, 2]
    plan = plan_drill(restore_plan(partitions=2), DrillSettings.create(topics=["orders"], partitions_per_topic=1),
                      LIVE, {"orders": "ID1"}, seed="run")
    assert len(plan.partitions) == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"topics": []}, "topics must list"),
    ({"topics": ["orders"], "scratch_prefix": ""}, "scratch_prefix"),
    ({"topics": ["orders"], "records_per_partition": 0}, "records_per_partition"),
    ({"topics": ["orders"], "partitions_per_topic": "two"}, "partitions_per_topic"),
])
def test_settings_refuse_bad_values(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        DrillSettings.create(**kwargs)


def test_scratch_names_must_be_legal_and_not_a_drilled_topic():
    with pytest.raises(ConfigurationError, match="longer than"):
        check_scratch_names(DrillSettings.create(topics=["t"], scratch_prefix="x" * 249), ["t"], ["t"])
    with pytest.raises(ConfigurationError, match="is a drilled topic itself"):
        check_scratch_names(DrillSettings.create(topics=["re:.*"], scratch_prefix="a."), ["b", "a.b"], ["b", "a.b"])
