"""Unit tests: topic selection by pattern, and the incarnation state rebuilt from manifests (no broker)."""

from __future__ import annotations

import pytest

from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.restore.planning import RestoreSettings
from airflow_kafka_backup.engine.storage.checksums import SHA256, Checksum
from airflow_kafka_backup.engine.storage.key_layout import segment_key
from airflow_kafka_backup.engine.storage.manifest import PartitionRange, RunManifest, SegmentInfo, SegmentSettings
from airflow_kafka_backup.engine.topics.incarnations import BackupState, TopicIdentityError, choose, identify, summarize
from airflow_kafka_backup.engine.topics.selection import TopicSelection

SETTINGS = SegmentSettings("jsonl", "none", 100, 10)


def test_patterns_full_match_mix_with_names_and_exclusions():
    selection = TopicSelection.parse(["orders", "re:pay.*", "re:audit-[0-9]+"], ["re:.*-test", "payroll"])
    available = ["orders", "payments", "payments-test", "payroll", "audit-1", "audit-x", "prepay", "__consumer_offsets"]
    assert selection.resolve(available) == ["orders", "audit-1", "payments"]
    assert selection.resolve([]) == ["orders"]  # a named topic is kept: the caller says it is missing


def test_internal_topics_are_matched_only_by_name():
    assert TopicSelection.parse(["re:.*"]).resolve(["__consumer_offsets", "__transaction_state", "a"]) == ["a"]
    assert TopicSelection.parse(["__consumer_offsets"]).resolve(["__consumer_offsets"]) == ["__consumer_offsets"]


@pytest.mark.parametrize("topics,exclude,problem", [
    (["re:("], None, "topics pattern 're:\\(' is not a regular expression"),
    (["a"], ["re:["], "exclude_topics pattern"),
    ([], None, "topics must be a non-empty list"),
    (["orders"], ["orders"], "topics names orders, which exclude_topics also excludes"),
    ([""], None, "topics must be a list"),
])
def test_bad_selections_are_refused_naming_the_param(topics, exclude, problem):
    with pytest.raises(ConfigurationError, match=problem):
        TopicSelection.parse(topics, exclude)


def test_the_manifest_records_the_selection_only_with_patterns():
    assert TopicSelection.parse(["a"]).describe(["a"]) == {}
    assert TopicSelection.parse(["re:a.*"], ["ab"]).describe(["ac", "aa"]) == {
        "topics": ["re:a.*"], "exclude_topics": ["ab"], "resolved": ["aa", "ac"]}


def test_a_later_incarnation_has_keys_of_its_own():
    assert segment_key("p", "t", 0, 5, 3, ".json") == "p/t/partition=0/t+0+005.json"
    assert segment_key("p", "t", 0, 5, 3, ".json", "AbC-_1") == "p/t/topic_id=AbC-_1/partition=0/t+0+005.json"


def _manifest(run_id: str, topic: str, topic_id: str | None, history: list[str] | None, start: int, end: int,
              min_ts: int = 1, max_ts: int = 2) -> RunManifest:
    ids = {"topic_id": topic_id, "id_in_keys": bool(history and len(history) > 1)} if topic_id else {}
    segment = SegmentInfo(f"k/{run_id}", topic, 0, start, end - 1, end - start, min_ts, max_ts, 10,
                          Checksum(SHA256, "x"),
                          topic_id=topic_id)
    return RunManifest(run_id, SETTINGS, [PartitionRange(topic, 0, start, end, **ids)], [segment],
                       incarnations={topic: history} if history else {})


def test_state_from_manifests_follows_the_latest_incarnation():
    manifests = [
        _manifest("r1", "t", None, None, 0, 100),  # before topic IDs
        _manifest("r2", "t", "A", ["A"], 100, 150),  # adopted
        _manifest("r3", "t", "B", ["A", "B"], 0, 40),  # recreated
    ]
    state = BackupState.from_manifests(manifests)
    assert state.histories == {"t": ["A", "B"]} and state.checkpoints == {("t", 0): 40}
    # Without the last run, the adopted incarnation holds the legacy ranges too.
    assert BackupState.from_manifests(manifests[:2]).checkpoints == {("t", 0): 150}
    assert BackupState.from_manifests(manifests[:1]).checkpoints == {("t", 0): 100}


def test_the_variable_and_the_manifests_merge_per_incarnation():
    cached = BackupState.from_json({"checkpoints": {"t": {"0": 150}}, "manifests": 2})  # written before IDs
    recovered = BackupState.from_manifests([_manifest("r3", "t", "B", ["A", "B"], 0, 40)])
    merged = recovered.merged(cached)
    assert merged.checkpoints == {("t", 0): 40}  # the old incarnation's 150 is not the new one's
    assert BackupState.from_json(merged.to_json(None)).histories == {"t": ["A", "B"]}
    advanced = merged.advanced(_manifest("r4", "t", "B", ["A", "B"], 40, 90))
    assert advanced.checkpoints == {("t", 0): 90}


def test_identify_adopts_carries_on_or_starts_a_new_incarnation():
    legacy = BackupState({("t", 0): 100}, {})
    adopted = identify("t", "A", legacy, {("t", 0): 120})
    assert (adopted.history, adopted.new, adopted.id_in_keys) == (("A",), False, False)
    same = identify("t", "A", BackupState({("t", 0): 120}, {"t": ["A"]}), {("t", 0): 130})
    assert (same.new, same.id_in_keys) == (False, False)
    recreated = identify("t", "B", BackupState({("t", 0): 120}, {"t": ["A"]}), {("t", 0): 5000})
    assert (recreated.history, recreated.new, recreated.id_in_keys) == (("A", "B"), True, True)
    brand_new = identify("u", "C", BackupState(), {("u", 0): 7})
    assert (brand_new.history, brand_new.new, brand_new.id_in_keys) == (("C",), True, False)


def test_a_legacy_backup_that_does_not_fit_the_topic_is_refused_naming_partition_and_offsets():
    legacy = BackupState({("t", 0): 100, ("t", 1): 10}, {})
    with pytest.raises(TopicIdentityError, match=r"partition 0 is backed up to offset 100 but ends at 40"):
        identify("t", "A", legacy, {("t", 0): 40, ("t", 1): 10})
    with pytest.raises(TopicIdentityError, match=r"partition 1 is backed up to offset 10 but Kafka has no such"):
        identify("t", "A", legacy, {("t", 0): 400})


def test_a_restore_chooses_the_named_the_live_or_the_latest_incarnation():
    manifests = [_manifest("r1", "t", "A", ["A"], 0, 100, 1000, 2000),
                 _manifest("r2", "t", "B", ["A", "B"], 0, 50, 5000, 6000)]
    (a, b), = summarize(manifests).values()
    assert (a.topic_id, a.records, b.topic_id, b.records) == ("A", 100, "B", 50)
    assert choose("t", [a, b], None, None) is b
    assert choose("t", [a, b], None, 3000) is a
    assert choose("t", [a, b], None, 5500) is b
    assert choose("t", [a, b], "A", None) is a
    with pytest.raises(ConfigurationError, match="incarnations names topic ID Z for t, which the backup does not"):
        choose("t", [a, b], "Z", None)


def test_restore_settings_with_patterns_check_the_mapping_once_resolved():
    settings = RestoreSettings.create(topics=["re:o.*"], topic_mapping={"orders": "orders-r"})
    assert not settings.resolved_yet
    resolved = settings.resolved(["orders", "other"])
    assert resolved.topic_mapping == {"orders": "orders-r", "other": "other"}
    with pytest.raises(ConfigurationError, match=r"topic_mapping names topic\(s\) that are not being restored: orders"):
        settings.resolved(["other"])
    with pytest.raises(ConfigurationError, match="incarnations must map source topic names to topic IDs"):
        RestoreSettings.create(topics=["t"], incarnations={"t": 5})


def test_a_gone_topic_is_recorded_once_per_incarnation():
    gone = _manifest("r2", "t", "A", ["A"], 10, 10)
    gone.gone_topics = [{"topic": "t", "topic_id": "A"}]
    state = BackupState.from_manifests([_manifest("r1", "t", "A", ["A"], 0, 10), gone])
    assert state.is_recorded_gone("t")
    assert BackupState.from_json(state.to_json({"seq": 2, "run_id": "r"})).is_recorded_gone("t")
    back = state.advanced(_manifest("r3", "t", "B", ["A", "B"], 0, 5))  # recreated: no longer gone
    assert not back.is_recorded_gone("t") and back.gone == {}
