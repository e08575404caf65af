"""Removing what a drill made: scratch topics, its consumer groups, its ``_restores/`` folder.

Before it creates anything a drill writes a pending record of what it is about to make
(``<prefix>/_drills/_pending/<drill id>.json``), and deletes the record once it has cleaned
up. Cleanup runs when the drill ends, passed or failed. A drill killed outright (a worker lost,
SIGKILL) leaves its record behind, and the next drill on the same target connection cleans its
leftovers first. So a drill never deletes a topic or group it did not make: a scratch topic that
exists without such a record is refused, named, before anything is written.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from confluent_kafka import KafkaException

from airflow_kafka_backup.engine.drill.report import PENDING_DIR, drills_prefix, pending_key
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore

log = logging.getLogger(__name__)
ADMIN_TIMEOUT_S = 30.0


@dataclass
class ScratchResources:
    drill_id: str
    target_conn_id: str
    topics: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    restore_folder: str | None = None

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ScratchResources:
        return cls(**json.loads(data))


def record_pending(store: S3ObjectStore, prefix: str, resources: ScratchResources) -> None:
    store.put_bytes(pending_key(prefix, resources.drill_id), resources.to_json())


def pending_drills(store: S3ObjectStore, prefix: str) -> list[tuple[str, ScratchResources]]:
    folder = drills_prefix(prefix) + PENDING_DIR + "/"
    return [(key, ScratchResources.from_json(store.get_bytes(key))) for key in sorted(store.list_keys(folder))]


def clean_up(admin, store: S3ObjectStore, prefix: str, resources: ScratchResources) -> dict:
    """Delete the drill's topics, groups and restore folder, then its pending record. Every step is tried;
    what failed is returned under ``problems`` (and the pending record kept, so the next drill retries)."""
    problems: list[str] = []
    deleted_topics = _delete_topics(admin, resources.topics, problems)
    deleted_groups = _delete_groups(admin, resources.groups, problems)
    objects = 0
    if resources.restore_folder:
        try:
            objects = store.delete_prefix(resources.restore_folder.rstrip("/") + "/")
        except Exception as error:  # noqa: BLE001 - reported in the drill report; the next drill tries again
            problems.append(f"s3://{store.bucket}/{resources.restore_folder}: {error}")
    if not problems:
        store.delete_keys([pending_key(prefix, resources.drill_id)])
    return {"topics": deleted_topics, "groups": deleted_groups, "restore_objects": objects, "problems": problems}


def clean_leftovers(admin, store: S3ObjectStore, prefix: str, target_conn_id: str) -> list[str]:
    """Clean up after earlier drills on this target connection that were killed before their own cleanup."""
    cleaned = []
    for _, leftover in pending_drills(store, prefix):
        if leftover.target_conn_id != target_conn_id:
            continue
        outcome = clean_up(admin, store, prefix, leftover)
        log.warning("Cleaned up after drill %s, which ended before its own cleanup: %s", leftover.drill_id, outcome)
        cleaned.append(leftover.drill_id)
    return cleaned


def _delete_topics(admin, topics: Sequence[str], problems: list[str]) -> list[str]:
    existing = set(admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics)
    doomed = [t for t in topics if t in existing]
    if not doomed:
        return []
    for topic, future in admin.delete_topics(doomed, operation_timeout=ADMIN_TIMEOUT_S).items():
        try:
            future.result()
        except KafkaException as error:
            problems.append(f"topic {topic}: {error.args[0].str() if error.args else error}")
    deadline = time.monotonic() + ADMIN_TIMEOUT_S
    while time.monotonic() < deadline:  # deletion completes asynchronously
        if not set(doomed) & set(admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics):
            break
        time.sleep(0.2)
    else:
        problems.append(f"topics {', '.join(doomed)} still listed {ADMIN_TIMEOUT_S:.0f} s after their deletion")
    return doomed


def _delete_groups(admin, groups: Sequence[str], problems: list[str]) -> list[str]:
    if not groups:
        return []
    existing = {g.group_id for g in admin.list_consumer_groups(request_timeout=ADMIN_TIMEOUT_S).result().valid}
    doomed = [g for g in groups if g in existing]
    if not doomed:
        return []
    for group, future in admin.delete_consumer_groups(doomed, request_timeout=ADMIN_TIMEOUT_S).items():
        try:
            future.result()
        except KafkaException as error:
            problems.append(f"consumer group {group}: {error.args[0].str() if error.args else error}")
    return doomed
