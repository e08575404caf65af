"""Run manifests: the commit point of a backup run, and the source of truth.

A run uploads its segments first, then writes one manifest naming every segment and
every planned range. Only segments a manifest names are part of the backup; readers
never trust a segment by its key alone. A manifest holds no wall-clock time, so a
re-run of the same range writes the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields

from airflow_kafka_backup.engine.errors import IntegrityError
from airflow_kafka_backup.engine.storage.checksums import LEGACY_ALGORITHM, Checksum, pop_checksum
from airflow_kafka_backup.engine.storage.key_layout import manifest_key, manifests_prefix
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore

# 1: every segment carries a sha256. 2: each segment carries the checksum of the run's
# ``segment_checksum`` setting (crc64nvme by default), in a field named after its algorithm.
# A run whose segments are all sha256 still writes version 1, which older versions read.
FORMAT_VERSION = 2
SHA256_ONLY_FORMAT_VERSION = 1

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

    def to_json(self) -> bytes:
        body = {
            "format_version": self.format_version or self.lowest_format_version(),
            "run_id": self.run_id,
            "settings": self.settings.to_dict(),
            "encryption": dict(self.encryption),
            "topics": sorted(self.topics, key=lambda t: t["topic"]),
            "consumer_groups": self.consumer_groups,
            "ranges": [_without_defaults(r) for r in sorted(self.ranges, key=lambda r: r.tp)],
            "segments": [s.to_dict()
                         for s in sorted(self.segments, key=lambda s: (s.topic, s.partition, s.first_offset))],
        }
        # Written only when set: a manifest of a run without them keeps the bytes it had before they existed.
        for name in ("incarnations", "selection", "gone_topics"):
            if getattr(self, name):
                body[name] = getattr(self, name)
        return json.dumps(body, sort_keys=True, indent=1).encode("utf-8") + b"\n"

    def lowest_format_version(self) -> int:
        """Version 1 while every checksum is a sha256 (older versions read it), else 2."""
        if self.settings.segment_checksum == LEGACY_ALGORITHM and all(
                s.checksum.algorithm == LEGACY_ALGORITHM for s in self.segments):
            return SHA256_ONLY_FORMAT_VERSION
        return FORMAT_VERSION

    @classmethod
    def from_json(cls, data: bytes) -> RunManifest:
        body = json.loads(data)
        if not isinstance(body.get("format_version"), int) or body["format_version"] > FORMAT_VERSION:
            raise IntegrityError(
                f"The manifest of run {body.get('run_id')!r} has format version {body.get('format_version')!r}; "
                f"this version of airflow-kafka-backup reads versions up to {FORMAT_VERSION}. Upgrade it.")
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


def write_manifest(store: S3ObjectStore, prefix: str, manifest: RunManifest) -> str:
    key = manifest_key(prefix, manifest.run_id)
    store.put_bytes(key, manifest.to_json())
    return key


def read_manifest(store: S3ObjectStore, prefix: str, run_id: str) -> RunManifest | None:
    key = manifest_key(prefix, run_id)
    if store.head(key) is None:
        return None
    return RunManifest.from_json(store.get_bytes(key))


def list_manifest_keys(store: S3ObjectStore, prefix: str) -> list[str]:
    return sorted(k for k in store.list_keys(manifests_prefix(prefix)) if k.endswith(".json"))


def load_manifests(store: S3ObjectStore, prefix: str, keys: Iterable[str] | None = None) -> Iterator[RunManifest]:
    for key in list_manifest_keys(store, prefix) if keys is None else keys:
        yield RunManifest.from_json(store.get_bytes(key))


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
