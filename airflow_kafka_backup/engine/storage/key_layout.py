"""Where things live in the bucket. Every key is a pure function of its inputs.

    <prefix>/<topic>/partition=<p>/<topic>+<p>+<first offset, zero-padded>.<ext>   segment (a topic's first incarnation)
    <prefix>/<topic>/topic_id=<id>/partition=<p>/<topic>+<p>+<offset>.<ext>        segment (each later incarnation)
    <prefix>/_manifests/run=<run id>.json                                           run manifest
    <prefix>/_manifest_parts/run=<run id>/part=<n>.json                             a parted manifest's part
    <prefix>/_commits/seq=<n, 12 digits>.json                                       commit log entry
    <prefix>/_locks/generation=<generation>.json                                    writer lock
    <prefix>/_runs/run=<run id>/plan.json                                           a run's plan (until its commit)
    <prefix>/_runs/run=<run id>/unit=<n>.json                                       a work unit's ranges (until then)
    <prefix>/_runs/run=<run id>/unit=<n>-segments.json                              the segments it wrote (until then)
    <prefix>/_restores/<dag id>/<run id>/restore-manifest.json                      restore manifest
    <prefix>/_restores/<dag id>/<run id>/offset-map/<target>/partition=<p>/<offset>-<attempt>.json  offset-map chunk
    <prefix>/_restores/<dag id>/<run id>/attempts/<target>/partition=<p>/<attempt>.json       restore attempt
    <prefix>/_restores/<dag id>/<run id>/work-units/unit-<n>-<sha256 of its bytes>.json        restore work unit

Zero-padding (the seed's ``filename.offset.zero.pad.width``) keeps lexicographic order
equal to offset order for offsets of up to that many digits.
"""

from __future__ import annotations

import re

MANIFESTS_DIR = "_manifests"
_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]")


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def segment_key(prefix: str, topic: str, partition: int, first_offset: int, pad_width: int,
                extension: str, topic_id: str | None = None) -> str:
    """``topic_id``: given for an incarnation whose keys carry its ID (a recreated topic's), so the
    new incarnation's offsets 0.. never land on the old one's keys."""
    name = f"{topic}+{partition}+{first_offset:0{pad_width}d}{extension}"
    incarnation = f"topic_id={topic_id}" if topic_id else ""
    return _join(prefix, topic, incarnation, f"partition={partition}", name)


def topic_prefix(prefix: str, topic: str) -> str:
    """Where a topic's segments live: every partition's folder is below it."""
    return _join(prefix, topic) + "/"


def manifests_prefix(prefix: str) -> str:
    return _join(prefix, MANIFESTS_DIR) + "/"


def safe_run_id(run_id: str) -> str:
    """Run ids hold ``:`` and ``+``; keys keep only URL-safe characters."""
    return _UNSAFE.sub("_", run_id)


def manifest_key(prefix: str, run_id: str) -> str:
    return manifests_prefix(prefix) + f"run={safe_run_id(run_id)}.json"


def manifest_part_key(prefix: str, run_id: str, number: int) -> str:
    """Part ``number`` of a parted run manifest: beside ``_manifests/``, not in it, so listing the manifests
    lists only the commit points."""
    return _join(prefix, "_manifest_parts", f"run={safe_run_id(run_id)}", f"part={number:05d}.json")


def safe_restore_id(restore_id: str) -> str:
    """A restore id ``<dag id>/<run id>`` as one URL-safe name: ``<dag id>=<run id>``.

    ``=`` cannot occur in a DAG id, so two (DAG, run) pairs never give one name (with ``_``,
    DAG ``restore`` + run ``eu_x`` and DAG ``restore_eu`` + run ``x`` would).
    """
    return "=".join(safe_run_id(part) for part in restore_id.split("/", 1))


def restore_prefix(prefix: str, restore_id: str) -> str:
    """``<prefix>/_restores/<dag id>/<run id>`` for a restore id ``<dag id>/<run id>`` (see ``operators.restore``)."""
    return _join(prefix, "_restores", *(safe_run_id(part) for part in restore_id.split("/", 1)))


def restores_prefix(prefix: str) -> str:
    """Where every restore from this backup keeps its progress records and manifest."""
    return _join(prefix, "_restores") + "/"


def parse_restore_key(prefix: str, key: str) -> tuple[str, str | None, bool] | None:
    """``(restore id, target topic or None, is the restore manifest)`` of a key under :func:`restores_prefix`.

    The restore id comes back in its key-safe form (``<dag id>/<run id>`` with unsafe characters
    replaced): every name a restore derives from its id (folder, progress group, transactional ids)
    is made from that same form, so it names the same restore.
    """
    parts = key.removeprefix(restores_prefix(prefix)).split("/")
    if len(parts) < 3 or key == parts[0]:
        return None
    restore_id = f"{parts[0]}/{parts[1]}"
    if parts[2] == "restore-manifest.json":
        return restore_id, None, True
    if parts[2] == "attempts" and len(parts) >= 5:
        return restore_id, parts[3], False
    return None


def offset_map_prefix(restore_prefix: str, target_topic: str, partition: int) -> str:
    return _join(restore_prefix, "offset-map", target_topic, f"partition={partition}") + "/"


def chunk_key(restore_prefix: str, target_topic: str, partition: int, first_source_offset: int,
              attempt: str) -> str:
    """One segment's offset-map chunk as written by one restore attempt (see :mod:`restore_attempts`)."""
    return offset_map_prefix(restore_prefix, target_topic, partition) + f"{first_source_offset:020d}-{attempt}.json"


def parse_chunk_key(key: str) -> tuple[int, str] | None:
    """``(first source offset, attempt)`` of a :func:`chunk_key`; None for any other object in the folder."""
    first_offset, _, attempt = key.rsplit("/", 1)[-1].removesuffix(".json").partition("-")
    return (int(first_offset), attempt) if first_offset.isdigit() and attempt else None


def attempt_key(restore_prefix: str, target_topic: str, partition: int, attempt: str) -> str:
    return _join(restore_prefix, "attempts", target_topic, f"partition={partition}", f"{attempt}.json")


def restore_work_unit_key(restore_prefix: str, index: int, sha256: str) -> str:
    """One work unit of a restore plan (see ``restore.work_units``): named by its bytes' digest, so another
    plan's units never overwrite it."""
    return _join(restore_prefix, "work-units", f"unit-{index:04d}-{sha256}.json")


def restore_manifest_key(restore_prefix: str) -> str:
    return _join(restore_prefix, "restore-manifest.json")


def run_objects_prefix(prefix: str, run_id: str) -> str:
    """Where a backup run in flight keeps what its tasks hand each other (see :mod:`run_objects`)."""
    return _join(prefix, "_runs", f"run={safe_run_id(run_id)}") + "/"


def run_plan_key(prefix: str, run_id: str) -> str:
    return run_objects_prefix(prefix, run_id) + "plan.json"


def work_unit_key(prefix: str, run_id: str, unit: int) -> str:
    return run_objects_prefix(prefix, run_id) + f"unit={unit:05d}.json"


def unit_segments_key(prefix: str, run_id: str, unit: int) -> str:
    """One key per run and work unit: a retry of the unit overwrites its list, never adds one."""
    return run_objects_prefix(prefix, run_id) + f"unit={unit:05d}-segments.json"


def commits_prefix(prefix: str) -> str:
    return _join(prefix, "_commits") + "/"


def commit_key(prefix: str, seq: int) -> str:
    """The ``seq``-th commit's entry in the commit log; 12 digits keep key order equal to commit order."""
    return commits_prefix(prefix) + f"seq={seq:012d}.json"


def lock_key(prefix: str, generation_id: str) -> str:
    return _join(prefix, "_locks", f"generation={generation_id}.json")
