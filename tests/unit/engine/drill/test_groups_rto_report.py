"""The drill's consumer-group check, RTO projection and report keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from airflow_kafka_backup.engine.drill.compare import ObservedRecord
from airflow_kafka_backup.engine.drill.groups import check_group
from airflow_kafka_backup.engine.drill.report import DrillReport, list_reports, report_key, write_report
from airflow_kafka_backup.engine.drill.rto import project_rto
from airflow_kafka_backup.engine.restore.group_offsets import GroupTranslation


def row(source_offset: int) -> GroupTranslation:
    return GroupTranslation("billing", "drill.billing", "orders", "drill.orders", 0, source_offset, None)


def rec(source_offset: int, value=b"v") -> ObservedRecord:
    return ObservedRecord(source_offset, b"k", value, (), 5, 1)


WINDOW = (100, 200)  # restored to target offsets 0..99


def source_at(offset: int, end: int):
    return rec(offset) if offset < end else None


def scratch_at(offset: int):
    return rec(100 + offset) if offset < 100 else None


def test_a_group_inside_the_window_lands_on_its_record():
    assert check_group(row(150), WINDOW, 50, 100, source_at, scratch_at).ok
    wrong = check_group(row(150), WINDOW, 51, 100, source_at, scratch_at)
    assert not wrong.ok and wrong.problem == "the record at committed offset 51 is source offset 151"


def test_a_group_before_the_window_starts_at_its_first_record_and_one_past_it_at_the_end():
    assert check_group(row(3), WINDOW, 0, 100, source_at, scratch_at).ok
    assert check_group(row(250), WINDOW, 100, 100, source_at, scratch_at).ok
    late = check_group(row(250), WINDOW, 99, 100, source_at, scratch_at)
    assert not late.ok and late.problem == "committed offset 99, expected 100"


def test_a_group_landing_on_a_record_with_other_content_fails():
    def altered(offset):
        return rec(100 + offset, value=b"other")

    check = check_group(row(150), WINDOW, 50, 100, source_at, altered)
    assert not check.ok and "value differs" in check.problem


def test_rto_is_the_longer_of_the_record_and_byte_projections():
    projection = project_rto(restored_records=1_000, restored_bytes=10_000, restore_seconds=2.0,
                             backup_records=100_000, backup_bytes=5_000_000)
    assert projection.records_per_second == 500
    assert projection.projected_seconds == 1_000.0  # bytes: 5 MB at 5 kB/s beats 200 s by records
    assert project_rto(0, 0, 0.0, 10, 10).projected_seconds is None


class MemoryStore:
    bucket = "b"

    def __init__(self):
        self.objects: dict[str, bytes] = {}

    def put_bytes(self, key, data, content_type="application/json"):
        self.objects[key] = data

    def get_bytes(self, key):
        return self.objects[key]

    def list_keys(self, prefix):
        return (k for k in sorted(self.objects) if k.startswith(prefix))


def test_reports_sort_by_start_and_pending_records_are_not_reports():
    store = MemoryStore()
    for started in ("2026-12-03T10:00:00+00:00", "2026-12-01T10:00:00+00:00"):
        write_report(store, "pre", DrillReport("drills/run:" + started, started, {}, "a:9092", "a:9092", {}))
    store.put_bytes("pre/_drills/_pending/drills=x.json", b"{}")
    listed = list(list_reports(store, "pre"))
    assert [k for k, _ in listed] == ["pre/_drills/20261201T100000Z-drills=run_2026-12-01T10_00_00_00_00.json",
                                      "pre/_drills/20261203T100000Z-drills=run_2026-12-03T10_00_00_00_00.json"]
    assert listed[0][1]["result"] == "failed" and json.loads(store.objects[listed[1][0]])["source_cluster"]
    assert report_key("", "d/r", datetime(2026, 1, 2, tzinfo=UTC)) == "_drills/20260102T000000Z-d=r.json"


def test_summary_adds_up_the_partitions():
    report = DrillReport("d/r", "2026-12-03T10:00:00+00:00", {}, "a", "a", {}, result="passed",
                         partitions=[{"source": {"records": 3}, "restored": {"records": 3}}] * 2,
                         rto={"projected_seconds": 12.5, "records_per_second": 100.0}, duration_seconds=4.0)
    summary = report.summary()
    assert summary["records_compared"] == summary["records_restored"] == 6
    assert summary["projected_rto_seconds"] == 12.5 and summary["result"] == "passed"
