"""A backup run's working objects: what its tasks hand each other through S3 rather than through XCom.

XCom lives in Airflow's metadata DB, and a run of 10,000 partitions would put megabytes there (every
range twice, every segment once). So the plan writes the run's plan (what the commit needs) and one
object per work unit (what a backup task needs) under ``<prefix>/_runs/run=<run id>/``, and each
backup task writes the segments it uploaded beside them. XCom carries only an :class:`ObjectRef` per
object (key, sha256, size): O(work units), whatever the number of partitions.

Each object is read back only through its ref, and refused unless its size and sha256 match, so a
reader never acts on an object that a later try of the same run rewrote with other content. Keys are
a pure function of the run id and the unit number, and the encoding is canonical: a retry of a unit
rewrites the same key with the same bytes for the same ranges.

They are working objects, not part of the backup: the commit copies what they say into the run
manifest, then removes them (:func:`remove_run_objects`). They are written like every other object of
the backup (SSE, SSE-C, Object Lock retention: the store's write arguments) and hold nothing a
manifest does not (no credentials).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from airflow_kafka_backup.engine.errors import ConfigurationError, IntegrityError, KafkaBackupError
from airflow_kafka_backup.engine.storage.key_layout import run_objects_prefix
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore

log = logging.getLogger(__name__)

_MISSING_CODES = ("404", "NoSuchKey", "NotFound")


class RunObjectMissingError(KafkaBackupError):
    """A working object the run wrote is gone: removed by the run's commit, or expired."""


@dataclass(frozen=True)
class ObjectRef:
    """What XCom carries for one working object: where it is and what its bytes must be."""

    key: str
    sha256: str
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "sha256": self.sha256, "bytes": self.bytes}

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> ObjectRef:
        return cls(str(value["key"]), str(value["sha256"]), int(value["bytes"]))


def encode(body: Any) -> bytes:
    """Canonical JSON: the same content always gives the same bytes (and so the same sha256)."""
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def put_json(store: S3ObjectStore, key: str, body: Any) -> ObjectRef:
    data = encode(body)
    store.put_bytes(key, data)
    return ObjectRef(key, hashlib.sha256(data).hexdigest(), len(data))


def get_json(store: S3ObjectStore, ref: ObjectRef, inside: str) -> Any:
    """The body ``ref`` names, once its key is under ``inside`` (the run's folder) and its bytes match."""
    if not ref.key.startswith(inside):
        raise IntegrityError(f"Working object {ref.key} is not one of this run's (under {inside}).")
    try:
        data = store.get_bytes(ref.key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in _MISSING_CODES:
            raise RunObjectMissingError(f"Working object s3://{store.bucket}/{ref.key} is gone.") from None
        raise
    if len(data) != ref.bytes or hashlib.sha256(data).hexdigest() != ref.sha256:
        raise IntegrityError(
            f"Working object s3://{store.bucket}/{ref.key} is not the one this task was handed ({len(data)} bytes, "
            f"expected {ref.bytes} with sha256 {ref.sha256[:12]}…): another try of the run rewrote it. "
            "Clear the whole run to plan it again."
        )
    return json.loads(data)


def remove_run_objects(store: S3ObjectStore, prefix: str, run_id: str) -> int | None:
    """Delete the run's working objects once its manifest holds what they said; how many, or None if refused.

    Best effort: the commit has happened. One LIST and one DeleteObjects (per thousand keys), so objects
    left by earlier tries of the run (another number of work units) go too. Without ``s3:DeleteObject`` on
    ``<prefix>/_runs/*`` they stay until the prefix's lifecycle rule expires them. On a versioned bucket
    (Object Lock) a delete only adds a delete marker; the retained version expires with the lifecycle
    rule's noncurrent-version expiry once its retention has ended.
    """
    folder = run_objects_prefix(prefix, run_id)
    try:
        return store.delete_prefix(folder)
    except (ClientError, BotoCoreError, ConfigurationError) as error:
        log.warning("Could not remove this run's working objects under s3://%s/%s (%s); the backup is committed, "
                    "and they stay until the lifecycle rule expires them (the backup's role needs s3:DeleteObject "
                    "on <prefix>/_runs/* to remove them).", store.bucket, folder, _reason(error))
        return None


def _reason(error: Exception) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", type(error).__name__))
    return str(error) if isinstance(error, ConfigurationError) else type(error).__name__
