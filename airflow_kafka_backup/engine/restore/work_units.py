"""A restore's work units as objects in S3, so that XCom carries their keys and not their segments.

The plan splits the partitions into work units, each naming every segment it restores: about
400 bytes of JSON a segment, 8 MiB for 10,000 partitions after two runs, far over what the
metadata DB should hold per run. So the plan writes each unit to
``<prefix>/_restores/<dag id>/<run id>/work-units/unit-<n>-<digest>.json`` (the restore's own
folder, beside its offset maps) and hands XCom a :class:`WorkUnitRef`: the key, the SHA-256
of the bytes, and counts. The key carries the content's digest, so a plan that is run again
and plans otherwise writes other keys and never changes an object a task (or its retry)
already read: whoever reads a reference gets the bytes it names, checked against the digest.

The objects hold what the work units always held in XCom (topics, partitions, offsets,
segment keys and checksums): no secret. They are written with the prefix's encryption
settings (SSE-S3, SSE-KMS or SSE-C, as every other object of the backup).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from airflow_kafka_backup.engine.errors import IntegrityError
from airflow_kafka_backup.engine.restore.planning import PartitionRestore
from airflow_kafka_backup.engine.storage.key_layout import restore_work_unit_key
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore


@dataclass(frozen=True)
class WorkUnitRef:
    """What XCom carries for one work unit: where its partitions are, and how to know them."""

    work_unit_key: str
    sha256: str
    partitions: int
    segments: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def encode_work_unit(unit: Sequence[PartitionRestore]) -> bytes:
    """The unit's partitions as JSON, the same bytes for the same plan."""
    return json.dumps([p.to_dict() for p in unit], sort_keys=True, separators=(",", ":")).encode("utf-8")


def write_work_units(store: S3ObjectStore, restore_prefix: str,
                     units: Sequence[Sequence[PartitionRestore]]) -> list[dict[str, Any]]:
    """Write each unit to its object; the references, in unit order, for XCom."""
    refs = []
    for index, unit in enumerate(units):
        body = encode_work_unit(unit)
        digest = hashlib.sha256(body).hexdigest()
        key = restore_work_unit_key(restore_prefix, index, digest)
        store.put_bytes(key, body)
        refs.append(WorkUnitRef(key, digest, len(unit), sum(len(p.segments) for p in unit)).to_dict())
    return refs


def is_work_unit_ref(value: object) -> bool:
    return isinstance(value, dict) and "work_unit_key" in value


def read_work_unit(store: S3ObjectStore, unit: dict[str, Any] | Sequence[dict]) -> list[PartitionRestore]:
    """A unit's partitions from its reference (read and checked), or from the list of partition dicts XCom
    carried before units were written to S3 (a run planned by an earlier version)."""
    if not is_work_unit_ref(unit):
        return [PartitionRestore.from_dict(p) for p in unit]
    ref = WorkUnitRef(**unit)
    body = store.get_bytes(ref.work_unit_key)
    digest = hashlib.sha256(body).hexdigest()
    if digest != ref.sha256:
        raise IntegrityError(
            f"Work unit s3://{store.bucket}/{ref.work_unit_key} has sha256 {digest}, but the plan wrote "
            f"{ref.sha256}: it was changed after the plan. Clear the plan task to plan the restore again.")
    return [PartitionRestore.from_dict(p) for p in json.loads(body)]
