"""Unit tests: a restore task reads its work unit from S3 by the plan's reference and returns its totals.

Kafka and the restore loop are faked; the integration tests run the whole restore DAG.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from airflow_kafka_backup.engine.errors import IntegrityError
from airflow_kafka_backup.engine.restore.loop import PartitionRestoreResult
from airflow_kafka_backup.engine.restore.planning import PartitionRestore, PlannedSegment
from airflow_kafka_backup.engine.restore.work_units import write_work_units
from airflow_kafka_backup.engine.storage.checksums import SHA256, Checksum
from airflow_kafka_backup.operators import restore as restore_operators
from airflow_kafka_backup.operators.restore import KafkaRestoreOperator
from tests.unit.operators.test_restore_plan_operator import MemoryStore

CONTEXT = {"dag": SimpleNamespace(dag_id="kafka_restore"), "run_id": "manual__1"}


@pytest.fixture
def restored(monkeypatch) -> list[PartitionRestore]:
    """The partitions the faked restore loop was handed, in order."""
    handed: list[PartitionRestore] = []

    def restore_partition(new_producer, group, store, target_prefix, unit, **kwargs) -> PartitionRestoreResult:
        handed.append(unit)
        return PartitionRestoreResult(unit.source_topic, unit.target_topic, unit.partition, 10 * len(unit.segments),
                                      1, len(unit.segments), 0, None, 0.1, 1)

    monkeypatch.setattr(restore_operators, "restore_partition", restore_partition)
    monkeypatch.setattr(restore_operators, "KafkaGroupConsumerHook",
                        lambda conn_id, group_id: SimpleNamespace(get_conn=SimpleNamespace(close=lambda: None)))
    monkeypatch.setattr(restore_operators, "KafkaTransactionalProducerHook",
                        lambda *args, **kwargs: SimpleNamespace(transaction_timeout_s=lambda: 60.0))
    return handed


def _unit() -> list[PartitionRestore]:
    return [PartitionRestore("t", "t-restored", p, [
        PlannedSegment(f"bk/t/partition={p}/t+{p}+{i:010d}.jsonl", i, i + 9, 10, 99,
                       Checksum(SHA256, "cd" * 32), "jsonl", "none")
        for i in range(0, 10 * (p + 1), 10)]) for p in range(3)]


def _task(work_unit, store: MemoryStore) -> KafkaRestoreOperator:
    task = KafkaRestoreOperator(task_id="restore", bucket="b", prefix="bk", work_unit=work_unit,
                                restore_id="kafka_restore/manual__1")
    task.store = store
    return task


def test_a_task_restores_the_unit_its_reference_names_and_returns_totals(restored):
    store = MemoryStore()
    (ref,) = write_work_units(store, "bk/_restores/kafka_restore/manual__1", [_unit()])
    assert _task(ref, store).execute(CONTEXT) == {
        "partitions": 3, "records_restored": 60, "records_filtered": 3, "segments_restored": 6,
        "segments_skipped_as_done": 0, "transactions_committed": 3}
    assert restored == _unit()


def test_a_unit_inline_in_xcom_is_restored_the_same(restored):
    assert _task([p.to_dict() for p in _unit()], MemoryStore()).execute(CONTEXT)["partitions"] == 3
    assert restored == _unit()


def test_a_changed_unit_fails_before_anything_is_restored(restored):
    store = MemoryStore()
    (ref,) = write_work_units(store, "bk/_restores/kafka_restore/manual__1", [_unit()])
    store.objects[ref["work_unit_key"]] = b"[]"
    with pytest.raises(IntegrityError, match="changed after the plan"):
        _task(ref, store).execute(CONTEXT)
    assert restored == []
