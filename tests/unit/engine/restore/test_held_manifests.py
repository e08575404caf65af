"""Unit tests: the restore plan reads manifests one at a time and keeps only the topics it restores."""

from __future__ import annotations

import pytest

from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.restore.held_manifests import read_manifests
from airflow_kafka_backup.engine.restore.planning import RestoreSettings, plan_restore
from airflow_kafka_backup.engine.storage.checksums import SHA256, Checksum
from airflow_kafka_backup.engine.storage.manifest import PartitionRange, SegmentInfo
from tests.unit.engine.restore.test_restore_planning import MemoryStore, commit

T = 1_700_000_000_000  # the records' timestamps: T + offset


def _segment(topic: str, partition: int, first: int, last: int) -> SegmentInfo:
    return SegmentInfo(f"p/{topic}/partition={partition}/{topic}+{partition}+{first:010d}.jsonl.gz", topic, partition,
                       first, last, last - first + 1, T + first, T + last, 10,
                       Checksum(SHA256, f"{first:064x}"), 40, "id-" + topic)


def _backup(store: MemoryStore, topics: list[str], runs: int, partitions: int = 3) -> None:
    """``runs`` runs of 10 records a partition; each run also records a consumer group and topic metadata."""
    for run in range(runs):
        ranges = [PartitionRange(t, p, run * 10, run * 10 + 10, topic_id="id-" + t) for t in topics
                  for p in range(partitions)]
        segments = [_segment(t, p, run * 10, run * 10 + 9) for t in topics for p in range(partitions)]
        commit(store, f"scheduled__{run:03d}", ranges, segments,
               topics=[{"topic": t, "partitions": partitions, "configs": {"run": str(run)}} for t in topics],
               consumer_groups={"g": {t: {str(p): run * 10 + 5 for p in range(partitions)} for t in topics}},
               incarnations={t: ["id-" + t] for t in topics})


def test_manifests_are_cut_to_the_wanted_topics_and_each_is_vetted_whole():
    store = MemoryStore()
    _backup(store, ["orders", "payments", "audit"], runs=3)
    vetted = []
    held = read_manifests(store, "p", {"orders"}.__contains__, check_manifest=vetted.append)
    assert held.topics == {"orders", "payments", "audit"}
    assert [len(m.segments) for m in vetted] == [9, 9, 9]  # check_manifest saw every manifest whole
    for manifest in held.manifests:
        assert {r.topic for r in manifest.ranges} == {s.topic for s in manifest.segments} == {"orders"}
        assert [md["topic"] for md in manifest.topics] == ["orders"]
        committed = manifest.ranges[0].start + 5
        assert manifest.consumer_groups == {"g": {"orders": {"0": committed, "1": committed, "2": committed}}}
        assert not any(hasattr(s, "__dict__") for s in manifest.segments)  # slots: no per-object dict
    # The held segments share one topic string and one topic ID string.
    segments = [s for m in held.manifests for s in m.segments]
    assert len({id(s.topic) for s in segments}) == len({id(s.topic_id) for s in segments}) == 1


@pytest.mark.parametrize("settings", [
    RestoreSettings.create(topics=["orders"], topic_mapping={"orders": "orders-restored"}),
    RestoreSettings.create(topics=["orders"], from_timestamp=T + 10, until_timestamp=T + 25),
    RestoreSettings.create(topics=["orders"], offset_bounds={"orders": {"1": [5, 25]}}),
    RestoreSettings.create(topics=["re:ord.*"]),
])
def test_the_plan_of_a_topic_does_not_depend_on_the_other_topics_in_the_backup(settings):
    """Same plan whether the backup holds only the restored topic or others beside it (which are not held)."""
    alone, crowded = MemoryStore(), MemoryStore()
    _backup(alone, ["orders"], runs=4)
    _backup(crowded, ["orders", "payments", "audit"], runs=4)
    assert plan_restore(crowded, "p", settings) == plan_restore(alone, "p", settings)


def test_a_pattern_still_names_every_topic_of_the_backup_when_it_matches_none():
    store = MemoryStore()
    _backup(store, ["orders", "payments"], runs=1)
    with pytest.raises(ConfigurationError, match="it holds: orders, payments"):
        plan_restore(store, "p", RestoreSettings.create(topics=["re:nothing.*"]))
