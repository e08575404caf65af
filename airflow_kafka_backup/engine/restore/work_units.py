"""A restore's work units as objects in S3, so that XCom carries their keys and not their segments.

The plan splits the partitions into work units, each naming every segment it restores: about
400 bytes of JSON a segment, 8 MiB for 10,000 partitions after two runs, far over what the
metadata DB should hold per run. So the plan writes each unit to
``<prefix>/_restores/<dag id>/<run id>/work-units/unit-<n>-<digest>.json`` (the restore's own
folder, beside its offset maps) and hands XCom a :class:`WorkUnitRef`: the key, the SHA-256
of the bytes, and counts. The key carries the content's digest, so a plan that is run again
and plans otherwise writes other keys and never changes an object a task (or its retry)
already read: whoever reads a reference gets the bytes it names, checked against the digest.

A run that waits for approval must write nothing before it is approved, so its plan writes no unit:
it hands XCom :class:`PendingWorkUnits` instead (the units' digest, the pin of the manifests it read,
counts), and a task after the approval plans again from the same manifests, checks that the units
come out the same (:func:`write_approved_work_units`), and only then writes them and hands on their
references. Units the plan returned inline (``work_units_inline``, or a plan of an earlier version)
are still read as they are.

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
from airflow_kafka_backup.engine.restore.manifest_pin import BackupChangedError, ManifestPin
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


def units_digest(unit_digests: Sequence[str]) -> str:
    """The digest of a whole list of units, from each unit's SHA-256 (of :func:`encode_work_unit`), in order."""
    return hashlib.sha256(json.dumps(list(unit_digests)).encode("ascii")).hexdigest()


@dataclass(frozen=True)
class PendingWorkUnits:
    """What a plan followed by an approval hands XCom instead of its units: a few hundred bytes.

    ``restore_id`` is the restore the units belong to (their folder), ``max_units`` what the units
    were split into at most, ``units_sha256`` their :func:`units_digest`; ``manifests`` pins what
    the plan read (:mod:`~airflow_kafka_backup.engine.restore.manifest_pin`).
    """

    restore_id: str
    units_sha256: str
    units: int
    partitions: int
    segments: int
    max_units: int
    manifests: ManifestPin

    @classmethod
    def of(cls, restore_id: str, units: Sequence[Sequence[PartitionRestore]], max_units: int,
           manifests: ManifestPin) -> PendingWorkUnits:
        digest = units_digest([hashlib.sha256(encode_work_unit(unit)).hexdigest() for unit in units])
        return cls(restore_id, digest, len(units), sum(len(u) for u in units),
                   sum(len(p.segments) for u in units for p in u), max_units, manifests)

    def to_dict(self) -> dict[str, Any]:
        return {"pending_work_units": {**asdict(self), "manifests": self.manifests.to_dict()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PendingWorkUnits:
        body = data["pending_work_units"]
        return cls(**{**body, "manifests": ManifestPin.from_dict(body["manifests"])})


def is_pending(value: object) -> bool:
    """Whether a plan's return value is :class:`PendingWorkUnits` (rather than units or their references)."""
    return isinstance(value, dict) and "pending_work_units" in value


def write_work_units(store: S3ObjectStore, restore_prefix: str,
                     units: Sequence[Sequence[PartitionRestore]]) -> list[dict[str, Any]]:
    """Write each unit to its object; the references, in unit order, for XCom."""
    return _write([(unit, encode_work_unit(unit)) for unit in units], store, restore_prefix)


def _write(encoded: Sequence[tuple[Sequence[PartitionRestore], bytes]], store: S3ObjectStore,
           restore_prefix: str) -> list[dict[str, Any]]:
    refs = []
    for index, (unit, body) in enumerate(encoded):
        digest = hashlib.sha256(body).hexdigest()
        key = restore_work_unit_key(restore_prefix, index, digest)
        store.put_bytes(key, body)
        refs.append(WorkUnitRef(key, digest, len(unit), sum(len(p.segments) for p in unit)).to_dict())
    return refs


def write_approved_work_units(store: S3ObjectStore, restore_prefix: str, units: Sequence[Sequence[PartitionRestore]],
                              approved: PendingWorkUnits) -> list[dict[str, Any]]:
    """Write ``units`` (planned again after the approval) if they are the ones approved; their references.

    Nothing is written unless every unit's bytes make up ``approved.units_sha256``. The keys carry
    each unit's digest, so a retried task writes the same keys with the same bytes.
    """
    encoded = [(unit, encode_work_unit(unit)) for unit in units]
    digest = units_digest([hashlib.sha256(body).hexdigest() for _, body in encoded])
    if digest != approved.units_sha256:
        partitions = sum(len(u) for u in units)
        segments = sum(len(p.segments) for u in units for p in u)
        raise BackupChangedError(
            f"The restore planned again after the approval is not the one approved: {len(units)} work unit(s), "
            f"{partitions} partition(s), {segments} segment(s), sha256 {digest[:12]}…, against {approved.units} "
            f"unit(s), {approved.partitions} partition(s), {approved.segments} segment(s), sha256 "
            f"{approved.units_sha256[:12]}… approved, from the same {approved.manifests.describe()} (was the "
            "provider upgraded, or a setting changed, meanwhile?). Nothing was written: trigger the restore again "
            "to plan it (and approve it) anew.")
    return _write(encoded, store, restore_prefix)


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
