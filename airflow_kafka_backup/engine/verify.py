"""Verifying a backup before it is needed: every committed segment present and intact, every chain whole.

Shared by ``KafkaBackupVerifyOperator`` and the ``kafka-backup verify`` command. A deep
check downloads and checksums each segment (bit rot, truncation, a wrong object); a quick one
compares size and the checksum stored with the object at upload. Segments carry a CRC64-NVME or,
in older backups (or by choice), a sha256 (see :mod:`~airflow_kafka_backup.engine.storage.checksums`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from airflow_kafka_backup.engine.chain import check_chain, check_segments_disjoint
from airflow_kafka_backup.engine.errors import IntegrityError, KafkaBackupError
from airflow_kafka_backup.engine.storage.checksums import Checksum, ChecksumReader, disagree, stored_checksum
from airflow_kafka_backup.engine.storage.manifest import PartitionRange, RunManifest, SegmentInfo, load_manifests
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
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
    # Per key, its checksums as the manifests record them: one, or one per algorithm when a segment an
    # older version backed up (sha256) was named again by a newer run (crc64nvme); each is checked.
    checksums: dict[str, list[Checksum]] = {}
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
                checksums[s.key] = [s.checksum]
                summaries.setdefault(s.topic, TopicSummary(s.topic)).add_segment(s)
            elif other := next((c for c in checksums[s.key] if disagree(c, s.checksum)), None):
                problems.append(f"Two manifests disagree about {s.key}: {other} vs {s.checksum} "
                                f"(the second in the manifest of run {manifest.run_id}).")
            elif s.checksum not in checksums[s.key]:
                checksums[s.key].append(s.checksum)
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
        problems += _check_segment(store, seg, checksums[seg.key], deep)
    return VerifyReport(len(manifests), len(segments), summaries, problems,
                        summarize(manifests, summaries, histories))


def _check_segment(store: S3ObjectStore, seg: SegmentInfo, expected: list[Checksum], deep: bool) -> list[str]:
    """Problems of one segment object against each checksum the manifests record for it."""
    where = f"s3://{store.bucket}/{seg.key}"
    head = store.head(seg.key)
    if head is None:
        return [f"{where}: missing"]
    if head["ContentLength"] != seg.bytes:
        return [f"{where}: {head['ContentLength']} bytes, the manifest says {seg.bytes}"]
    if not deep:
        # The object's stored checksum can be compared with the manifest's of its own algorithm only.
        stored = stored_checksum(head)
        same = [c for c in expected if stored is not None and c.algorithm == stored.algorithm]
        if not same or any(c != stored for c in same):
            return [f"{where}: stored checksum {stored}, the manifest says {(same or expected)[0]}"]
        return []
    reader = ChecksumReader(store.open_stream(seg.key), [c.algorithm for c in expected])
    while reader.read(_CHUNK):
        pass
    return [f"{where}: {actual}, the manifest says {c}" for c in expected
            if (actual := reader.mismatch(c)) is not None]


def require_ok(report: VerifyReport) -> None:
    if not report.ok:
        raise KafkaBackupError("The backup failed verification:\n  " + "\n  ".join(report.problems))
