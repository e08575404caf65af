"""One writer per backup prefix: a run that finds another in flight fails instead of writing twice.

The lock is an S3 object created with ``If-None-Match: *`` (atomic: exactly one run
creates it). Its key names the backup's *generation*: the latest commit in the commit log
(:mod:`.commit_log`), or for a prefix written before the log, a digest of the committed
manifest keys. A commit adds an entry to the log, so the next run locks a new generation and
no lock is ever deleted (the lock needs no ``s3:DeleteObject``); stale lock objects are
tiny and expire with the retention rule. With Object Lock they are retained like every
other object the backup writes: nothing here deletes or rewrites a version (a takeover
writes a new version of the key), so retention changes nothing for the lock.

- The run holding the lock (the same run id: a retry or a re-run) proceeds.
- Another run fails, naming the holder and when it took the lock.
- A lock whose holder is a run of this Airflow that Airflow says is no longer running
  (success or failed: it died, or was marked failed) is taken over at once, and the
  takeover names it. Only the caller can ask Airflow (``holder_finished``); a holder it
  cannot ask about (another Airflow writing to the prefix, a lock written before holders
  recorded their DAG) keeps its lease.
- A lock older than its lease (a run that died and was never re-run) may be taken
  over; so may any lock when the operator asks for it explicitly (``force``).
- The commit creates the next entry of the commit log only if absent, so even then only
  one run commits on top of a given generation.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from airflow_kafka_backup.engine.errors import KafkaBackupError
from airflow_kafka_backup.engine.storage.key_layout import lock_key
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore

DEFAULT_LEASE_S = 12 * 3600


class ConcurrentRunError(KafkaBackupError):
    """Another run is backing up to the same prefix."""


def generation(manifest_keys: Iterable[str]) -> str:
    """The generation of a prefix without a commit log (written before it): changes with every commit.

    It takes a LIST of every manifest; a prefix with a log uses its latest entry instead
    (:attr:`.commit_log.Commit.generation`)."""
    digest = hashlib.sha256("\n".join(sorted(manifest_keys)).encode()).hexdigest()
    return digest[:20]


@dataclass(frozen=True)
class LockHolder:
    """``dag_id`` and ``airflow_id`` (an id of the Airflow whose run it is) let a later run ask Airflow whether
    the holder still runs; both are None in locks written before they were recorded."""

    run_id: str
    acquired_at: float
    dag_id: str | None = None
    airflow_id: str | None = None

    def to_json(self) -> bytes:
        body = {"run_id": self.run_id, "acquired_at": self.acquired_at}
        body.update({k: v for k, v in (("dag_id", self.dag_id), ("airflow_id", self.airflow_id)) if v})
        return json.dumps(body, sort_keys=True).encode()


def acquire(store: S3ObjectStore, prefix: str, generation_id: str, run_id: str, *,
            lease_s: float = DEFAULT_LEASE_S, force: bool = False, now: float | None = None,
            dag_id: str | None = None, airflow_id: str | None = None,
            holder_finished: Callable[[LockHolder], str | None] | None = None) -> str:
    """Take the lock for ``generation_id``; returns how (``acquired``, ``held``, ``taken over``, or ``taken over
    from run ...`` naming a finished holder).

    ``holder_finished``: the holder's final state (``success``/``failed``) when the caller's Airflow says it is
    no longer running; None when it runs, or cannot be asked.
    """
    now = time.time() if now is None else now
    key = lock_key(prefix, generation_id)
    mine = LockHolder(run_id, now, dag_id, airflow_id)
    if store.create_if_absent(key, mine.to_json()):
        return "acquired"
    holder = _read(store, key)
    if holder.run_id == run_id and holder.dag_id in (None, dag_id):
        return "held"
    if force or now - holder.acquired_at > lease_s:
        store.put_bytes(key, mine.to_json())
        return "taken over"
    state = holder_finished(holder) if holder_finished is not None else None
    if state is not None:
        store.put_bytes(key, mine.to_json())
        return (f"taken over from run {holder.run_id!r} of DAG {holder.dag_id}, which held it since "
                f"{_when(holder.acquired_at)} and is no longer running (its state: {state})")
    raise ConcurrentRunError(
        f"Run {holder.run_id!r} has been backing up to s3://{store.bucket}/{prefix} since "
        f"{_when(holder.acquired_at)} and has not committed; "
        f"this run ({run_id!r}) stops instead of writing twice. Wait for it, clear and re-run it, or (if it is "
        "gone for good) re-run this one with force_unlock."
    )


def _when(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch_s))


def _read(store: S3ObjectStore, key: str) -> LockHolder:
    body = json.loads(store.get_bytes(key))
    return LockHolder(body["run_id"], float(body["acquired_at"]), body.get("dag_id"), body.get("airflow_id"))
