"""Run manifests: the commit point of a backup run, and the source of truth.

A run uploads its segments first, then writes one manifest naming every segment and
every planned range. Only segments a manifest names are part of the backup; readers
never trust a segment by its key alone. A manifest holds no wall-clock time, so a
re-run of the same range writes the same bytes.

A run of more than ``PART_RANGES`` partition ranges is written *parted* (format 3): its
ranges, segments, topic metadata and group offsets go into parts of whole topics
(``<prefix>/_manifest_parts/run=<run id>/part=<n>.json``, about ``PART_RANGES`` ranges each),
written first; the manifest, written last and still the commit point, is their index: each
part's key, sha256, size and topics (with their number of ranges). One object per run no longer holds every segment (at
10,000 partitions it was 6 MiB), and a reader that wants some topics (a restore plan) reads
only their parts. Smaller runs keep the single-object formats 1 and 2, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields

from airflow_kafka_backup.engine.errors import IntegrityError
from airflow_kafka_backup.engine.storage.checksums import LEGACY_ALGORITHM, Checksum, pop_checksum
from airflow_kafka_backup.engine.storage.key_layout import manifest_key, manifest_part_key, manifests_prefix
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore

# 1: every segment carries a sha256. 2: each segment carries the checksum of the run's
# ``segment_checksum`` setting (crc64nvme by default), in a field named after its algorithm.
# A run whose segments are all sha256 still writes version 1, which older versions read.
# 3: parted (see above), for runs of more than PART_RANGES ranges; segments as in 2.
SHA256_ONLY_FORMAT_VERSION = 1
CHECKSUMS_FORMAT_VERSION = 2
PARTED_FORMAT_VERSION = 3
FORMAT_VERSION = PARTED_FORMAT_VERSION  # the newest this version reads
# The most ranges a run keeps in one manifest object, and about the most one part holds (a topic with more
# partitions has a part to itself): a part of 1,000 partitions is about 600 KiB of JSON.
PART_RANGES = 1000

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)  # slots: a restore plan holds one per partition per run
class PartitionRange:
    """Offsets ``[start, end)`` of one partition; ``lost_*`` marks an accepted retention gap.

    ``topic_id`` is the Kafka topic ID (KIP-516) of the topic incarnation the offsets belong to;
    None in ranges written before IDs were recorded (see :mod:`airflow_kafka_backup.engine.topics.incarnations`).
    ``id_in_keys``: the incarnation's segment keys carry its ID (every incarnation but a topic's
    first in the backup), so a recreated topic never shares keys with the one before it.
    """

    topic: str
    partition: int
    start: int
    end: int
    lost_start: int | None = None
    lost_end: int | None = None
    topic_id: str | None = None
    id_in_keys: bool = False

    @property
    def tp(self) -> TopicPartition:
        return (self.topic, self.partition)

    @property
    def is_empty(self) -> bool:
        return self.start >= self.end


@dataclass(frozen=True, slots=True)  # slots: a restore plan holds one per segment of the restored topics
class SegmentInfo:
    """What a manifest knows about one segment object; enough to verify it without Kafka."""

    key: str
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    records: int
    min_timestamp: int
    max_timestamp: int
    bytes: int
    # In the JSON as one field named after its algorithm: "crc64nvme" or "sha256" (see ``checksums``).
    checksum: Checksum
    # The largest record's key + value + header bytes (see ``records.record_bytes``); what a restore
    # sizes its producer and checks its targets by. None in manifests written before it was recorded.
    max_record_bytes: int | None = None
    topic_id: str | None = None  # the incarnation's (see PartitionRange); None before IDs were recorded

    def to_dict(self) -> dict:
        """As in the manifest JSON: fields added later only when set, so older manifests keep their bytes."""
        return _without_defaults(self)

    @classmethod
    def from_dict(cls, body: dict) -> SegmentInfo:
        fields_, checksum = pop_checksum(body, f"segment {body.get('key')!r}")
        return cls(**fields_, checksum=checksum)


@dataclass(frozen=True)
class SegmentSettings:
    """Settings that decide segment bytes; a re-run of a committed run reuses them."""

    segment_format: str
    compression: str
    flush_size: int
    offset_pad_width: int
    rotate_interval_ms: int | None = None
    rotate_schedule_interval_ms: int | None = None
    timezone: str = "UTC"
    # The compression level and library the segments were written with (see ``formats.compression``).
    # None in manifests written before they were recorded: the codec's legacy encoder (gzip: zlib, level 6;
    # zstd: level 3), which a re-run of such a run writes with again.
    compression_level: int | None = None
    compression_library: str | None = None
    # The checksum algorithm of the run's segments (see ``storage.checksums``); sha256 in manifests
    # written before it was recorded, and written to the JSON only when it is not sha256.
    segment_checksum: str = LEGACY_ALGORITHM

    def to_dict(self) -> dict:
        """As in the manifest JSON: fields added later only when set, so older manifests keep their bytes."""
        body = asdict(self)
        for name in ("compression_level", "compression_library"):
            if body[name] is None:
                del body[name]
        if body["segment_checksum"] == LEGACY_ALGORITHM:
            del body["segment_checksum"]
        return body


@dataclass
class RunManifest:
    run_id: str
    settings: SegmentSettings
    ranges: list[PartitionRange] = field(default_factory=list)
    segments: list[SegmentInfo] = field(default_factory=list)
    # How the run's objects are encrypted: {"sse": "AES256" | "aws:kms" | "SSE-C", "kms_key_id": ...,
    # "sse_c_key_fingerprint": ...}; never a key.
    encryption: dict[str, str] = field(default_factory=dict)
    # Captured at plan time: [{topic, partitions, replication_factor, configs}] and
    # {group: {topic: {partition: committed offset}}} (offsets at or below the run's cut).
    topics: list[dict] = field(default_factory=list)
    consumer_groups: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    # As read; None for a new manifest: then the lowest version that describes it (see FORMAT_VERSION).
    format_version: int | None = None
    # Per topic of the run, the topic IDs of its incarnations in the order the backup met them; the
    # last is this run's (see :mod:`airflow_kafka_backup.engine.topics.incarnations`). Empty before IDs were recorded.
    incarnations: dict[str, list[str]] = field(default_factory=dict)
    # What the run's topic selection was and what it resolved to, when it holds patterns:
    # {"topics": [...], "exclude_topics": [...], "resolved": [...]}.
    selection: dict[str, list[str]] = field(default_factory=dict)
    # Topics a pattern matched in an earlier run that the cluster no longer has: [{"topic", "topic_id"}].
    gone_topics: list[dict] = field(default_factory=list)
    # A parted manifest's index as read (each part's key, sha256, bytes and topics); empty for the others.
    parts: list[dict] = field(default_factory=list, compare=False)

    @property
    def version(self) -> int:
        """The format it is written in: as read, or for a new manifest the lowest that describes it."""
        return self.format_version or self.lowest_format_version()

    def to_json(self) -> bytes:
        """The single-object manifest (formats 1 and 2); a parted one is written by :meth:`objects`."""
        if self.version == PARTED_FORMAT_VERSION:
            raise ValueError(f"run {self.run_id}'s manifest is parted: write it with objects(prefix)")
        body = {**self._index_body(), **self._content_body(self.topics, self.consumer_groups, self.ranges,
                                                          self.segments)}
        return _encode(body)

    def objects(self, prefix: str) -> list[tuple[str, bytes]]:
        """What committing it writes, in order: a parted manifest's parts, then the manifest itself."""
        if self.version != PARTED_FORMAT_VERSION:
            return [(manifest_key(prefix, self.run_id), self.to_json())]
        written, index = [], []
        for number, topics in enumerate(_pack_topics(self)):
            keep = set(topics).__contains__
            ranges = [r for r in self.ranges if keep(r.topic)]
            segments = [s for s in self.segments if keep(s.topic)]
            groups = {g: {t: o for t, o in by_topic.items() if keep(t)}
                      for g, by_topic in self.consumer_groups.items()}
            # A group with offsets on none of the run's topics stays, empty, in the first part.
            groups = {g: o for g, o in groups.items() if o or (number == 0 and not self.consumer_groups[g])}
            data = _encode({"run_id": self.run_id, "part": number, **self._content_body(
                [md for md in self.topics if keep(md["topic"])], groups, ranges, segments)})
            key = manifest_part_key(prefix, self.run_id, number)
            written.append((key, data))
            per_topic = {t: 0 for t in topics}
            for r in ranges:
                per_topic[r.topic] += 1
            index.append({"key": key, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                          "topics": per_topic, "ranges": len(ranges), "segments": len(segments),
                          "records": sum(s.records for s in segments)})
        return [*written, (manifest_key(prefix, self.run_id), _encode({**self._index_body(), "parts": index}))]

    def _index_body(self) -> dict:
        body = {"format_version": self.version, "run_id": self.run_id, "settings": self.settings.to_dict(),
                "encryption": dict(self.encryption)}
        # Written only when set: a manifest of a run without them keeps the bytes it had before they existed.
        for name in ("incarnations", "selection", "gone_topics"):
            if getattr(self, name):
                body[name] = getattr(self, name)
        return body

    @staticmethod
    def _content_body(topics: list[dict], consumer_groups: dict, ranges: list[PartitionRange],
                      segments: list[SegmentInfo]) -> dict:
        return {
            "topics": sorted(topics, key=lambda t: t["topic"]),
            "consumer_groups": consumer_groups,
            "ranges": [_without_defaults(r) for r in sorted(ranges, key=lambda r: r.tp)],
            "segments": [s.to_dict() for s in sorted(segments, key=lambda s: (s.topic, s.partition, s.first_offset))],
        }

    def lowest_format_version(self) -> int:
        """Parted (3) above ``PART_RANGES`` ranges; else 1 while every checksum is a sha256 (older versions read
        it), else 2."""
        if len(self.ranges) > PART_RANGES:
            return PARTED_FORMAT_VERSION
        if self.settings.segment_checksum == LEGACY_ALGORITHM and all(
                s.checksum.algorithm == LEGACY_ALGORITHM for s in self.segments):
            return SHA256_ONLY_FORMAT_VERSION
        return CHECKSUMS_FORMAT_VERSION

    @classmethod
    def from_json(cls, data: bytes) -> RunManifest:
        """A single-object manifest (formats 1 and 2); :func:`parse_manifest` reads a parted one with its parts."""
        body = _checked_body(data)
        if body["format_version"] == PARTED_FORMAT_VERSION:
            raise ValueError(f"run {body['run_id']}'s manifest is parted: read it with parse_manifest")
        return cls._from_body(body)

    @classmethod
    def _from_body(cls, body: dict, parts: list[dict] | None = None) -> RunManifest:
        return cls(
            run_id=body["run_id"],
            settings=SegmentSettings(**body["settings"]),
            ranges=[PartitionRange(**r) for r in body["ranges"]],
            segments=[SegmentInfo.from_dict(s) for s in body["segments"]],
            encryption=body.get("encryption", {}),
            topics=body.get("topics", []),
            consumer_groups=body.get("consumer_groups", {}),
            format_version=body["format_version"],
            incarnations=body.get("incarnations", {}),
            selection=body.get("selection", {}),
            gone_topics=body.get("gone_topics", []),
            parts=parts or [],
        )

    def end_offsets(self) -> dict[TopicPartition, int]:
        return {r.tp: r.end for r in self.ranges}


# Fields added after manifests were first written, left out of the JSON while at their default.
_OPTIONAL_FIELDS = {"topic_id": None, "id_in_keys": False, "max_record_bytes": None}


def _without_defaults(item: PartitionRange | SegmentInfo) -> dict:
    # The fields are scalars: read them directly rather than through asdict(), whose deep copy made up
    # most of a 10,000-partition manifest's encoding time (benchmarks/scale.py). Same dict, same bytes.
    body = {name: value for name in _FIELD_NAMES[type(item)]
            if (value := getattr(item, name)) != _OPTIONAL_FIELDS.get(name, _REQUIRED)}
    checksum = body.pop("checksum", None)
    if checksum is not None:  # a segment's: one field named after its algorithm
        body[checksum.algorithm] = checksum.value
    return body


_REQUIRED = object()  # compares unequal to every value: a field without a default to leave out
_FIELD_NAMES = {cls: tuple(f.name for f in fields(cls)) for cls in (PartitionRange, SegmentInfo)}


def _encode(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True, indent=1).encode("utf-8") + b"\n"


def _checked_body(data: bytes) -> dict:
    body = json.loads(data)
    if not isinstance(body.get("format_version"), int) or body["format_version"] > FORMAT_VERSION:
        raise IntegrityError(
            f"The manifest of run {body.get('run_id')!r} has format version {body.get('format_version')!r}; "
            f"this version of airflow-kafka-backup reads versions up to {FORMAT_VERSION}. Upgrade it.")
    return body


def _pack_topics(manifest: RunManifest) -> list[list[str]]:
    """The run's topics, in name order, in parts of at most ``PART_RANGES`` ranges (a larger topic alone)."""
    weights: dict[str, int] = {}
    for r in manifest.ranges:
        weights[r.topic] = weights.get(r.topic, 0) + 1
    for topic in (*(md["topic"] for md in manifest.topics), *(s.topic for s in manifest.segments),
                  *(t for by_topic in manifest.consumer_groups.values() for t in by_topic)):
        weights.setdefault(topic, 0)
    parts: list[list[str]] = []
    size = 0
    for topic in sorted(weights):
        if not parts or (parts[-1] and size + weights[topic] > PART_RANGES):
            parts.append([])
            size = 0
        parts[-1].append(topic)
        size += weights[topic]
    return parts


def parse_manifest(store: S3ObjectStore, data: bytes, wanted: Callable[[str], bool] | None = None,
                   vet: Callable[[RunManifest], None] | None = None) -> RunManifest:
    """A manifest from its bytes, a parted one with its parts: all, or with ``wanted``, those holding a wanted
    topic (the others' ranges and segments are then left out). ``vet`` sees the manifest's run id, settings and
    encryption before any part is read (e.g. that the SSE-C key is the one it needs).

    Each part must be the bytes the index names (size and sha256) and belong to the run.
    """
    body = _checked_body(data)
    if body["format_version"] != PARTED_FORMAT_VERSION:
        manifest = RunManifest._from_body(body)
        if vet is not None:
            vet(manifest)
        return manifest
    if vet is not None:
        vet(RunManifest._from_body({**body, "ranges": [], "segments": []}))
    content: dict = {"topics": [], "consumer_groups": {}, "ranges": [], "segments": []}
    for part in body["parts"]:
        if wanted is not None and not any(wanted(t) for t in part["topics"]):
            continue
        part_data = store.get_bytes(part["key"])
        if len(part_data) != part["bytes"] or hashlib.sha256(part_data).hexdigest() != part["sha256"]:
            raise IntegrityError(
                f"Part {part['key']} of run {body['run_id']}'s manifest is not the one the manifest names (expected "
                f"{part['bytes']} bytes with sha256 {part['sha256'][:12]}…): it was changed after the commit.")
        part_body = json.loads(part_data)
        if part_body.get("run_id") != body["run_id"]:
            raise IntegrityError(f"Part {part['key']} belongs to run {part_body.get('run_id')}, not {body['run_id']}.")
        for name in ("topics", "ranges", "segments"):
            content[name] += part_body[name]
        for group, by_topic in part_body["consumer_groups"].items():
            content["consumer_groups"].setdefault(group, {}).update(by_topic)
    return RunManifest._from_body({**body, **content}, parts=body["parts"])


def write_manifest(store: S3ObjectStore, prefix: str, manifest: RunManifest,
                   before_commit_point: Callable[[], object] | None = None) -> str:
    """Commit ``manifest``: a parted one's parts first, then ``before_commit_point`` (the backup's commit log
    entry: so only one PUT follows it), then the manifest itself, the commit point."""
    *parts, (key, data) = manifest.objects(prefix)
    for part_key, part in parts:
        store.put_bytes(part_key, part)
    if before_commit_point is not None:
        before_commit_point()
    store.put_bytes(key, data)
    return key


def read_manifest(store: S3ObjectStore, prefix: str, run_id: str) -> RunManifest | None:
    data = store.get_bytes_if_exists(manifest_key(prefix, run_id))
    return None if data is None else parse_manifest(store, data)


def list_manifest_keys(store: S3ObjectStore, prefix: str) -> list[str]:
    return sorted(k for k in store.list_keys(manifests_prefix(prefix)) if k.endswith(".json"))


def load_manifests(store: S3ObjectStore, prefix: str, keys: Iterable[str] | None = None) -> Iterator[RunManifest]:
    for key in list_manifest_keys(store, prefix) if keys is None else keys:
        yield parse_manifest(store, store.get_bytes(key))


def merge_checkpoints(*sources: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
    """Per partition the furthest next-offset any source knows; checkpoints never move back."""
    merged: dict[TopicPartition, int] = {}
    for source in sources:
        for tp, offset in source.items():
            if offset > merged.get(tp, -1):
                merged[tp] = offset
    return merged


def checkpoints_to_json(checkpoints: dict[TopicPartition, int]) -> dict[str, dict[str, int]]:
    """``{topic: {partition: next offset}}`` with string keys, as JSON (and Variables) need."""
    out: dict[str, dict[str, int]] = {}
    for (topic, partition), offset in sorted(checkpoints.items()):
        out.setdefault(topic, {})[str(partition)] = offset
    return out


def checkpoints_from_json(data: dict[str, dict[str, int]] | None) -> dict[TopicPartition, int]:
    return {
        (topic, int(partition)): int(offset)
        for topic, partitions in (data or {}).items()
        for partition, offset in partitions.items()
    }
