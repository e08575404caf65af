"""Checkpoints: the next offset to back up per partition, of each topic's current incarnation.

Kept twice: in the run manifests in S3 (the truth) and in an Airflow Variable (a fast
cache, written after the manifest). The Variable records how many manifests it has
seen; when S3 holds a different number (a commit that died between manifest and
Variable, a lost Variable, a restored bucket), the state is rebuilt from the manifests.
Checkpoints only ever move forward, within an incarnation (see :mod:`incarnations`).
"""

from __future__ import annotations

from typing import Any

from airflow_kafka_backup.engine.storage.manifest import list_manifest_keys, load_manifests
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from airflow_kafka_backup.engine.topics.incarnations import BackupState


def resolve_state(
    store: S3ObjectStore, prefix: str, cached: dict[str, Any] | None, keys: list[str] | None = None,
) -> tuple[BackupState, bool]:
    """The state to plan from, and whether it had to be recovered from S3.

    ``keys``: the manifest keys, when the caller has listed them already.
    """
    keys = list_manifest_keys(store, prefix) if keys is None else keys
    cached_state = BackupState.from_json(cached)
    if cached is not None and cached.get("manifests") == len(keys):
        return cached_state, False
    recovered = BackupState.from_manifests(load_manifests(store, prefix, keys))
    # The Variable may know more than the manifests left after lifecycle expiry: both count.
    return recovered.merged(cached_state), True
