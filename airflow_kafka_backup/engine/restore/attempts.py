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
transaction was aborted) is never read, whatever order the writes landed in. Two attempts
never write one key; an attempt rewrites a chunk of its own only when it redoes an aborted
transaction, in the same thread after the first write returned, so the redo's stands.
"""

from __future__ import annotations

import json
import uuid
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from airflow_kafka_backup.engine.errors import IntegrityError
from airflow_kafka_backup.engine.storage.key_layout import attempt_key, parse_restore_key, restores_prefix
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore


@dataclass(frozen=True)
class RestoreProgress:
    """What the restore's progress group holds for one target partition."""

    next_offset: int | None  # the next source offset to restore; None before the first commit
    attempt: str | None  # the restore attempt whose transaction committed it (the offset's metadata)


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
                  progress: RestoreProgress) -> tuple[RestoreAttempt, ...]:
    """The attempts whose commits make up the partition's progress, oldest first.

    ``progress`` is what Kafka holds: the progress offset and, as its metadata, the attempt
    that committed it. Each attempt in the chain resumed strictly after the one before it
    (it committed at least once, or the next one would not name it), and the oldest one
    from the start; both are checked: a chain that loops, goes backwards or stops short is
    damage, not something to guess around.
    """
    if progress.next_offset is None:
        return ()
    if progress.attempt is None:
        raise _without_attempts(target_topic, partition, f"its progress ({progress.next_offset}) names no attempt")
    chain: list[RestoreAttempt] = []
    attempt_id: str | None = progress.attempt
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
                f"resumed {_at(chain[-1].resumed_from)} after attempt {attempt.attempt}, which resumed "
                f"{_at(attempt.resumed_from)}."
            )
        chain.append(attempt)
        attempt_id = attempt.previous
    if chain[-1].resumed_from is not None:
        raise _without_attempts(target_topic, partition, f"its oldest attempt {chain[-1].attempt} resumed at "
                                                         f"{chain[-1].resumed_from} after a commit that names none")
    return tuple(reversed(chain))


def _at(resumed_from: int | None) -> str:
    return "from the start" if resumed_from is None else f"at source offset {resumed_from}"


def _without_attempts(target_topic: str, partition: int, why: str) -> IntegrityError:
    """Progress committed by a version without restore attempts: which chunks are committed is unknown."""
    return IntegrityError(
        f"{target_topic}[{partition}]: {why}: part of this restore was committed by a version of "
        "airflow-kafka-backup without restore attempts, so its offset-map chunks cannot be told from those of "
        "aborted transactions. Restore again in a new DAG run."
    )


def _resumed_before(earlier: RestoreAttempt, later: RestoreAttempt) -> bool:
    if later.resumed_from is None:
        return False
    return earlier.resumed_from is None or earlier.resumed_from < later.resumed_from


def committer_of(chain: Sequence[tuple[int | None, str]], first_source_offset: int) -> str | None:
    """The attempt that committed the segment starting at ``first_source_offset`` (None: no attempt did).

    ``chain``: ``(resumed from, attempt id)``, oldest first. The committer is the last
    attempt that resumed at or before that offset: resume points are segment boundaries,
    and every attempt restores from its resume point on.
    """
    starts = [-1 if resumed_from is None else resumed_from for resumed_from, _ in chain]
    index = bisect_right(starts, first_source_offset) - 1
    return chain[index][1] if index >= 0 else None


@dataclass(frozen=True)
class EarlierRestore:
    """A restore from this backup, as its records under ``_restores/`` tell: where it wrote, whether it finished."""

    restore_id: str  # key-safe form (see key_layout.parse_restore_key)
    targets: frozenset[str]
    finished: bool  # it wrote its restore manifest (verified)


def restores_into(store: S3ObjectStore, prefix: str, targets: Iterable[str]) -> list[EarlierRestore]:
    """The restores from the backup under ``prefix`` that produced into any of ``targets`` (one LIST of the
    restores folder), oldest run id first."""
    wanted = set(targets)
    found: dict[str, set[str]] = {}
    finished: set[str] = set()
    for key in store.list_keys(restores_prefix(prefix)):
        parsed = parse_restore_key(prefix, key)
        if parsed is None:
            continue
        restore_id, target, is_manifest = parsed
        if is_manifest:
            finished.add(restore_id)
        elif target in wanted:
            found.setdefault(restore_id, set()).add(target)
    return [EarlierRestore(r, frozenset(t), r in finished) for r, t in sorted(found.items())]
