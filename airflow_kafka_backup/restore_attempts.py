"""Which offset-map chunks describe committed records: the chain of restore attempts.

Every producer that restores a partition is one *attempt*, with an id of its own. Before
producing anything it writes an attempt record to S3 saying where it resumed (the
committed progress, the next source offset) and which attempt committed that progress.
Its offset-map chunks carry its id in their keys, and each of its transactions commits
the progress offset with its id as the offset's metadata, in the same transaction as the
records.

So Kafka itself says which attempt made the last commit, and each attempt record points
to the one before: the chain from the last committer backwards names, for every source
offset, the one attempt whose transactions committed it. A chunk written by any other
attempt (a zombie fenced by its retry whose S3 write landed late, or one whose
transaction was aborted) is never read, whatever order the writes landed in. Nothing is
overwritten, so no write race can replace a committed chunk.
"""

from __future__ import annotations

import json
import uuid
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from airflow_kafka_backup.errors import IntegrityError
from airflow_kafka_backup.key_layout import attempt_key
from airflow_kafka_backup.object_store import S3ObjectStore


def new_attempt_id() -> str:
    """A fresh id: two attempts must never share one, even on two workers at the same instant."""
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True)
class RestoreAttempt:
    """One producer's restore of one target partition: where it resumed, and after whose commits."""

    attempt: str
    target_topic: str
    partition: int
    resumed_from: int | None  # the committed progress it found (the next source offset); None: from the start
    previous: str | None  # the attempt that committed that progress; None when there was none

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RestoreAttempt:
        return cls(**json.loads(data))


def write_attempt(store: S3ObjectStore, restore_prefix: str, attempt: RestoreAttempt) -> None:
    """Record ``attempt`` before it produces: a commit that names it must find its record."""
    store.put_bytes(attempt_key(restore_prefix, attempt.target_topic, attempt.partition, attempt.attempt),
                    attempt.to_json())


def attempt_chain(store: S3ObjectStore, restore_prefix: str, target_topic: str, partition: int,
                  last_committer: str | None) -> tuple[RestoreAttempt, ...]:
    """The attempts whose commits make up the partition's progress, oldest first.

    ``last_committer`` is the metadata of the progress offset committed in Kafka. Each
    attempt in the chain resumed strictly after the one before it (it committed at least
    once, or the next one would not name it), which is checked: a chain that loops or goes
    backwards is damage, not something to guess around.
    """
    if last_committer is None:
        return ()
    chain: list[RestoreAttempt] = []
    attempt_id: str | None = last_committer
    while attempt_id is not None:
        key = attempt_key(restore_prefix, target_topic, partition, attempt_id)
        if store.head(key) is None:
            raise IntegrityError(
                f"{target_topic}[{partition}]: restore attempt {attempt_id} committed progress, but its record "
                f"s3://{store.bucket}/{key} is missing, so which offset-map chunks are its own is unknown."
            )
        attempt = RestoreAttempt.from_json(store.get_bytes(key))
        if chain and not _resumed_before(attempt, chain[-1]):
            raise IntegrityError(
                f"{target_topic}[{partition}]: the restore attempt records are damaged: attempt {chain[-1].attempt} "
                f"resumed at {chain[-1].resumed_from} after attempt {attempt.attempt}, which resumed at "
                f"{attempt.resumed_from}."
            )
        chain.append(attempt)
        attempt_id = attempt.previous
    return tuple(reversed(chain))


def _resumed_before(earlier: RestoreAttempt, later: RestoreAttempt) -> bool:
    if later.resumed_from is None:
        return False
    return earlier.resumed_from is None or earlier.resumed_from < later.resumed_from


def committer_of(chain: Sequence[RestoreAttempt], first_source_offset: int) -> str | None:
    """The attempt that committed the segment starting at ``first_source_offset`` (None: no attempt did).

    The last attempt of the chain that resumed at or before that offset: resume points are
    segment boundaries, and every attempt restores from its resume point on.
    """
    starts = [-1 if a.resumed_from is None else a.resumed_from for a in chain]
    index = bisect_right(starts, first_source_offset) - 1
    return chain[index].attempt if index >= 0 else None
