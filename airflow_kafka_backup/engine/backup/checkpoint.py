"""Checkpoints: the next offset to back up per partition, of each topic's current incarnation.

Kept twice: in the run manifests in S3 (the truth) and in an Airflow Variable (a fast
cache, written after the manifest). The Variable records the latest commit it has seen
(its entry in the commit log, :mod:`airflow_kafka_backup.engine.storage.commit_log`); when
the log's latest entry is another (a commit that died between manifest and Variable, a lost
Variable, a restored bucket), the state is rebuilt from the manifests. Checking takes two
GETs, whatever the number of past runs; only a rebuild lists and reads the manifests.
Checkpoints only ever move forward, within an incarnation (see :mod:`incarnations`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from airflow_kafka_backup.engine.storage.commit_log import Commit, find_head
from airflow_kafka_backup.engine.storage.manifest import list_manifest_keys, load_manifests
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from airflow_kafka_backup.engine.topics.incarnations import BackupState


class ResolvedState(NamedTuple):
    """The state to plan from; ``latest``: the latest commit in the log (None: a prefix without one);
    ``recovered``: the state was rebuilt from the manifests; ``manifest_keys``: every manifest key, when they had
    to be listed (a rebuild, a prefix without a log), else None; ``in_flight``: the latest commit's manifest is not
    there (its run is committing, or died doing it; see ``commit_log``)."""

    state: BackupState
    latest: Commit | None
    recovered: bool
    manifest_keys: list[str] | None
    in_flight: bool = False


def resolve_state(store: S3ObjectStore, prefix: str, cached: dict[str, Any] | None) -> ResolvedState:
    """The state to plan from: the Variable's (``cached``) when it has seen the latest commit, else rebuilt."""
    head = find_head(store, prefix, (cached or {}).get("commit"))
    cached_state = BackupState.from_json(cached)
    if cached is not None and head.variable_is_current:
        return ResolvedState(cached_state, head.latest, False, None)
    keys = list_manifest_keys(store, prefix)
    if head.latest is None and cached is not None and cached.get("manifests") == len(keys):
        # A Variable written before the commit log, on a prefix without one: it counted the manifests it had seen.
        return ResolvedState(cached_state, None, False, keys)
    recovered = BackupState.from_manifests(load_manifests(store, prefix, keys))
    # The Variable may know more than the manifests left after lifecycle expiry: both count.
    return ResolvedState(recovered.merged(cached_state), head.latest, True, keys, head.in_flight)
