"""What a backup prefix covers, per topic, incarnation and partition: the answers the "Kafka backups" page shows.

Built from the run manifests (and the restore manifests under ``_restores/``) alone, never
from segments: offsets and record times covered, the spans a recorded loss
(``allow_data_loss``) splits them into, the gaps themselves placed in time between the
records either side, holes the chain check finds, segments, records and bytes, and the
restores done from the backup. Manifests hold no wall-clock time; a run's commit time is
its manifest's ``LastModified`` in S3.

:func:`read_coverage` reads a prefix through an :class:`S3ObjectStore`; :func:`summarize_coverage`
is the pure part, given what was read.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_kafka_backup.engine.chain import check_chain
from airflow_kafka_backup.engine.errors import IntegrityError
from airflow_kafka_backup.engine.storage.key_layout import manifests_prefix, restore_manifest_key, restores_prefix
from airflow_kafka_backup.engine.storage.manifest import PartitionRange, RunManifest, SegmentInfo, parse_manifest
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from airflow_kafka_backup.engine.topics.incarnations import add_segment, incarnation_of, longest_histories, summarize


@dataclass
class Span:
    """Offsets ``[start_offset, end_offset)`` of a partition backed up without a break, and the record times in it."""

    start_offset: int
    end_offset: int
    min_timestamp: int | None = None
    max_timestamp: int | None = None
    segments: int = 0
    records: int = 0
    bytes: int = 0

    def add(self, segment: SegmentInfo) -> None:
        add_segment(self, segment)


@dataclass
class Gap:
    """Offsets ``[start_offset, end_offset)`` deleted by retention before they were backed up, recorded by a run
    with ``allow_data_loss``. The records are gone, so their times are bounded by the records either side:
    ``after_timestamp`` (the last backed-up record before, if any) and ``before_timestamp`` (the first after)."""

    start_offset: int
    end_offset: int
    after_timestamp: int | None = None
    before_timestamp: int | None = None

    @property
    def offsets(self) -> int:
        return self.end_offset - self.start_offset


@dataclass
class PartitionCoverage:
    partition: int
    spans: list[Span] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def start_offset(self) -> int | None:
        return self.spans[0].start_offset if self.spans else None

    @property
    def end_offset(self) -> int | None:
        return self.spans[-1].end_offset if self.spans else None

    def total(self, name: str) -> int:
        return sum(getattr(s, name) for s in self.spans)

    @property
    def min_timestamp(self) -> int | None:
        return min((s.min_timestamp for s in self.spans if s.min_timestamp is not None), default=None)

    @property
    def max_timestamp(self) -> int | None:
        return max((s.max_timestamp for s in self.spans if s.max_timestamp is not None), default=None)

    def to_dict(self) -> dict[str, Any]:
        return {"partition": self.partition, "start_offset": self.start_offset, "end_offset": self.end_offset,
                "segments": self.total("segments"), "records": self.total("records"), "bytes": self.total("bytes"),
                "min_timestamp": self.min_timestamp, "max_timestamp": self.max_timestamp,
                "lost_offsets": sum(g.offsets for g in self.gaps),
                "spans": [asdict(s) for s in self.spans],
                "gaps": [{**asdict(g), "offsets": g.offsets} for g in self.gaps], "problems": list(self.problems)}


@dataclass
class IncarnationCoverage:
    """One incarnation of a topic (a recreated topic has several; see ``topics.incarnations``)."""

    topic_id: str | None
    gone: bool = False
    partitions: dict[int, PartitionCoverage] = field(default_factory=dict)

    def total(self, name: str) -> int:
        return sum(p.total(name) for p in self.partitions.values())

    @property
    def gaps(self) -> list[Gap]:
        return [g for p in self.partitions.values() for g in p.gaps]

    @property
    def min_timestamp(self) -> int | None:
        return min((p.min_timestamp for p in self.partitions.values() if p.min_timestamp is not None), default=None)

    @property
    def max_timestamp(self) -> int | None:
        return max((p.max_timestamp for p in self.partitions.values() if p.max_timestamp is not None), default=None)

    def to_dict(self) -> dict[str, Any]:
        return {"topic_id": self.topic_id, "gone": self.gone, "partitions": len(self.partitions),
                "segments": self.total("segments"), "records": self.total("records"), "bytes": self.total("bytes"),
                "min_timestamp": self.min_timestamp, "max_timestamp": self.max_timestamp,
                "lost_offsets": sum(g.offsets for g in self.gaps),
                "by_partition": [p.to_dict() for _, p in sorted(self.partitions.items())]}


@dataclass
class RestoreRecord:
    """A verified restore from this backup, as its restore manifest records it."""

    restore_id: str
    finished_ms: int | None  # the restore manifest's LastModified
    topic_mapping: dict[str, str]
    from_timestamp: int | None
    until_timestamp: int | None
    records_restored: dict[str, int]  # per source topic
    partitions: int

    @classmethod
    def from_manifest(cls, body: dict[str, Any], finished_ms: int | None) -> RestoreRecord:
        settings = body.get("settings") or {}
        restored: dict[str, int] = defaultdict(int)
        for p in body.get("partitions", ()):
            restored[p["source_topic"]] += int(p.get("records_restored") or 0)
        return cls(str(body.get("restore_id")), finished_ms, dict(settings.get("topic_mapping") or {}),
                   _int_or_none(settings.get("from_timestamp")), _int_or_none(settings.get("until_timestamp")),
                   dict(sorted(restored.items())), len(body.get("partitions", ())))


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


@dataclass
class BackupCoverage:
    """Everything the page knows about one backup prefix, from S3."""

    bucket: str
    prefix: str
    manifests: int
    last_commit_ms: int | None
    topics: dict[str, list[IncarnationCoverage]]
    restores: list[RestoreRecord] = field(default_factory=list)
    commits_ms: list[int] = field(default_factory=list)  # every run's commit time, oldest first

    @property
    def problems(self) -> list[str]:
        return [f"{topic}: {problem}" for topic, incs in sorted(self.topics.items()) for i in incs
                for p in i.partitions.values() for problem in p.problems]

    def to_dict(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "prefix": self.prefix, "manifests": self.manifests,
                "last_commit_ms": self.last_commit_ms, "commits_ms": list(self.commits_ms),
                "topics": {t: [i.to_dict() for i in incs] for t, incs in sorted(self.topics.items())},
                "restores": [asdict(r) for r in self.restores], "problems": self.problems}


def partition_coverage(partition: int, ranges: Iterable[PartitionRange],
                       segments: Iterable[SegmentInfo], label: str = "") -> PartitionCoverage:
    """Spans split at recorded losses (and at holes, which are problems), segments assigned to their span.

    Ranges are walked as :func:`~airflow_kafka_backup.engine.chain.check_chain` walks them (the same range
    committed twice counts once; an idle partition's empty range joins nothing).
    """
    out = PartitionCoverage(partition)
    ranges = list(ranges)
    try:
        check_chain(label or "partition", partition, ranges)
    except IntegrityError as error:
        out.problems.append(str(error))
    position: int | None = None
    for r in sorted({(r.start, r.end, r.lost_start, r.lost_end): r for r in ranges}.values(),
                    key=lambda r: (r.start, r.end)):
        if r.lost_start is not None and r.lost_end is not None and r.lost_end > r.lost_start:
            out.gaps.append(Gap(r.lost_start, r.lost_end))
            position = None  # the next span starts after the loss
        if r.is_empty:
            continue
        if position is not None and r.start <= position:
            out.spans[-1].end_offset = max(out.spans[-1].end_offset, r.end)
        else:
            out.spans.append(Span(r.start, r.end))
        position = out.spans[-1].end_offset
    starts = [s.start_offset for s in out.spans]
    for seg in sorted(segments, key=lambda s: s.first_offset):
        index = _span_index(starts, seg.first_offset)
        if index is not None and seg.first_offset < out.spans[index].end_offset:
            out.spans[index].add(seg)
    for gap in out.gaps:
        before = [s for s in out.spans if s.end_offset <= gap.start_offset and s.max_timestamp is not None]
        after = [s for s in out.spans if s.start_offset >= gap.end_offset and s.min_timestamp is not None]
        gap.after_timestamp = before[-1].max_timestamp if before else None
        gap.before_timestamp = after[0].min_timestamp if after else None
    return out


def _span_index(starts: Sequence[int], offset: int) -> int | None:
    index = None
    for i, start in enumerate(starts):
        if start <= offset:
            index = i
    return index


def summarize_coverage(bucket: str, prefix: str, manifests: Sequence[RunManifest],
                       commit_times_ms: Sequence[int | None] = (),
                       restores: Iterable[RestoreRecord] = ()) -> BackupCoverage:
    """Coverage of one prefix from its manifests (in key order) and each one's commit time."""
    histories = longest_histories(manifests)
    ranges: dict[tuple[str, str | None, int], list[PartitionRange]] = defaultdict(list)
    segments: dict[tuple[str, str | None, int], dict[str, SegmentInfo]] = defaultdict(dict)
    for manifest in manifests:
        for r in manifest.ranges:
            ranges[(r.topic, incarnation_of(r.topic, r.topic_id, histories), r.partition)].append(r)
        for s in manifest.segments:  # a re-run names the same keys again: count each once
            segments[(s.topic, incarnation_of(s.topic, s.topic_id, histories), s.partition)][s.key] = s
    topics: dict[str, list[IncarnationCoverage]] = {}
    for topic, summaries in summarize(manifests, histories=histories).items():
        incarnations = []
        for summary in summaries:
            coverage = IncarnationCoverage(summary.topic_id, summary.gone)
            for partition in sorted(summary.partitions):
                key = (topic, summary.topic_id, partition)
                label = topic if summary.topic_id is None or len(summaries) == 1 else f"{topic} ({summary.topic_id})"
                coverage.partitions[partition] = partition_coverage(partition, ranges.get(key, ()),
                                                                    segments.get(key, {}).values(), label)
            incarnations.append(coverage)
        topics[topic] = incarnations
    times = [t for t in commit_times_ms if t is not None]
    return BackupCoverage(bucket, prefix, len(manifests), max(times, default=None), topics,
                          sorted(restores, key=lambda r: (r.finished_ms or 0, r.restore_id)), sorted(times))


def read_coverage(store: S3ObjectStore, prefix: str,
                  check_can_read: Callable[[dict[str, str], str], None] | None = None) -> BackupCoverage:
    """Read a prefix's run manifests and restore manifests (never a segment) and summarize them.

    ``check_can_read``: called with each manifest's encryption and a description of it, before its
    content is used (``S3WriteSettings.check_can_read``: an SSE-C backup needs its key).
    """
    entries = sorted((e for e in store.list_entries(manifests_prefix(prefix)) if e.key.endswith(".json")),
                     key=lambda e: e.key)
    manifests = []
    for entry in entries:
        manifest = parse_manifest(store, store.get_bytes(entry.key), vet=None if check_can_read is None else (
            lambda m: check_can_read(m.encryption, f"backup run {m.run_id}")))
        manifests.append(manifest)
    return summarize_coverage(store.bucket, prefix, manifests, [e.last_modified_ms for e in entries],
                              read_restores(store, prefix))


def read_restores(store: S3ObjectStore, prefix: str) -> list[RestoreRecord]:
    """Every verified restore from the backup: ``_restores/<dag id>/<run id>/restore-manifest.json``, found by
    listing the two folder levels (not the offset-map chunks beneath them)."""
    out = []
    for dag_folder in store.list_folders(restores_prefix(prefix)):
        for run_folder in store.list_folders(dag_folder):
            key = restore_manifest_key(run_folder)
            head = store.head(key)
            if head is None:
                continue  # a restore still running, or one that failed before its verify
            modified = head.get("LastModified")
            finished = int(modified.timestamp() * 1000) if modified is not None else None
            out.append(RestoreRecord.from_manifest(json.loads(store.get_bytes(key)), finished))
    return out
