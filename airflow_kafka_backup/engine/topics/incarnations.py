"""Topic incarnations: a topic deleted and recreated is, to the backup, a new topic under an old name.

Kafka gives every topic a topic ID (KIP-516) that a recreated topic does not share. Each run
records, per topic, the IDs of the topic's incarnations in the order the backup met them
(``RunManifest.incarnations``; the last is the run's own), and every range and segment
carries its incarnation's ID. From those the backup state is rebuilt:

- a topic's *current* incarnation is the last of its longest recorded history (every run
  records the whole history, so the longest is the newest, and survives the lifecycle
  expiry of older manifests);
- its checkpoints are the ends of the ranges of that incarnation only.

At plan time the topic ID Kafka reports decides (:func:`identify`):

- the same ID: carry on from the checkpoints;
- another ID: a new incarnation, backed up from its log start under keys of its own
  (``<topic>/topic_id=<id>/...``); the old incarnation's segments and manifests stay as they
  are, restorable;
- no history yet but checkpoints (a backup written before IDs were recorded): the current ID
  is adopted when the offsets fit it (every backed-up partition still exists and ends at or
  after its checkpoint), and refused, naming topic, partition and offsets, when they do not.
  Ranges recorded without an ID belong to the first incarnation of their topic's history.

A topic's first incarnation keeps the plain key layout, so backups written before IDs were
recorded, and every topic never recreated, keep their keys.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.storage.manifest import (
    RunManifest,
    TopicPartition,
    checkpoints_from_json,
    checkpoints_to_json,
    merge_checkpoints,
)

log = logging.getLogger(__name__)

Histories = dict[str, list[str]]  # topic -> incarnation IDs, oldest first


class TopicIdentityError(ConfigurationError):
    """The backup cannot tell which incarnation of a topic its offsets belong to (refused before anything is
    written; the operator must choose another prefix)."""


def longest_histories(manifests: Iterable[RunManifest]) -> Histories:
    """Per topic, the longest incarnation history any manifest records (each extends the ones before it)."""
    out: Histories = {}
    for manifest in manifests:
        for topic, history in manifest.incarnations.items():
            known = out.get(topic, [])
            if len(history) > len(known):
                if history[:len(known)] != known:
                    log.warning("Manifest of run %s records incarnations %s of %s, which do not extend %s; "
                                "taking the longer.", manifest.run_id, history, topic, known)
                out[topic] = list(history)
    return out


def incarnation_of(topic: str, topic_id: str | None, histories: Mapping[str, list[str]]) -> str | None:
    """The incarnation a range or segment belongs to: its ID, or for one recorded before IDs were, the first
    incarnation of its topic's history (the one that adopted it); None while no run has recorded an ID."""
    if topic_id is not None:
        return topic_id
    history = histories.get(topic)
    return history[0] if history else None


@dataclass
class BackupState:
    """What the next plan starts from: checkpoints of each topic's current incarnation, and the histories."""

    checkpoints: dict[TopicPartition, int] = field(default_factory=dict)
    histories: Histories = field(default_factory=dict)
    # Topics recorded as gone from the cluster, with the ID of the incarnation that went: recorded once.
    gone: dict[str, str | None] = field(default_factory=dict)

    def is_recorded_gone(self, topic: str) -> bool:
        return topic in self.gone and self.gone[topic] == self.current(topic)

    def current(self, topic: str) -> str | None:
        history = self.histories.get(topic)
        return history[-1] if history else None

    @classmethod
    def from_manifests(cls, manifests: Iterable[RunManifest]) -> BackupState:
        manifests = list(manifests)
        histories = longest_histories(manifests)
        state = cls({}, histories)
        for manifest in manifests:
            ends = {r.tp: r.end for r in manifest.ranges
                    if incarnation_of(r.topic, r.topic_id, histories) == state.current(r.topic)}
            state.checkpoints = merge_checkpoints(state.checkpoints, ends)
            state.gone.update({g["topic"]: g.get("topic_id") for g in manifest.gone_topics})
        state.gone = {t: i for t, i in state.gone.items() if state.is_recorded_gone(t)}
        return state

    @classmethod
    def from_json(cls, cached: Mapping[str, Any] | None) -> BackupState:
        """From the checkpoint Variable; one written before incarnations were recorded has no histories."""
        cached = cached or {}
        return cls(checkpoints_from_json(cached.get("checkpoints")),
                   {t: list(h) for t, h in (cached.get("incarnations") or {}).items()}, dict(cached.get("gone") or {}))

    def to_json(self, commit: Mapping[str, Any] | None) -> dict[str, Any]:
        """The JSON kept in the Variable; ``commit``: the commit log entry this state includes (see
        ``commit_log.Commit.to_variable``), or None when not known (the next plan then rebuilds it)."""
        body = {"checkpoints": checkpoints_to_json(self.checkpoints),
                "incarnations": dict(sorted(self.histories.items())), "gone": dict(sorted(self.gone.items()))}
        if commit is not None:
            body["commit"] = dict(commit)
        return body

    def merged(self, other: BackupState) -> BackupState:
        """Both sources' knowledge: per topic the longer history, and the furthest checkpoints of its current
        incarnation (a source on an older incarnation of a topic adds nothing for it)."""
        histories = dict(self.histories)
        for topic, history in other.histories.items():
            if len(history) >= len(histories.get(topic, [])):
                histories[topic] = list(history)
        out = BackupState({}, histories)
        for source in (self, other):
            current = {tp: offset for tp, offset in source.checkpoints.items()
                       if source.current(tp[0]) == out.current(tp[0])}
            out.checkpoints = merge_checkpoints(out.checkpoints, current)
            out.gone.update(source.gone)
        out.gone = {t: i for t, i in out.gone.items() if out.is_recorded_gone(t)}
        return out

    def advanced(self, manifest: RunManifest) -> BackupState:
        """The state after ``manifest`` committed."""
        return self.merged(BackupState.from_manifests([manifest]))


@dataclass(frozen=True)
class Incarnation:
    """The incarnation of one topic a run backs up."""

    topic: str
    topic_id: str
    history: tuple[str, ...]  # oldest first, ending with topic_id
    new: bool  # no offsets of it are backed up yet: it starts at its log start

    @property
    def id_in_keys(self) -> bool:
        return len(self.history) > 1


def identify(topic: str, kafka_id: str, state: BackupState, end_offsets: Mapping[TopicPartition, int]) -> Incarnation:
    """Which incarnation of ``topic`` Kafka holds now, against the backup's state (see the module docstring).

    ``end_offsets``: the topic's partitions as Kafka has them now, with their end offsets.
    """
    history = state.histories.get(topic, [])
    if history and history[-1] == kafka_id:
        return Incarnation(topic, kafka_id, tuple(history), new=False)
    if history:
        log.warning("Topic %s was deleted and recreated: its topic ID is %s, the backup's is %s. Backing up the "
                    "new incarnation from its log start under keys of its own; the backup of the old one stays "
                    "as it is, restorable by naming its ID.", topic, kafka_id, history[-1])
        return Incarnation(topic, kafka_id, (*history, kafka_id), new=True)
    backed_up = {tp: offset for tp, offset in state.checkpoints.items() if tp[0] == topic}
    misfits = []
    for (_, partition), checkpoint in sorted(backed_up.items()):
        end = end_offsets.get((topic, partition))
        if end is None:
            misfits.append(f"partition {partition} is backed up to offset {checkpoint} but Kafka has no such "
                           "partition")
        elif checkpoint > end:
            misfits.append(f"partition {partition} is backed up to offset {checkpoint} but ends at {end}")
    if misfits:
        raise TopicIdentityError(
            f"Topic {topic}: the backup was written before topic IDs were recorded, and its offsets do not fit "
            f"the topic now in Kafka (ID {kafka_id}): {'; '.join(misfits)}. The topic was probably deleted and "
            "recreated, and the backup cannot tell which of its offsets are new. Its backup here stays restorable; "
            "back the new topic up under another prefix (a DAG of its own)."
        )
    if backed_up:
        log.info("Topic %s: adopting topic ID %s for its backup written before IDs were recorded (the backed-up "
                 "offsets fit it).", topic, kafka_id)
    return Incarnation(topic, kafka_id, (kafka_id,), new=not backed_up)


def add_segment(totals, segment) -> None:
    """Count ``segment`` into ``totals`` (its segments, records, bytes and record-time range).

    Shared by every summary of segments (an incarnation here, a span of the coverage page).
    """
    totals.segments += 1
    totals.records += segment.records
    totals.bytes += segment.bytes
    if segment.records:
        totals.min_timestamp = min(x for x in (totals.min_timestamp, segment.min_timestamp) if x is not None)
        totals.max_timestamp = max(x for x in (totals.max_timestamp, segment.max_timestamp) if x is not None)


@dataclass
class IncarnationSummary:
    """One incarnation of a topic as the backup holds it: what restore plans, ``ls`` and verify show."""

    topic: str
    topic_id: str | None  # None: recorded before topic IDs were
    partitions: set[int] = field(default_factory=set)
    segments: int = 0
    records: int = 0
    bytes: int = 0
    min_timestamp: int | None = None
    max_timestamp: int | None = None
    gone: bool = False  # a pattern-selected topic the cluster no longer had

    def add(self, segment) -> None:
        add_segment(self, segment)

    def describe(self) -> str:
        times = f"record times {self.min_timestamp}..{self.max_timestamp}" if self.min_timestamp is not None \
            else "no records"
        return (f"{self.topic} incarnation {self.topic_id or '(recorded before topic IDs)'}: {len(self.partitions)} "
                f"partitions, {self.records} records, {times}{', gone from the cluster' if self.gone else ''}")

    def to_dict(self) -> dict[str, Any]:
        return {"topic_id": self.topic_id, "partitions": len(self.partitions), "segments": self.segments,
                "records": self.records, "bytes": self.bytes, "min_timestamp": self.min_timestamp,
                "max_timestamp": self.max_timestamp, "gone": self.gone}


def summarize(manifests: Iterable[RunManifest], topics: Iterable[str] | None = None,
              histories: Histories | None = None) -> dict[str, list[IncarnationSummary]]:
    """Per topic, its incarnations in the order the backup met them (segments counted once per key)."""
    manifests = list(manifests)
    histories = longest_histories(manifests) if histories is None else histories
    wanted = None if topics is None else set(topics)
    found: dict[tuple[str, str | None], IncarnationSummary] = {}
    seen_keys: set[str] = set()
    for manifest in manifests:
        for r in manifest.ranges:
            if wanted is None or r.topic in wanted:
                key = (r.topic, incarnation_of(r.topic, r.topic_id, histories))
                found.setdefault(key, IncarnationSummary(*key)).partitions.add(r.partition)
        for s in manifest.segments:
            if (wanted is None or s.topic in wanted) and s.key not in seen_keys:
                seen_keys.add(s.key)
                key = (s.topic, incarnation_of(s.topic, s.topic_id, histories))
                found.setdefault(key, IncarnationSummary(*key)).add(s)
        for gone in manifest.gone_topics:
            key = (gone["topic"], gone.get("topic_id"))
            if key in found:
                found[key].gone = True
    out: dict[str, list[IncarnationSummary]] = {}
    for (topic, _), summary in found.items():
        out.setdefault(topic, []).append(summary)
    for topic, summaries in out.items():
        order = histories.get(topic, [])
        summaries.sort(key=lambda s: order.index(s.topic_id) if s.topic_id in order else -1)
    return out


def choose(topic: str, incarnations: list[IncarnationSummary], explicit: str | None,
           until_timestamp: int | None) -> IncarnationSummary:
    """The incarnation a restore takes: the one named, else the one live at ``until_timestamp`` (the last whose
    first record is older), else the latest."""
    if explicit is not None:
        for incarnation in incarnations:
            if incarnation.topic_id == explicit:
                return incarnation
        raise ConfigurationError(
            f"incarnations names topic ID {explicit} for {topic}, which the backup does not hold; its incarnations "
            f"are: {'; '.join(i.describe() for i in incarnations)}."
        )
    if until_timestamp is not None:
        live = [i for i in incarnations if i.min_timestamp is not None and i.min_timestamp < until_timestamp]
        if live:
            return live[-1]
        return incarnations[0]
    return incarnations[-1]
