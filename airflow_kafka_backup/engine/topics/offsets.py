"""Where partitions begin and end: the log start and end offsets the admin client reports.

Shared by the backup (the end of each run's range is snapshotted here, once) and the restore
(what a target topic already holds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import IsolationLevel, TopicPartition
from confluent_kafka.admin import OffsetSpec

from airflow_kafka_backup.engine.settings import check_isolation_level

ADMIN_TIMEOUT_S = 30.0
TP = tuple[str, int]


@dataclass(frozen=True)
class OffsetBounds:
    log_start: int
    end: int


def isolation_level(name: str) -> IsolationLevel:
    """The admin client's isolation level for ``read_committed`` / ``read_uncommitted``; anything else is refused."""
    committed = check_isolation_level(name) == "read_committed"
    return IsolationLevel.READ_COMMITTED if committed else IsolationLevel.READ_UNCOMMITTED


def snapshot_offsets(admin, tps: Sequence[TP], isolation_level_name: str) -> dict[TP, OffsetBounds]:
    """Log start offset and end offset of every partition, from the partition leaders."""
    isolation = isolation_level(isolation_level_name)

    def query(spec) -> dict[TP, int]:
        futures = admin.list_offsets(
            {TopicPartition(t, p): spec for t, p in tps}, isolation_level=isolation,
            request_timeout=ADMIN_TIMEOUT_S,
        )
        return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}

    if not tps:
        return {}
    earliest, latest = query(OffsetSpec.earliest()), query(OffsetSpec.latest())
    return {tp: OffsetBounds(earliest[tp], latest[tp]) for tp in tps}
