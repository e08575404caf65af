"""The manifests a restore plan reads, one at a time, cut down to the topics it restores.

A prefix holds a manifest per backup run, and each names every segment of its run: at 10,000
partitions about 6 MiB of JSON, and a year of hourly runs is thousands of them. The plan used
to load them all whole before looking at any. Here each is read, vetted (``check_manifest``:
e.g. that its SSE-C key is held), and cut down to the selected topics' ranges, segments,
metadata and group offsets before the next is read; only its topic names, incarnation
histories and what ``check_manifest`` saw are kept of the rest. The restore's own checks
(chain, overlaps, checksums, existence) still see every committed segment of the topics it
restores, so what the plan holds grows with those segments, not with the rest of the backup.

The cut manifests are ordinary :class:`RunManifest` objects in the order the prefix lists
them, so the planner works on them exactly as on whole ones: for the selected topics they
hold the same ranges and segments, in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from airflow_kafka_backup.engine.storage.manifest import (
    PartitionRange,
    RunManifest,
    SegmentInfo,
    list_manifest_keys,
    parse_manifest,
)
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore


@dataclass
class HeldManifests:
    """The cut manifests, oldest key first, and what the plan needs from the whole ones."""

    manifests: list[RunManifest] = field(default_factory=list)
    topics: set[str] = field(default_factory=set)  # every topic with a range in any manifest


def read_manifests(store: S3ObjectStore, prefix: str, wanted: Callable[[str], bool],
                   check_manifest: Callable[[RunManifest], None] | None = None,
                   keys: Iterable[str] | None = None) -> HeldManifests:
    """Every manifest under ``prefix`` (or ``keys``), each vetted whole and kept only for the topics ``wanted``."""
    held = HeldManifests()
    shared: dict[str, str] = {}
    for key in list_manifest_keys(store, prefix) if keys is None else keys:
        # A parted manifest (see storage.manifest) is vetted on its index and read only in its wanted topics' parts.
        manifest = parse_manifest(store, store.get_bytes(key), wanted, check_manifest)
        if manifest.parts:
            held.topics.update(t for part in manifest.parts for t, ranges in part["topics"].items() if ranges)
        else:
            held.topics.update(r.topic for r in manifest.ranges)
        held.manifests.append(_cut(manifest, wanted, shared))
        del manifest  # the whole manifest goes before the next is read
    return held


def _cut(manifest: RunManifest, wanted: Callable[[str], bool], shared: dict[str, str]) -> RunManifest:
    """``manifest`` with the ranges, segments, topic metadata and group offsets of the ``wanted`` topics only."""
    verdicts: dict[str, bool] = {}

    def keep(topic: str) -> bool:
        verdict = verdicts.get(topic)
        if verdict is None:
            verdict = verdicts[topic] = wanted(topic)
        return verdict

    return replace(
        manifest,
        ranges=[_held_range(r, shared) for r in manifest.ranges if keep(r.topic)],
        segments=[_held(s, shared) for s in manifest.segments if keep(s.topic)],
        topics=[md for md in manifest.topics if keep(md["topic"])],
        consumer_groups={g: {t: o for t, o in by_topic.items() if keep(t)}
                         for g, by_topic in manifest.consumer_groups.items()},
        gone_topics=[g for g in manifest.gone_topics if keep(g["topic"])],
    )


def _held(segment: SegmentInfo, shared: dict[str, str]) -> SegmentInfo:
    """``segment`` with its topic and topic ID strings shared (a manifest's JSON gives each segment its own copies)."""
    return replace(segment, topic=_shared(shared, segment.topic),
                   topic_id=None if segment.topic_id is None else _shared(shared, segment.topic_id))


def _held_range(r: PartitionRange, shared: dict[str, str]) -> PartitionRange:
    return replace(r, topic=_shared(shared, r.topic),
                   topic_id=None if r.topic_id is None else _shared(shared, r.topic_id))


def _shared(pool: dict[str, str], text: str) -> str:
    return pool.setdefault(text, text)
