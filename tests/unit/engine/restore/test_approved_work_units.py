"""Unit tests: an approved restore's work units, planned again from the pinned manifests and written after it.

The plan of a run that waits for approval writes nothing; it hands over the units' digest and a pin
of the manifests it read. After the approval the units are planned again from exactly those
manifests (backups committed meanwhile are left out), checked against the digest and written.
"""

from __future__ import annotations

import json

import pytest

from airflow_kafka_backup.engine.restore.manifest_pin import BackupChangedError, pin_manifests, pinned_manifest_keys
from airflow_kafka_backup.engine.restore.planning import RestoreSettings, plan_restore
from airflow_kafka_backup.engine.restore.work_units import (
    PendingWorkUnits,
    is_pending,
    read_work_unit,
    write_approved_work_units,
    write_work_units,
)
from airflow_kafka_backup.engine.storage.key_layout import manifest_key
from airflow_kafka_backup.engine.storage.manifest import PartitionRange
from tests.unit.engine.restore.test_held_manifests import _backup, _segment
from tests.unit.engine.restore.test_restore_planning import MemoryStore, commit

FOLDER = "p/_restores/kafka_restore/manual__1"
SETTINGS = RestoreSettings.create(topics=["re:ord.*"], topic_mapping=None)


def _split(partitions, n: int = 2):
    """Two units, as the operator's balance would make them (any deterministic split does here)."""
    return [partitions[i::n] for i in range(n) if partitions[i::n]]


def _approve(store: MemoryStore, settings: RestoreSettings = SETTINGS) -> tuple[PendingWorkUnits, list]:
    """The plan of a run that waits for approval: what it hands over (through JSON, as XCom), and its units."""
    plan = plan_restore(store, "p", settings)
    units = _split(plan.partitions)
    pending = PendingWorkUnits.of("kafka_restore/manual__1", units, 2, plan.manifests)
    handed = json.loads(json.dumps(pending.to_dict()))
    assert is_pending(handed) and not is_pending(write_work_units(MemoryStore(), FOLDER, units))
    return PendingWorkUnits.from_dict(handed), units


def _after_approval(store: MemoryStore, approved: PendingWorkUnits, settings: RestoreSettings = SETTINGS) -> list:
    plan = plan_restore(store, "p", settings, pinned=approved.manifests, check_segments_exist=False)
    return write_approved_work_units(store, FOLDER, _split(plan.partitions), approved)


def _next_run(store: MemoryStore, run: int, topics=("orders",), partitions: int = 3) -> None:
    """One more backup run (10 records a partition), committed after those of ``_backup``."""
    commit(store, f"scheduled__{run:03d}",
           [PartitionRange(t, p, run * 10, run * 10 + 10, topic_id="id-" + t)
            for t in topics for p in range(partitions)],
           [_segment(t, p, run * 10, run * 10 + 9) for t in topics for p in range(partitions)],
           incarnations={t: ["id-" + t] for t in topics})


def _written(store: MemoryStore) -> list[str]:
    return sorted(k for k in store.objects if k.startswith(FOLDER))


def test_backups_committed_during_the_approval_are_left_out_and_the_approved_units_are_written():
    store = MemoryStore()
    _backup(store, ["orders", "payments"], runs=2)
    approved, units = _approve(store)
    assert _written(store) == []  # nothing before the approval
    _next_run(store, 2)  # the scheduled backup goes on while the run waits
    _next_run(store, 3, topics=("orders", "ordinals"))  # even one bringing a topic the pattern matches
    refs = _after_approval(store, approved)
    assert [read_work_unit(store, ref) for ref in refs] == units
    assert max(s.last_offset for u in units for p in u for s in p.segments) == 19  # runs 0 and 1 only
    # Planned now, the restore would take the later runs (and their new topic): a different plan.
    assert plan_restore(store, "p", SETTINGS).partitions != [p for u in units for p in u]


def test_a_manifest_committed_in_the_same_second_after_the_plan_is_left_out_by_its_key():
    store = MemoryStore()
    store.tick_ms = 0  # S3 keeps LastModified to the second: every manifest here shares one
    _backup(store, ["orders"], runs=2)
    approved, units = _approve(store)
    assert len(approved.manifests.at_cutoff) == 2
    _next_run(store, 2)
    assert [read_work_unit(store, ref) for ref in _after_approval(store, approved)] == units


def test_a_retried_task_writes_the_same_keys_with_the_same_bytes():
    store = MemoryStore()
    _backup(store, ["orders"], runs=2)
    approved, units = _approve(store)
    refs = _after_approval(store, approved)
    written = {k: store.objects[k] for k in _written(store)}
    _next_run(store, 2)
    assert _after_approval(store, approved) == refs
    assert {k: store.objects[k] for k in _written(store)} == written
    # and the very objects the plan would have written itself, without an approval step
    assert refs == write_work_units(MemoryStore(), FOLDER, units)


def test_a_manifest_written_again_after_the_plan_fails_naming_it_and_nothing_is_written():
    store = MemoryStore()
    _backup(store, ["orders"], runs=3)
    approved, _ = _approve(store)
    key = manifest_key("p", "scheduled__001")
    store.put_bytes(key, store.objects[key])  # a retried commit: the same bytes, written again
    with pytest.raises(BackupChangedError, match=r"(?s)the plan read 3 manifest\(s\) committed up to .* of the "
                                                 r"manifests committed up to then 2 remain.*written since the plan: "
                                                 r"run=scheduled__001.json.*trigger the restore again"):
        _after_approval(store, approved)
    assert _written(store) == []


def test_a_manifest_changed_in_place_or_deleted_fails():
    store = MemoryStore()
    _backup(store, ["orders"], runs=3)
    approved, _ = _approve(store)
    key = manifest_key("p", "scheduled__002")
    # Changed under the same LastModified (a clock that did not move): its ETag gives it away.
    store.objects[key] = store.objects[key].replace(b'"configs"', b'"configs" ')
    with pytest.raises(BackupChangedError, match=r"3 remain, with sha256"):
        _after_approval(store, approved)
    del store.objects[key]  # retention expired it
    with pytest.raises(BackupChangedError, match=r"2 remain"):
        _after_approval(store, approved)
    assert _written(store) == []


def test_units_that_come_out_otherwise_fail_against_the_approved_digest():
    store = MemoryStore()
    _backup(store, ["orders"], runs=2)
    approved, _ = _approve(store)
    other = RestoreSettings.create(topics=["orders"], topic_mapping={"orders": "elsewhere"})
    with pytest.raises(BackupChangedError, match=r"(?s)not the one approved: 2 work unit\(s\), 3 partition\(s\), "
                                                 r"6 segment\(s\).*trigger the restore again"):
        _after_approval(store, approved, other)
    assert _written(store) == []


def test_planned_again_the_segments_are_not_listed():
    store = MemoryStore()
    _backup(store, ["orders"], runs=2)
    approved, units = _approve(store)
    listed = []
    original = store.list_keys
    store.list_keys = lambda prefix: listed.append(prefix) or original(prefix)
    assert [read_work_unit(store, ref) for ref in _after_approval(store, approved)] == units
    assert listed == ["p/_manifests/"]  # the manifests' LIST only: not p/orders/


def test_what_xcom_carries_is_small_whatever_the_partitions_and_runs():
    sizes = []
    for partitions, runs in ((3, 1), (300, 4)):
        store = MemoryStore()
        _backup(store, ["orders"], runs=runs, partitions=partitions)
        approved, _ = _approve(store)
        sizes.append(len(json.dumps(approved.to_dict())))
    assert sizes[1] - sizes[0] < 20 and sizes[1] < 600  # only the counts grow (by their digits)


def test_no_manifest_at_all_pins_to_nothing():
    store = MemoryStore()
    keys, pin = pin_manifests(store, "p")
    assert keys == [] and pin.count == 0 and pin.cutoff_ms == 0
    assert pinned_manifest_keys(store, "p", pin) == []
