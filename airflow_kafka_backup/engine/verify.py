"""Verifying a backup before it is needed: every committed segment present and intact, every chain whole.

Shared by ``KafkaBackupVerifyOperator`` and the ``kafka-backup verify`` command. A deep
check downloads and hashes each segment (bit rot, tampering); a quick one compares
size and the sha256 stored with the object at upload.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from airflow_kafka_backup.engine.chain import check_chain, check_segments_disjoint
from airflow_kafka_backup.engine.errors import IntegrityError, KafkaBackupError
from airflow_kafka_backup.engine.formats.base import HashingReader
from airflow_kafka_backup.engine.storage.manifest import PartitionRange, RunManifest, SegmentInfo, load_manifests
from airflow_kafka_backup.engine.storage.object_store import SHA256_METADATA, S3ObjectStore
from airflow_kafka_backup.engine.topics.incarnations import (
    IncarnationSummary,
    incarnation_of,
    longest_histories,
    summarize,
)

_CHUNK = 1 << 20


@dataclass
class TopicSummary:
    topic: str
    partitions: set[int] = field(default_factory=set)
    first_offset: int | None = None
    end_offset: int | None = None
    min_timestamp: int | None = None
    max_timestamp: int | None = None
    records: int = 0
    bytes: int = 0
    lost_offsets: int = 0

    def add_range(self, r: PartitionRange) -> None:
        self.partitions.add(r.partition)
        if not r.is_empty:
            self.first_offset = r.start if self.first_offset is None else min(self.first_offset, r.start)
            self.end_offset = r.end if self.end_offset is None else max(self.end_offset, r.end)
        if r.lost_start is not None:
            self.lost_offsets += (r.lost_end or 0) - r.lost_start

    def add_segment(self, s: SegmentInfo) -> None:
        self.records += s.records
        self.bytes += s.bytes
        self.min_timestamp = s.min_timestamp if self.min_timestamp is None else min(self.min_timestamp,
                                                                                      s.min_timestamp)
        self.max_timestamp = s.max_timestamp if self.max_timestamp is None else max(self.max_timestamp,
                                                                                      s.max_timestamp)


@dataclass
class VerifyReport:
    manifests: int
    segments_checked: int
    topics: dict[str, TopicSummary]
    problems: list[str]
    incarnations: dict[str, list[IncarnationSummary]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def table(self) -> str:
        header = (f"{'topic':<30} {'parts':>5} {'offsets':>21} {'records':>10} {'bytes':>12} {'lost':>6}  "
                  "time range (ms)")
        lines = [header, "-" * len(header)]
        for t in sorted(self.topics.values(), key=lambda t: t.topic):
            offsets = f"{t.first_offset}..{t.end_offset}" if t.first_offset is not None else "-"
            times = f"{t.min_timestamp}..{t.max_timestamp}" if t.min_timestamp is not None else "-"
            lines.append(f"{t.topic:<30} {len(t.partitions):>5} {offsets:>21} {t.records:>10} {t.bytes:>12} "
                         f"{t.lost_offsets:>6}  {times}")
            for incarnation in self.incarnations.get(t.topic, []):
                if incarnation.topic_id is not None:
                    lines.append(f"  - {incarnation.describe()}")
        return "\n".join(lines)

    def summary(self) -> dict:
        """Small and JSON-friendly, for XCom."""
        return {"ok": self.ok, "manifests": self.manifests, "segments": self.segments_checked,
                "problems": self.problems[:20],
                "topics": {t.topic: {"partitions": len(t.partitions), "records": t.records, "bytes": t.bytes,
                                     "incarnations": [i.to_dict() for i in self.incarnations.get(t.topic, [])]}
                           for t in self.topics.values()}}


def verify_backup(store: S3ObjectStore, prefix: str, topics: Sequence[str] | None = None, deep: bool = True,
                  manifests: Iterable[RunManifest] | None = None) -> VerifyReport:
    """Check the backup under ``prefix``; problems are collected (all of them), not raised."""
    manifests = list(load_manifests(store, prefix) if manifests is None else manifests)
    wanted = set(topics) if topics else None
    summaries: dict[str, TopicSummary] = {}
    histories = longest_histories(manifests)
    # Chains are checked per incarnation: a recreated topic starts again at offset 0.
    ranges: dict[tuple[str, str | None, int], list[PartitionRange]] = defaultdict(list)
    segments: dict[str, SegmentInfo] = {}
    problems: list[str] = []
    for manifest in manifests:
        for r in manifest.ranges:
            if wanted is None or r.topic in wanted:
                ranges[(r.topic, incarnation_of(r.topic, r.topic_id, histories), r.partition)].append(r)
                summaries.setdefault(r.topic, TopicSummary(r.topic)).add_range(r)
        for s in manifest.segments:
            if wanted is not None and s.topic not in wanted:
                continue
            seen = segments.get(s.key)
            if seen is None:
                segments[s.key] = s
                summaries.setdefault(s.topic, TopicSummary(s.topic)).add_segment(s)
            elif seen.sha256 != s.sha256:
                problems.append(f"Two manifests disagree about {s.key}: sha256 {seen.sha256} vs {s.sha256} "
                                f"(the second in the manifest of run {manifest.run_id}).")
    for topic in sorted(wanted or ()):
        if topic not in summaries:
            problems.append(f"{topic}: no committed backup under s3://{store.bucket}/{prefix}")
    def label(topic: str, topic_id: str | None) -> str:
        return f"{topic} (topic ID {topic_id})" if len(histories.get(topic, [])) > 1 else topic

    for (topic, topic_id, partition), rs in sorted(ranges.items(), key=lambda item: str(item[0])):
        try:
            check_chain(label(topic, topic_id), partition, rs)
        except IntegrityError as error:
            problems.append(str(error))
    by_partition: dict[tuple[str, str | None, int], list[SegmentInfo]] = defaultdict(list)
    for seg in segments.values():
        by_partition[(seg.topic, incarnation_of(seg.topic, seg.topic_id, histories), seg.partition)].append(seg)
    for (topic, topic_id, partition), segs in sorted(by_partition.items(), key=lambda item: str(item[0])):
        try:
            check_segments_disjoint(store.bucket, label(topic, topic_id), partition,
                                    sorted(segs, key=lambda s: (s.first_offset, s.last_offset)))
        except IntegrityError as error:
            problems.append(str(error))
    for seg in sorted(segments.values(), key=lambda s: s.key):
        problem = _check_segment(store, seg, deep)
        if problem:
            problems.append(problem)
    return VerifyReport(len(manifests), len(segments), summaries, problems,
                        summarize(manifests, summaries, histories))


def _check_segment(store: S3ObjectStore, seg: SegmentInfo, deep: bool) -> str | None:
    where = f"s3://{store.bucket}/{seg.key}"
    head = store.head(seg.key)
    if head is None:
        return f"{where}: missing"
    if head["ContentLength"] != seg.bytes:
        return f"{where}: {head['ContentLength']} bytes, the manifest says {seg.bytes}"
    if not deep:
        stored = head.get("Metadata", {}).get(SHA256_METADATA)
        return None if stored == seg.sha256 else f"{where}: stored sha256 {stored}, the manifest says {seg.sha256}"
    reader = HashingReader(store.open_stream(seg.key))
    while reader.read(_CHUNK):
        pass
    actual = reader.sha256.hexdigest()
    return None if actual == seg.sha256 else f"{where}: sha256 {actual}, the manifest says {seg.sha256}"


def require_ok(report: VerifyReport) -> None:
    if not report.ok:
        raise KafkaBackupError("The backup failed verification:\n  " + "\n  ".join(report.problems))
