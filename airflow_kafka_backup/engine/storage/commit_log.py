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
run's entry and carries on. An entry whose manifest never followed (the commit died in
between and its run was never retried) is harmless: the manifests stay the truth, the
Variable then names an older entry, and the next plan rebuilds its state from the manifests.

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

    @property
    def generation(self) -> str:
        """The writer lock's generation for plans built on this commit: unique to it, even when expired entries
        let ``seq`` numbers start again."""
        return f"commit-{self.seq:012d}-{hashlib.sha256(self.run_id.encode()).hexdigest()[:8]}"

    def to_json(self) -> bytes:
        return json.dumps({"seq": self.seq, "run_id": self.run_id, "manifest": self.manifest,
                           "encryption": self.encryption}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Commit:
        body = json.loads(data)
        return cls(int(body["seq"]), body["run_id"], body["manifest"], dict(body.get("encryption") or {}))

    def to_variable(self) -> dict[str, Any]:
        """What the checkpoint Variable keeps of it: enough to find the entry and see it is the same."""
        return {"seq": self.seq, "run_id": self.run_id}


@dataclass(frozen=True)
class Head:
    """The latest commit (``None``: none recorded, a prefix older than the log or empty), and whether the
    checkpoint Variable's record of the latest commit is it (so the Variable's checkpoints are current)."""

    latest: Commit | None
    variable_is_current: bool


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
    if latest_seq is None:
        return Head(known, variable_is_current=False)
    return Head(read_commit(store, prefix, latest_seq), variable_is_current=False)


def record_commit(store: S3ObjectStore, prefix: str, planned_on_seq: int, run_id: str, manifest: str,
                  encryption: dict[str, str]) -> Commit:
    """Create the entry after entry ``planned_on_seq`` (0: none) for ``run_id``, before its manifest is written.

    Raises :class:`ConcurrentRunError` when another run has committed on top of the same entry.
    """
    entry = Commit(planned_on_seq + 1, run_id, manifest, encryption)
    if store.create_if_absent(commit_key(prefix, entry.seq), entry.to_json()):
        return entry
    there = read_commit(store, prefix, entry.seq)
    if there is not None and there.run_id == run_id:
        return there  # an earlier try of this commit got this far
    raise ConcurrentRunError(
        f"Another run ({there.run_id if there else 'unknown'}) committed to s3://{store.bucket}/{prefix} while this "
        "run was in flight; this run's segments stay uncommitted (ignored by readers). Run the backup again to "
        "continue from there."
    )
