"""The commit log: one small object per committed run, numbered, and created only if absent.

    <prefix>/_commits/seq=<n, 12 digits>.json   {"seq": n, "run_id": ..., "manifest": ..., "encryption": {...}}

Why it exists: a plan must know which committed state it builds on (the writer lock's
*generation*) and whether the checkpoint Variable is current. Both used to come from a
LIST of ``_manifests/``, one more request for every 1,000 past runs, so a backup's plan
grew slower with its age. With the log, a plan whose Variable names commit ``n`` reads
``seq=n`` (there, and the run the Variable says) and ``seq=n+1`` (absent): two GETs,
however many runs the prefix holds.

How a commit uses it: before its manifest, the commit creates ``seq=n+1`` with
``If-None-Match: *``, ``n`` being the commit its plan built on. S3 lets exactly one
writer create a key, so exactly one run commits on top of ``n`` (two runs can plan on one
generation only when one took the other's lock over). A retry of the commit finds its own
run's entry and carries on, unless another run has committed after it since.

An entry whose manifest is not there yet is *in flight*: its run is committing, or died
between entry and manifest. The manifests stay the truth, so a plan that finds one rebuilds
its state from them (leaving that run's ranges out) and takes the lock that run held (the
entry records it): while that run may still commit, the lock refuses the plan; once Airflow
says it finished, or its lease ran out, the plan takes the lock over and builds on the entry.
Its commit then refuses if that run's manifest appeared meanwhile, and that run's commit,
cleared later, refuses because a newer entry exists: one of the two commits, never both.

A prefix written before the log has no entries: its plans list ``_manifests/`` as before
(see :func:`airflow_kafka_backup.engine.storage.writer_lock.generation`) until the first
commit writes ``seq=1``. Entries expire with the retention rule like everything else; a
prefix whose entries all expired starts again at ``seq=1``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from airflow_kafka_backup.engine.storage.key_layout import commit_key, commits_prefix
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from airflow_kafka_backup.engine.storage.writer_lock import ConcurrentRunError

_SEQ = re.compile(r"seq=(\d+)\.json$")


@dataclass(frozen=True)
class Commit:
    """One entry of the log: the ``seq``-th commit to the prefix, by run ``run_id``.

    ``encryption`` is what its manifest records (the kind, an SSE-C key's fingerprint, never
    the key): a plan checks its own key against it without reading the manifest, which holds
    every segment of the run (6 MiB at 10,000 partitions).
    """

    seq: int
    run_id: str
    manifest: str
    encryption: dict[str, str] = field(default_factory=dict)
    lock: str | None = None  # the writer lock's generation the run held: a plan finding the entry in flight takes it

    @property
    def generation(self) -> str:
        """The writer lock's generation for plans built on this commit: unique to it, even when expired entries
        let ``seq`` numbers start again."""
        return f"commit-{self.seq:012d}-{hashlib.sha256(self.run_id.encode()).hexdigest()[:8]}"

    def to_json(self) -> bytes:
        return json.dumps({"seq": self.seq, "run_id": self.run_id, "manifest": self.manifest,
                           "encryption": self.encryption, "lock": self.lock}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Commit:
        body = json.loads(data)
        return cls(int(body["seq"]), body["run_id"], body["manifest"], dict(body.get("encryption") or {}),
                   body.get("lock"))

    def to_variable(self) -> dict[str, Any]:
        """What the checkpoint Variable keeps of it: enough to find the entry and see it is the same."""
        return {"seq": self.seq, "run_id": self.run_id}


@dataclass(frozen=True)
class Head:
    """The latest commit (``None``: none recorded, a prefix older than the log or empty); whether the
    checkpoint Variable's record of the latest commit is it (so the Variable's checkpoints are current); and
    whether the latest commit is in flight (its manifest not there: see the module's docstring)."""

    latest: Commit | None
    variable_is_current: bool
    in_flight: bool = False


def read_commit(store: S3ObjectStore, prefix: str, seq: int) -> Commit | None:
    data = store.get_bytes_if_exists(commit_key(prefix, seq))
    return None if data is None else Commit.from_json(data)


def find_head(store: S3ObjectStore, prefix: str, recorded: dict[str, Any] | None) -> Head:
    """The latest commit, checked against ``recorded`` (the Variable's ``commit``, if any).

    Two GETs when the Variable is current. Otherwise one LIST of the log, from the recorded entry
    on when there is one (so only the commits the Variable missed), else of all of it.
    """
    known: Commit | None = None
    if recorded:
        known = read_commit(store, prefix, int(recorded["seq"]))
        if known is not None and known.run_id == recorded.get("run_id"):
            if read_commit(store, prefix, known.seq + 1) is None:
                return Head(known, variable_is_current=True)
        else:
            known = None  # gone (expired, another bucket's Variable) or another run's: list the whole log
    after = commit_key(prefix, known.seq) if known is not None else None
    latest_seq = max((int(m.group(1)) for key in store.list_keys(commits_prefix(prefix), start_after=after)
                      if (m := _SEQ.search(key))), default=None)
    latest = known if latest_seq is None else read_commit(store, prefix, latest_seq)
    # The Variable is written after the manifest, so only here can the latest entry be in flight.
    in_flight = latest is not None and store.head(latest.manifest) is None
    return Head(latest, variable_is_current=False, in_flight=in_flight)


def record_commit(store: S3ObjectStore, prefix: str, planned_on_seq: int, run_id: str, manifest: str,
                  encryption: dict[str, str], lock: str | None = None,
                  in_flight_manifest: str | None = None) -> Commit:
    """Create the entry after entry ``planned_on_seq`` (0: none) for ``run_id``, before its manifest is written.

    ``lock``: the writer lock's generation the run holds. ``in_flight_manifest``: the manifest of the entry
    the run planned on, when that entry was in flight: it must still be absent once this entry exists.
    Raises :class:`ConcurrentRunError` when another run has committed on top of the same entry, after this
    run's entry, or (``in_flight_manifest``) on the entry it planned on.
    """
    entry = Commit(planned_on_seq + 1, run_id, manifest, encryption, lock)
    if not store.create_if_absent(commit_key(prefix, entry.seq), entry.to_json()):
        there = read_commit(store, prefix, entry.seq)
        if there is None or there.run_id != run_id:
            raise _refused(store, prefix, there.run_id if there else "unknown")
        entry = there  # an earlier try of this commit got this far
        after = read_commit(store, prefix, entry.seq + 1)
        if after is not None:  # a run that took this one's lock over has committed since: its ranges overlap
            raise _refused(store, prefix, after.run_id)
    if in_flight_manifest is not None and store.head(in_flight_manifest) is not None:
        raise _refused(store, prefix, f"the one whose commit was in flight when this run planned, {in_flight_manifest}")
    return entry


def _refused(store: S3ObjectStore, prefix: str, other: str) -> ConcurrentRunError:
    return ConcurrentRunError(
        f"Another run ({other}) committed to s3://{store.bucket}/{prefix} while this run was in flight; this "
        "run's segments stay uncommitted (ignored by readers). Run the backup again to continue from there."
    )
