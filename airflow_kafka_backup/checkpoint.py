"""Checkpoints: the next offset to back up per partition.

Kept twice: in the run manifests in S3 (the truth) and in an Airflow Variable (a fast
cache, written after the manifest). The Variable records how many manifests it has
seen; when S3 holds a different number (a commit that died between manifest and
Variable, a lost Variable, a restored bucket), the checkpoints are rebuilt from the
manifests. Checkpoints only ever move forward.
"""

from __future__ import annotations

from typing import Any

from airflow_kafka_backup.manifest import (
    TopicPartition,
    checkpoints_from_json,
    checkpoints_from_manifests,
    checkpoints_to_json,
    list_manifest_keys,
    load_manifests,
    merge_checkpoints,
)
from airflow_kafka_backup.object_store import S3ObjectStore


def resolve_checkpoints(
    store: S3ObjectStore, prefix: str, cached: dict[str, Any] | None, keys: list[str] | None = None,
) -> tuple[dict[TopicPartition, int], bool]:
    """Checkpoints to plan from, and whether they had to be recovered from S3.

    ``keys``: the manifest keys, when the caller has listed them already.
    """
    keys = list_manifest_keys(store, prefix) if keys is None else keys
    cached_checkpoints = checkpoints_from_json((cached or {}).get("checkpoints"))
    if cached is not None and cached.get("manifests") == len(keys):
        return cached_checkpoints, False
    recovered = checkpoints_from_manifests(load_manifests(store, prefix, keys))
    return merge_checkpoints(cached_checkpoints, recovered), True


def checkpoint_value(checkpoints: dict[TopicPartition, int], manifest_count: int) -> dict[str, Any]:
    """The JSON kept in the Variable."""
    return {"checkpoints": checkpoints_to_json(checkpoints), "manifests": manifest_count}
