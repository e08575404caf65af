"""Unit tests: the Markdown report the approval step and the dry run show, built from the plan alone."""

from __future__ import annotations

from airflow_kafka_backup.engine.restore.planning import PartitionRestore, PlannedSegment, RestorePlan
from airflow_kafka_backup.engine.restore.report import ReportFacts, restore_report
from airflow_kafka_backup.engine.storage.checksums import SHA256, Checksum

MIB = 1024 * 1024


def _segment(first: int, last: int, size: int) -> PlannedSegment:
    return PlannedSegment(f"k/{first}", first, last, last - first + 1, size,
                          Checksum(SHA256, "0" * 64), "msgpack", "zstd",
                          1_714_550_000_000, 1_714_560_000_000)


def _plan(until: int | None = None) -> RestorePlan:
    orders = [PartitionRestore("orders", "orders-restored", p, [_segment(0, 999_999, 40 * MIB)],
                               until_timestamp=until) for p in range(3)]
    audit = [PartitionRestore("audit", "audit", 0, [_segment(0, 499, MIB)], until_timestamp=until)]
    return RestorePlan(
        [*orders, *audit], {"orders": 3, "audit": 1}, {"orders": "orders-restored", "audit": "audit"},
        group_offsets={"billing": {"orders": {"0": 250_000, "2": 7}}},
        incarnations={"orders": {"topic_id": "Xy1", "number": 2, "of": 2, "min_timestamp": 1_714_550_000_000,
                                 "max_timestamp": 1_714_560_000_000},
                      "audit": {"topic_id": None, "number": 1, "of": 1, "min_timestamp": None,
                                "max_timestamp": None}})


def _facts(**overrides) -> ReportFacts:
    base = {"bucket": "backups", "prefix": "kafka-backup", "new_topics": ["orders-restored"],
            "target_records": {"audit": 1_234}, "if_target_not_empty": "append",
            "decision": "audit holds 1,234 records; if_target_not_empty is append: the restore adds every record "
                        "after them.", "work_units": 4}
    return ReportFacts(**{**base, **overrides})


def test_report_names_targets_new_or_existing_with_counts_sizes_and_incarnations():
    report = restore_report(_plan(), _facts())
    assert report.startswith("### Restore 2 topic(s): 4 partitions, at most 3,000,500 records, 121.0 MiB")
    assert "`s3://backups/kafka-backup`" in report
    assert ("| orders | orders-restored | new (created after approval) | 3 | 3,000,000 | 120.0 MiB | 2 of 2, "
            "id `Xy1`, records 2024-05-01 07:53:20 UTC to 2024-05-01 10:40:00 UTC |") in report
    assert "| audit | audit | existing, 1,234 records | 1 | 500 | 1.0 MiB | 1 of 1, id `recorded before topic IDs` |" \
        in report
    assert "if_target_not_empty = `append`): audit holds 1,234 records" in report
    assert "**Time window:** everything in the backup" in report
    assert "**Reject** ends the run with nothing created or written" in report


def test_report_shows_the_point_in_time_and_the_groups_to_move():
    report = restore_report(_plan(until=1_714_557_600_000),
                            _facts(restore_consumer_groups=True, groups={"billing": "billing-restored"}))
    assert "until 2024-05-01 10:00:00 UTC (exclusive, the point in time)" in report
    assert "| billing | billing-restored | orders-restored | 0 | 250,000 |" in report
    assert "| billing | billing-restored | orders-restored | 2 | 7 |" in report


def test_report_says_when_groups_stay_put():
    report = restore_report(_plan(), _facts())
    assert "none moved (restore_consumer_groups is off); the backup recorded 1: billing." in report


def test_estimated_duration_scales_with_records_and_parallel_tasks():
    four = restore_report(_plan(), _facts(work_units=4))
    one = restore_report(_plan(), _facts(work_units=1))
    # 3,000,500 records: 4 tasks (4 partitions) at 100k/s each is ~8 s; one task is ~30 s, 50 min only at 300M.
    assert "**Estimated duration:** under a minute of producing (4 parallel task(s)" in four
    assert "(1 parallel task(s)" in one
    big = _plan()
    big.partitions[0].segments[0] = _segment(0, 299_999_999, MIB)
    assert "about 50 min of producing (1 parallel task(s)" in restore_report(big, _facts(work_units=1))


def test_dry_run_report_is_the_same_report_headed_as_a_dry_run():
    real, dry = restore_report(_plan(), _facts()), restore_report(_plan(), _facts(dry_run=True))
    assert dry.startswith("**DRY RUN: nothing will be created or written.**")
    assert real.split("\n**Approve**")[0].strip() in dry
