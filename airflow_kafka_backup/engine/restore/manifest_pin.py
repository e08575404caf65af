"""Pinning the manifests a restore plan read, so that the plan can be derived again, exactly, later.

A restore that waits for approval writes nothing before it is approved, not even its work units;
they are derived again and written after the approval (:mod:`~airflow_kafka_backup.engine.restore.work_units`).
Meanwhile the scheduled backups go on committing manifests to the same prefix, so "every manifest
under the prefix" is no longer what the plan read. The pin says what it read, in a few hundred
bytes whatever the number of runs (XCom carries it; a list of keys would grow with years of runs):

* ``cutoff_ms``: the newest ``LastModified`` of the manifests the plan listed. A manifest committed
  after the plan's LIST has a later one, and is left out;
* ``at_cutoff``: the keys listed with exactly that ``LastModified`` (S3 keeps it to the second, so a
  manifest committed in that same second after the LIST is told apart by its key; usually one key);
* ``count`` and ``sha256``: how many manifests were read, and a digest of their sorted
  ``(key, ETag)`` pairs. An ETag changes when its key is written again, so a manifest rewritten
  (a retried commit), deleted (retention) or added under an old time since the plan changes
  the digest.

:func:`pinned_manifest_keys` lists the prefix again, keeps what the pin admits and checks count and
digest: either it returns the very manifests the plan read, or it fails naming what changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.storage.key_layout import manifests_prefix
from airflow_kafka_backup.engine.storage.object_store import ObjectEntry, S3ObjectStore

# Keys named in the error that a pinned listing no longer matches (the rest are counted).
KEYS_NAMED = 5


class BackupChangedError(ConfigurationError):
    """The backup is no longer what the approved plan read; nothing was written. A retry would fail alike."""


@dataclass(frozen=True)
class ManifestPin:
    """Which manifests a plan read (see the module docstring); JSON-ready through :meth:`to_dict`."""

    cutoff_ms: int  # the newest LastModified among them, epoch ms (0: there were none)
    count: int
    sha256: str  # over the sorted "key ETag" lines
    at_cutoff: tuple[str, ...] = ()  # the keys whose LastModified is cutoff_ms

    def to_dict(self) -> dict[str, Any]:
        return {"cutoff_ms": self.cutoff_ms, "count": self.count, "sha256": self.sha256,
                "at_cutoff": list(self.at_cutoff)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ManifestPin:
        return cls(int(data["cutoff_ms"]), int(data["count"]), str(data["sha256"]), tuple(data["at_cutoff"]))

    def describe(self) -> str:
        return f"{self.count} manifest(s) committed up to {_when(self.cutoff_ms)} (sha256 {self.sha256[:12]}…)"


def _listed(store: S3ObjectStore, prefix: str) -> list[ObjectEntry]:
    return [e for e in store.list_entries(manifests_prefix(prefix)) if e.key.endswith(".json")]


def _modified(entry: ObjectEntry) -> int:
    return entry.last_modified_ms or 0


def _pin_of(entries: Iterable[ObjectEntry]) -> ManifestPin:
    chosen = sorted(entries, key=lambda e: e.key)
    cutoff = max((_modified(e) for e in chosen), default=0)
    digest = hashlib.sha256()
    for e in chosen:
        digest.update(f"{e.key} {e.etag or ''}\n".encode())
    return ManifestPin(cutoff, len(chosen), digest.hexdigest(),
                       tuple(e.key for e in chosen if _modified(e) == cutoff) if chosen else ())


def pin_manifests(store: S3ObjectStore, prefix: str) -> tuple[list[str], ManifestPin]:
    """Every manifest key under ``prefix`` (sorted, as ``list_manifest_keys`` gives them) and their pin."""
    entries = _listed(store, prefix)
    return sorted(e.key for e in entries), _pin_of(entries)


def pinned_manifest_keys(store: S3ObjectStore, prefix: str, pin: ManifestPin) -> list[str]:
    """The keys of exactly the manifests ``pin`` names (sorted), left out those committed since.

    Raises :class:`BackupChangedError` when a manifest the pin names is gone or was written again.
    """
    entries = _listed(store, prefix)
    kept = [e for e in entries if _modified(e) < pin.cutoff_ms
            or (_modified(e) == pin.cutoff_ms and e.key in pin.at_cutoff)]
    now = _pin_of(kept)
    if (now.count, now.sha256) != (pin.count, pin.sha256):
        later = sorted((e for e in entries if e not in kept), key=_modified)
        raise BackupChangedError(
            f"The backup under s3://{store.bucket}/{prefix} changed after the restore was planned and approved: "
            f"the plan read {pin.describe()}; of the manifests committed up to then {now.count} remain, with "
            f"sha256 {now.sha256[:12]}…. A manifest the plan read was deleted (retention?) or written again "
            f"since (a retried backup commit?)"
            + (f"; written since the plan: {_named(later)}" if later else "")
            + ". Nothing was written: trigger the restore again to plan it (and approve it) anew.")
    return sorted(e.key for e in kept)


def _named(entries: Sequence[ObjectEntry]) -> str:
    shown = ", ".join(f"{e.key.rsplit('/', 1)[-1]} ({_when(_modified(e))})" for e in entries[-KEYS_NAMED:])
    return shown + (f" and {len(entries) - KEYS_NAMED} older" if len(entries) > KEYS_NAMED else "")


def _when(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
